"""FakeOllama: a TEST DOUBLE for an Ollama server (none can be installed on these machines).

A real HTTP server on loopback implementing the subset of Ollama's REST API the backend uses:
``/api/chat`` (streamed NDJSON and not), ``/api/tags``, ``/api/show`` and ``/api/ps``. It
models residency like Ollama does: a chat loads its model, and ``keep_alive: 0`` unloads it
when the reply is done. It records every request, and the most models ever resident at once.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GB = 1024**3


@dataclass
class FakeOllamaState:
    models: dict[str, int] = field(default_factory=dict)  # name -> size in bytes
    reply_words: list[str] = field(
        default_factory=lambda: ["the", "quick", "brown", "fox", "jumps"]
    )
    scripted: list[str] = field(default_factory=list)  # whole replies, used first, in order
    #: Top log-probabilities of the first token, one dict per chat that asks for logprobs.
    top_logprobs: list[dict[str, float]] = field(default_factory=list)
    load_delay_s: float = 0.05
    token_delay_s: float = 0.005
    requests: list[dict[str, Any]] = field(default_factory=list)
    resident: set[str] = field(default_factory=set)
    max_resident: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def load(self, model: str) -> None:
        with self.lock:
            self.resident.add(model)
            self.max_resident = max(self.max_resident, len(self.resident))

    def unload(self, model: str) -> None:
        with self.lock:
            self.resident.discard(model)


class _Handler(BaseHTTPRequestHandler):
    state: FakeOllamaState  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self) -> None:
        st = self.state
        if self.path == "/api/tags":
            models = [
                {
                    "name": n,
                    "model": n,
                    "size": s,
                    "digest": "0" * 64,
                    "details": {"quantization_level": "Q4_K_M"},
                }
                for n, s in st.models.items()
            ]
            self._json(200, {"models": models})
        elif self.path == "/api/ps":
            with st.lock:
                self._json(
                    200,
                    {
                        "models": [
                            {"name": n, "model": n, "size": st.models.get(n, 0)}
                            for n in st.resident
                        ]
                    },
                )
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        st = self.state
        body = self._body()
        with st.lock:
            st.requests.append({"path": self.path, **body})
        model = body.get("model", "")
        if self.path == "/api/show":
            if model not in st.models:
                self._json(404, {"error": f"model '{model}' not found"})
                return
            self._json(
                200,
                {
                    "model_info": {"general.parameter_count": st.models[model] * 2},
                    "details": {"quantization_level": "Q4_K_M"},
                },
            )
        elif self.path == "/api/chat":
            self._chat(body, model)
        elif self.path == "/api/embed":
            self._embed(body, model)
        else:
            self._json(404, {"error": "not found"})

    def _embed(self, body: dict[str, Any], model: str) -> None:
        """Deterministic bag-of-words vectors (feature hashing), so texts sharing words are
        near each other: enough for retrieval tests, nothing like a real model."""
        if model not in self.state.models:
            self._json(404, {"error": f"model '{model}' not found, try pulling it first"})
            return
        texts = body.get("input", "")
        texts = [texts] if isinstance(texts, str) else list(texts)
        self._json(200, {"model": model, "embeddings": [hashed_embedding(t) for t in texts]})

    def _chat(self, body: dict[str, Any], model: str) -> None:
        st = self.state
        if model not in st.models:
            self._json(404, {"error": f"model '{model}' not found, try pulling it first"})
            return
        loaded_at = time.perf_counter()
        st.load(model)
        time.sleep(st.load_delay_s)
        load_ns = int((time.perf_counter() - loaded_at) * 1e9)
        with st.lock:
            script = st.scripted.pop(0) if st.scripted else None
        # A scripted reply streams line by line (so code survives); else the stock words.
        pieces = script.splitlines(keepends=True) if script is not None else st.reply_words
        limit = int((body.get("options") or {}).get("num_predict") or len(pieces))
        words = pieces[:limit] if script is None else pieces
        try:
            if body.get("stream", True):
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.end_headers()
                for w in words:
                    time.sleep(st.token_delay_s)
                    chunk = {
                        "model": model,
                        "message": {
                            "role": "assistant",
                            "content": w if script is not None else w + " ",
                        },
                        "done": False,
                    }
                    self.wfile.write((json.dumps(chunk) + "\n").encode())
                    self.wfile.flush()
                final = self._final(model, words, load_ns, limit)
                self.wfile.write((json.dumps(final) + "\n").encode())
            else:
                final = self._final(model, words, load_ns, limit)
                final["message"]["content"] = (
                    "".join(words) if script is not None else " ".join(words)
                )
                if body.get("logprobs"):
                    final["logprobs"] = self._logprobs(body)
                self._json(200, final)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client cancelled
        finally:
            if body.get("keep_alive") in (0, "0", "0s"):
                st.unload(model)

    def _logprobs(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        with self.state.lock:
            top = self.state.top_logprobs.pop(0) if self.state.top_logprobs else {}
        listed = sorted(top.items(), key=lambda kv: -kv[1])[: int(body.get("top_logprobs") or 0)]
        if not listed:
            return []
        first = listed[0]
        return [
            {
                "token": first[0],
                "logprob": first[1],
                "top_logprobs": [{"token": t, "logprob": lp} for t, lp in listed],
            }
        ]

    @staticmethod
    def _final(model: str, words: list[str], load_ns: int, limit: int) -> dict[str, Any]:
        return {
            "model": model,
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "length" if len(words) >= limit else "stop",
            "prompt_eval_count": 12,
            "eval_count": len(words),
            "load_duration": load_ns,
            "eval_duration": 1_000_000 * len(words),
        }


EMBED_DIM = 64


def hashed_embedding(text: str, dim: int = EMBED_DIM) -> list[float]:
    vector = [0.0] * dim
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        digest = hashlib.md5(word.encode(), usedforsecurity=False).digest()
        vector[digest[0] % dim] += 1.0 if digest[1] % 2 else -1.0
    return vector if any(vector) else [1.0] + [0.0] * (dim - 1)


class FakeOllama:
    """Run with ``with FakeOllama({"llama3.1:8b": 5 * GB}) as fake: fake.host ...``."""

    def __init__(self, models: dict[str, int] | None = None) -> None:
        self.state = FakeOllamaState(models=dict(models or {}))
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.host = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOllama:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, *replies: str) -> None:
        """Queue whole replies for the next chats, in order (then the stock words again)."""
        with self.state.lock:
            self.state.scripted.extend(replies)

    def chat_requests(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return [r for r in self.state.requests if r["path"] == "/api/chat"]
