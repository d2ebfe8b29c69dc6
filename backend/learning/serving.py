"""Serving a persona's own GGUF: the ``gguf`` model backend.

Each fine-tuned (or Ascension) model is registered under its pointer id; ``load`` opens that
file with the embedded llama.cpp backend. The ModelManager treats ``("gguf", id)`` like any
other model, so one model stays resident across personas: switching unloads the previous
one first. Files are checked against their sha256 before they are loaded.
"""

from __future__ import annotations

import threading
from pathlib import Path

from backend.llm.base import ChatMessage, Completion, GenerationParams, ModelInfo, OnToken
from backend.llm.embedded import EmbeddedBackend
from shared_api.errors import ModelFailedError, ModelMissingError
from shared_api.learning import ModelPointer

BACKEND_NAME = "gguf"


class PersonaGgufBackend:
    """A ModelBackend over the registered persona models (one loaded at a time)."""

    name = BACKEND_NAME

    def __init__(self, *, n_threads: int = 1, n_ctx: int = 2048) -> None:
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self._models: dict[str, tuple[Path, str]] = {}
        self._loaded: tuple[str, EmbeddedBackend] | None = None
        self._lock = threading.Lock()

    def register(self, pointer: ModelPointer) -> None:
        with self._lock:
            self._models[pointer.id] = (Path(pointer.path), pointer.sha256)

    def registered(self, model: str) -> bool:
        with self._lock:
            return model in self._models and self._models[model][0].is_file()

    def _file(self, model: str) -> tuple[Path, str]:
        with self._lock:
            entry = self._models.get(model)
        if entry is None:
            raise ModelMissingError(
                f"No persona model {model!r} is registered; see learning_status for the "
                "models each persona has."
            )
        return entry

    def list_models(self) -> list[ModelInfo]:
        with self._lock:
            items = list(self._models.items())
        return [
            ModelInfo(
                name, self.name, path.stat().st_size if path.exists() else 0, {"path": str(path)}
            )
            for name, (path, _sha) in items
        ]

    def model_size(self, model: str) -> int:
        path, _sha = self._file(model)
        if not path.is_file():
            raise ModelMissingError(f"The model file {path} of {model} is gone; roll back.")
        return path.stat().st_size

    def load(self, model: str) -> float:
        if self._loaded is not None and self._loaded[0] == model:
            return 0.0
        self.unload()
        path, sha = self._file(model)
        backend = EmbeddedBackend(str(path), sha, n_threads=self.n_threads, n_ctx=self.n_ctx)
        ms = backend.load(backend.model_name)  # the file's own name there (lower case)
        self._loaded = (model, backend)
        return ms

    def unload(self) -> None:
        if self._loaded is not None:
            self._loaded[1].unload()
            self._loaded = None

    def generate(
        self,
        model: str,
        messages: list[ChatMessage],
        params: GenerationParams,
        on_token: OnToken | None,
        cancel: threading.Event,
    ) -> Completion:
        if self._loaded is None or self._loaded[0] != model:
            raise ModelFailedError(f"the persona model {model} is not loaded")
        backend = self._loaded[1]
        return backend.generate(backend.model_name, messages, params, on_token, cancel)
