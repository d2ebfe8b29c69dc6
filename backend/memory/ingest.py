"""Ingesting a document: read and check it, chunk it by its structure, embed, store.

Reading reuses ``backend.documents.read_document`` (the same checks and messages a drop on a
persona gets: type, size, encoding, broken or encrypted PDF). A document is identified by the
sha256 of its bytes: the same content ingested again, from any path, adds nothing. Ingests
run one at a time, and a document's chunks and its commit marker are written by
``MemoryStore.add_document``, so a crash leaves either the whole document or none of it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backend.documents import Document, read_document
from backend.memory.chunking import Chunk, chunk_text, format_of
from backend.memory.config import MemoryConfig
from backend.memory.embedder import Embedder, Vectors
from backend.memory.store import MemoryStore, View, chunk_embed_text
from shared_api.errors import DocumentError, MemoryUnavailableError

OnProgress = Callable[[float, str], None]
EmbedderFor = Callable[[View], Embedder]
#: Chunks embedded per progress step (small batches also embed fastest on one thread).
STEP = 16


@dataclass(frozen=True)
class IngestOutcome:
    path: str
    name: str
    status: str  # ingested | duplicate
    doc_hash: str
    chunks: int
    proto: str
    seconds: float
    duplicate_of: str = ""


class Ingestor:
    def __init__(self, store: MemoryStore, embedder_for: EmbedderFor, config: MemoryConfig) -> None:
        self.store = store
        self.embedder_for = embedder_for
        self.config = config
        self._lock = threading.Lock()

    def ingest(self, path: Path, proto: str, on_progress: OnProgress) -> IngestOutcome:
        """Ingest the document at ``path`` (absolute) for ``proto`` ("" for nobody).

        Raises ``DocumentError`` for a file that cannot be ingested, with what to do.
        """
        if not path.is_absolute():
            raise DocumentError(
                f"{path} is a relative path, but the backend reads the file from its own "
                "working directory. Give the absolute path.",
                path=str(path),
                reason="relative_path",
            )
        started = time.perf_counter()
        max_bytes = int(self.config.max_document_mb * 1024 * 1024)
        document = read_document(path.resolve(), max_bytes)
        source = str(document.path)
        with self._lock:  # one at a time: the duplicate check holds until the write
            existing = self.store.document(document.sha256)
            if existing is not None:
                return IngestOutcome(
                    path=source,
                    name=document.name,
                    status="duplicate",
                    doc_hash=document.sha256,
                    chunks=int(existing["chunks"]),
                    proto=proto,
                    seconds=time.perf_counter() - started,
                    duplicate_of=str(existing["source"]),
                )
            fmt = format_of(document.path.suffix)
            chunks = chunk_text(document.text, fmt, self.config.chunk_chars)
            if not chunks:
                raise DocumentError(
                    f"{document.name} has no text to remember. Drop a file with some text in it.",
                    path=source,
                    reason="empty",
                )
            rows, marker = _rows(document, fmt, chunks, proto)
            texts = [chunk_embed_text(c.heading, c.text) for c in chunks]
            self._write(rows, marker, texts, document.name, on_progress)
        return IngestOutcome(
            path=source,
            name=document.name,
            status="ingested",
            doc_hash=document.sha256,
            chunks=len(chunks),
            proto=proto,
            seconds=time.perf_counter() - started,
        )

    def _write(
        self,
        rows: dict[str, list[Any]],
        marker: dict[str, Any],
        texts: list[str],
        name: str,
        on_progress: OnProgress,
    ) -> None:
        """Embed and store the chunks, embedding again if the memory switched embedders
        meanwhile (the store refuses vectors made for an older view)."""
        for _attempt in range(3):
            view = self.store.view
            if view is None:
                raise MemoryUnavailableError("The memory has no tables yet; try again.")
            vectors = self._embed(self.embedder_for(view), texts, name, on_progress)
            if self.store.add_document(rows, vectors, marker, view):
                return
        # Three embedder switches during one ingest: give up, the caller may retry.
        raise MemoryUnavailableError("The memory kept switching embedders; try again.")

    @staticmethod
    def _embed(embedder: Embedder, texts: list[str], name: str, on_progress: OnProgress) -> Vectors:
        parts = []
        for start in range(0, len(texts), STEP):
            parts.append(embedder.embed(texts[start : start + STEP]))
            done = min(start + STEP, len(texts))
            on_progress(0.95 * done / len(texts), f"{name}: embedded {done} of {len(texts)} chunks")
        return np.concatenate(parts)


def _rows(
    document: Document, fmt: str, chunks: list[Chunk], proto: str
) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """The chunk table's columns for ``chunks``, and the document's commit marker."""
    now = time.time()
    prefix = document.sha256[:16]
    source = str(document.path)
    rows: dict[str, list[Any]] = {
        "id": [f"{prefix}:{c.position}" for c in chunks],
        "doc_hash": [document.sha256] * len(chunks),
        "source": [source] * len(chunks),
        "name": [document.name] * len(chunks),
        "fmt": [fmt] * len(chunks),
        "proto": [proto] * len(chunks),
        "position": [c.position for c in chunks],
        "start": [c.start for c in chunks],
        "end": [c.end for c in chunks],
        "heading": [c.heading for c in chunks],
        "text": [c.text for c in chunks],
        "ts": [now] * len(chunks),
    }
    marker = {
        "doc_hash": document.sha256,
        "source": source,
        "name": document.name,
        "fmt": fmt,
        "proto": proto,
        "chunks": len(chunks),
        "bytes": document.bytes,
        "ts": now,
    }
    return rows, marker
