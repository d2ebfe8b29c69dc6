"""The chat half of the mind benchmark (issue 12): persona replies from the default model.

1. Degeneracy: 20 varied prompts to the four personas, through a real backend subprocess
   (its reply path: repeat penalty, per-reply token budget, the loop guards). A reply counts
   as degenerate when a 4-word sequence occurs in it more than 3 times. Target: 0. Also
   reported: how often the guards had to act (a repeated sentence cut, a re-sample).
2. Speed: tokens/s and time to first token of a persona reply through the backend (asked
   over the wire, tokens streamed back as events) vs. llama-cpp-python called directly in
   this process with the same GGUF, threads, prompt and sampling, interleaved in one run.
   Target: overhead <= 5% on both.

``benchmarks/mind.py`` calls ``chat_degeneracy`` and ``reply_speed`` (with a shared
``ChatBackend``); ``python -m benchmarks.mind_chat [--quick] [--model REF]`` runs both alone
and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from backend.launcher import BackendProcess
from backend.llm.catalog import DEFAULT_MODEL, MODEL_ENV, parse_ref, physical_cores
from backend.llm.degenerate import degenerate_ngram
from backend.llm.llama_compat import open_llama
from benchmarks._common import emit, log, percentile, verdict
from shared_api.commands import AskPersona
from shared_api.events import PersonaReply
from shared_api.replies import AskAccepted, ProtoDescription
from shared_api.transport import Client

#: (persona, prompt): technical, factual, emotional, creative and open-ended questions, the
#: kinds that send a small model into loops.
PROMPTS: list[tuple[str, str]] = [
    ("BRICK", "Should backups be stored on the same disk as the data? Argue it logically."),
    ("ROBIN", "My friend forgot my birthday. How should I bring it up with them?"),
    ("BABS", "What do we know about how honeybees find their way back to the hive?"),
    ("ALFRED", "Judge this plan: rewrite our whole product in a new language next month."),
    ("BRICK", "Explain recursion to someone who has never programmed."),
    ("ROBIN", "I feel nervous before every presentation. What helps?"),
    ("BABS", "Summarise the main causes of inflation in a few sentences."),
    ("ALFRED", "What makes a code review useful rather than annoying?"),
    ("BRICK", "Is it better to walk or to cycle to work? Give premises and a conclusion."),
    ("ROBIN", "Write a short poem about the sea at night."),
    ("BABS", "List the planets of the solar system with one fact about each."),
    ("ALFRED", "Two engineers disagree about tabs versus spaces. How do you settle it?"),
    ("BRICK", "What are the benefits of regular exercise?"),
    ("ROBIN", "Describe your ideal quiet Sunday."),
    ("BABS", "What is the difference between a virus and a bacterium?"),
    ("ALFRED", "How would you decide whether a fine-tuned model is better than the base one?"),
    ("BRICK", "Why does a hash table give constant-time lookups on average?"),
    ("ROBIN", "How can I comfort a colleague whose project was cancelled?"),
    ("BABS", "Tell me about the history of the printing press."),
    ("ALFRED", "What is the meaning of life? Answer as a careful butler would."),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ChatBackend:
    """A real backend subprocess on a temporary home, talking through ``model``: memory, the
    curator and the motivator off (the reply path is what is measured: not recall, and no
    background judgement occupying the model)."""

    def __init__(self, model: str = DEFAULT_MODEL, max_tokens: int = 128) -> None:
        self.model = model
        self.ref = parse_ref(model)
        self._tmp = tempfile.TemporaryDirectory(prefix="mind-chat-")
        home = Path(self._tmp.name) / "home"
        home.mkdir()
        (home / "config.toml").write_text(
            f'[models]\nollama_host = "http://127.0.0.1:{_free_port()}"\n'
            f"max_tokens = {max_tokens}\n[memory]\nenabled = false\n"
            # nothing else asks the model meanwhile: no curator passes, no curiosity goals
            "[learning]\ncurator = false\n[motivator]\nenabled = false\n"
        )
        before = os.environ.get(MODEL_ENV)
        os.environ[MODEL_ENV] = model  # the backend started below inherits it
        try:
            self.proc = BackendProcess(home)
            self.proc.start()
        finally:
            if before is None:
                os.environ.pop(MODEL_ENV, None)
            else:
                os.environ[MODEL_ENV] = before
        self.client: Client = self.proc.client(events=True, timeout=120).__enter__()
        self.client.wait_event(lambda e: e.kind == "heartbeat")

    def ask(self, proto: str, text: str, max_tokens: int | None = None) -> dict[str, Any]:
        """One persona reply: the reply event, and when the request went out, the first token
        and the reply arrived (perf_counter seconds)."""
        sent = time.perf_counter()
        accepted = self.client.request(AskPersona(proto=proto, text=text, max_tokens=max_tokens))
        assert isinstance(accepted, AskAccepted), accepted
        first: float | None = None
        while True:
            event = self.client.wait_event(
                lambda e: getattr(e, "request_id", None) == accepted.request_id, timeout=900
            )
            if event.kind == "token" and first is None:
                first = time.perf_counter()
            if isinstance(event, PersonaReply):
                return {"reply": event, "sent": sent, "first": first, "done": time.perf_counter()}

    def system_prompt(self, proto: str) -> str:
        described = self.client.call("describe_proto", {"proto": proto})
        assert isinstance(described, ProtoDescription)
        return str(described.codex["system_prompt"])

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self.proc.stop()
        self._tmp.cleanup()


@contextmanager
def chat_backend(model: str = DEFAULT_MODEL, max_tokens: int = 128) -> Iterator[ChatBackend]:
    backend = ChatBackend(model, max_tokens)
    try:
        yield backend
    finally:
        backend.close()


def chat_degeneracy(backend: ChatBackend, quick: bool = False) -> dict[str, Any]:
    """Persona replies to ``PROMPTS`` (5 of them when quick): how many are degenerate."""
    prompts = PROMPTS[:5] if quick else PROMPTS
    degenerate, stopped, resampled, flagged = [], 0, 0, 0
    for proto, text in prompts:
        asked = backend.ask(proto, text)
        reply: PersonaReply = asked["reply"]
        if reply.error is not None:
            raise RuntimeError(f"{proto} failed: {reply.error.message}")
        gram = degenerate_ngram(reply.text)
        stopped += reply.repeat_stopped
        resampled += reply.resampled
        flagged += reply.degenerate
        if gram is not None:
            degenerate.append({"proto": proto, "prompt": text, "ngram": gram})
        guards = [n for n, on in (("cut", reply.repeat_stopped), ("resampled", reply.resampled),
                                  ("trimmed", reply.degenerate)) if on]  # fmt: skip
        log(
            f"{proto:6s} {reply.usage.completion_tokens:3d} tokens, "
            f"{'DEGENERATE ' + repr(gram) if gram else 'ok'}"
            f"{' (' + ', '.join(guards) + ')' if guards else ''}: {reply.text[:70]!r}"
        )
    return {
        "chat_prompts": len(prompts),
        "chat_degenerate": len(degenerate),
        "chat_degenerate_examples": degenerate[:3],
        "chat_repeat_cut": stopped,
        "chat_resampled": resampled,
        "chat_trimmed": flagged,
        "chat_model": backend.model,
        "target_chat_degenerate": 0,
        "target_chat_degenerate_met": not degenerate,
    }


def _direct(llm: Any, system: str, text: str, max_tokens: int) -> dict[str, float]:
    """The baseline: llama-cpp-python's streamed chat completion, called directly."""
    sent = time.perf_counter()
    first, tokens = None, 0
    for chunk in llm.create_chat_completion(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": text}],
        temperature=0.0,
        repeat_penalty=1.1,  # as the persona reply path does ([models] repeat_penalty)
        max_tokens=max_tokens,
        stream=True,
    ):
        if chunk["choices"][0]["delta"].get("content"):
            first = first or time.perf_counter()
            tokens += 1
    done = time.perf_counter()
    return _rates(sent, first or done, done, tokens)


def _rates(sent: float, first: float, done: float, tokens: int) -> dict[str, float]:
    decode = (tokens - 1) / (done - first) if tokens > 1 and done > first else 0.0
    return {"ttft_ms": (first - sent) * 1000, "tok_s": decode, "tokens": tokens}


def reply_speed(backend: ChatBackend, quick: bool = False) -> dict[str, Any]:
    """Tokens/s and TTFT of a persona reply, ours vs. direct llama-cpp-python, interleaved."""
    rounds, max_tokens = (2, 32) if quick else (5, 64)
    proto, text = "BRICK", "Explain in a few sentences why the sky is blue."
    system = backend.system_prompt(proto)
    backend.ask(proto, "Say hello.", max_tokens=4)  # the backend's model is now resident
    path = backend.ref.path
    if backend.ref.kind != "embedded" or path is None:
        raise RuntimeError(f"{backend.model} is not an embedded model: no direct baseline")
    threads = physical_cores() if path.stat().st_size >= 256 * 1024 * 1024 else 1
    # the same model parameters as the backend's (no AMX extra buffers where they crash)
    llm = open_llama(str(path), n_threads=threads, n_ctx=2048, seed=0, verbose=False)
    ours: list[dict[str, float]] = []
    direct: list[dict[str, float]] = []
    try:
        _direct(llm, system, "Say hello.", 4)  # warm
        for r in range(rounds):
            order = ("direct", "ours") if r % 2 == 0 else ("ours", "direct")
            for name in order:
                if name == "direct":
                    figures = _direct(llm, system, text, max_tokens)
                    direct.append(figures)
                else:
                    asked = backend.ask(proto, text, max_tokens=max_tokens)
                    reply = asked["reply"]
                    tokens = reply.usage.completion_tokens
                    figures = _rates(asked["sent"], asked["first"] or asked["done"],
                                     asked["done"], tokens)  # fmt: skip
                    ours.append(figures)
                log(
                    f"round {r + 1}: {name:6s} {figures['tokens']:.0f} tokens, ttft "
                    f"{figures['ttft_ms']:.0f} ms, {figures['tok_s']:.1f} tok/s"
                )
    finally:
        llm.close()
    return _speed_figures(ours, direct, threads, max_tokens)


def _speed_figures(
    ours: list[dict[str, float]], direct: list[dict[str, float]], threads: int, max_tokens: int
) -> dict[str, Any]:
    def p50(rows: list[dict[str, float]], key: str) -> float:
        return percentile([r[key] for r in rows], 50)

    d_rate, o_rate = p50(direct, "tok_s"), p50(ours, "tok_s")
    d_ttft, o_ttft = p50(direct, "ttft_ms"), p50(ours, "ttft_ms")
    rate_overhead = (d_rate - o_rate) / d_rate * 100 if d_rate else 0.0
    ttft_overhead = (o_ttft - d_ttft) / d_ttft * 100 if d_ttft else 0.0
    met = rate_overhead <= 5.0 and ttft_overhead <= 5.0
    log(
        f"tokens/s p50 direct {d_rate:.2f}, ours {o_rate:.2f} ({rate_overhead:+.1f}%); TTFT p50 "
        f"direct {d_ttft:.0f} ms, ours {o_ttft:.0f} ms ({ttft_overhead:+.1f}%): {verdict(met)}"
    )
    return {
        "speed_direct_tok_s_p50": round(d_rate, 2),
        "speed_ours_tok_s_p50": round(o_rate, 2),
        "speed_tok_s_overhead_pct": round(rate_overhead, 2),
        "speed_direct_ttft_ms_p50": round(d_ttft, 1),
        "speed_ours_ttft_ms_p50": round(o_ttft, 1),
        "speed_ttft_overhead_pct": round(ttft_overhead, 2),
        "speed_threads": threads,
        "speed_max_tokens": max_tokens,
        "target_speed_overhead_pct": 5.0,
        "target_speed_overhead_met": met,
    }


def run(
    quick: bool = False, model: str = DEFAULT_MODEL, parts: tuple[str, ...] = ("chat", "speed")
) -> dict[str, Any]:
    figures: dict[str, Any] = {"benchmark": "mind_chat", "model": model, "quick": quick}
    with chat_backend(model) as backend:
        if "chat" in parts:
            figures.update(chat_degeneracy(backend, quick))
        if "speed" in parts:
            figures.update(reply_speed(backend, quick))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mind_chat", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5 prompts, 2 short speed rounds")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a model reference")
    parser.add_argument("--only", choices=("chat", "speed"), help="run one half only")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    figures = run(args.quick, args.model, (args.only,) if args.only else ("chat", "speed"))
    figures["seconds"] = round(time.perf_counter() - started, 1)
    emit(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
