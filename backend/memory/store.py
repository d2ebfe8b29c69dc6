"""The memory's tables in embedded LanceDB under ``HOME/memory``: schema, versions, repair.

Three tables: ``chunks`` (document pieces, with their vectors), ``documents`` (one row per
ingested document: its commit marker) and ``interactions`` (every persona exchange, with its
vector). ``manifest.json`` names the physical table of each (``chunks_g3``...), the schema
version, and the embedder's identity and dimension; the vector tables carry the same in their
Arrow schema metadata, and the vector column's fixed size is the dimension, so vectors from
two embedders can never share a table.

Crash safety comes from LanceDB's atomic commits plus an order: a document's chunks are
written in one ``add``, then its ``documents`` row. Opening deletes chunks without that row
(an ingest killed in between) and drops tables the manifest does not name (a re-embedding
killed before it switched over). The manifest itself is replaced atomically.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]

from backend.memory.embedder import Embedder, Vectors
from backend.memory.location import LocalLocation, Location
from shared_api.errors import MemoryUnavailableError

log = logging.getLogger(__name__)

# Lance warns on every index-statistics call unless told whether to include centroids.
os.environ.setdefault("LANCE_INCLUDE_VECTOR_CENTROIDS", "false")

SCHEMA_VERSION = 1
VECTOR_TABLES = ("chunks", "interactions")
LOGICAL_TABLES = (*VECTOR_TABLES, "documents")
#: Text columns returned with hits (the vector column never leaves the store).
CHUNK_COLUMNS = [
    "id",
    "doc_hash",
    "source",
    "name",
    "fmt",
    "proto",
    "position",
    "start",
    "end",
    "heading",
    "text",
    "ts",
]
INTERACTION_COLUMNS = [
    "id",
    "proto",
    "prompt",
    "reply",
    "backend",
    "model",
    "ts",
    "stop_reason",
    "prompt_tokens",
    "completion_tokens",
    "tokens_per_s",
    "cited",
    "score",
]

Progress = Callable[[float, str], None]
#: Rows embedded per call while re-embedding; 16 calls make one table commit.
REEMBED_BATCH = 64


def _vector_field(dim: int) -> Any:
    return pa.field("vector", pa.list_(pa.float32(), dim), nullable=False)


def chunk_schema(dim: int, embedder: str) -> Any:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("doc_hash", pa.string(), nullable=False),
            pa.field("source", pa.string()),
            pa.field("name", pa.string()),
            pa.field("fmt", pa.string()),
            pa.field("proto", pa.string()),
            pa.field("position", pa.int32()),
            pa.field("start", pa.int64()),
            pa.field("end", pa.int64()),
            pa.field("heading", pa.string()),
            pa.field("text", pa.string()),
            pa.field("ts", pa.float64()),
            _vector_field(dim),
        ],
        metadata=_metadata(dim, embedder),
    )


def interaction_schema(dim: int, embedder: str) -> Any:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("proto", pa.string()),
            pa.field("prompt", pa.string()),
            pa.field("reply", pa.string()),
            pa.field("backend", pa.string()),
            pa.field("model", pa.string()),
            pa.field("ts", pa.float64()),
            pa.field("stop_reason", pa.string()),
            pa.field("prompt_tokens", pa.int32()),
            pa.field("completion_tokens", pa.int32()),
            pa.field("tokens_per_s", pa.float32()),
            #: JSON list of the memory ids this answer was given (its citations).
            pa.field("cited", pa.string()),
            #: A quality score (e.g. a judge's), null until something scores it.
            pa.field("score", pa.float32(), nullable=True),
            _vector_field(dim),
        ],
        metadata=_metadata(dim, embedder),
    )


DOCUMENT_SCHEMA = pa.schema(
    [
        pa.field("doc_hash", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("name", pa.string()),
        pa.field("fmt", pa.string()),
        pa.field("proto", pa.string()),
        pa.field("chunks", pa.int32()),
        pa.field("bytes", pa.int64()),
        pa.field("ts", pa.float64()),
    ],
    metadata={"schema_version": str(SCHEMA_VERSION)},
)


def _metadata(dim: int, embedder: str) -> dict[str, str]:
    return {"schema_version": str(SCHEMA_VERSION), "embedder": embedder, "dim": str(dim)}


def schema_for(logical: str, dim: int, embedder: str) -> Any:
    if logical == "chunks":
        return chunk_schema(dim, embedder)
    if logical == "interactions":
        return interaction_schema(dim, embedder)
    return DOCUMENT_SCHEMA


def vector_array(vectors: Vectors) -> Any:
    dim = vectors.shape[1]
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype(np.float32).ravel()), dim)


def quote(value: str) -> str:
    """A SQL string literal for a LanceDB filter."""
    return "'" + value.replace("'", "''") + "'"


@dataclass
class Manifest:
    embedder: str
    spec: str
    dim: int
    generation: int = 1
    schema_version: int = SCHEMA_VERSION
    tables: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def load(location: Location) -> Manifest | None:
        raw = location.read_manifest()
        if raw is None:
            return None
        try:
            return Manifest(**raw)
        except TypeError:
            raise MemoryUnavailableError(
                f"The memory manifest in {location.where} has unexpected fields: it was written "
                "by another version of Entropic OS. Upgrade, or move it aside to start an "
                "empty memory."
            ) from None

    def save(self, location: Location) -> None:
        location.write_manifest(asdict(self))


@dataclass(frozen=True)
class View:
    """The manifest and the tables it names, swapped together: a search that took a view
    uses one embedder's tables throughout, even while a re-embedding switches over."""

    manifest: Manifest
    tables: dict[str, Any]


class MemoryStore:
    """The open tables. Writes are serialised by ``write_lock``; reads need no lock."""

    def __init__(self, root: Path, location: Location | None = None) -> None:
        import lancedb

        self.location = location or LocalLocation(root)
        self.root = root
        self.db = lancedb.connect(
            self.location.lance_uri, storage_options=self.location.storage_options or None
        )
        self.write_lock = threading.RLock()
        manifest = Manifest.load(self.location)
        self.view: View | None = None
        if manifest is not None:
            self._check_version(manifest)
            tables = {
                name: self._open_table(name, physical) for name, physical in manifest.tables.items()
            }
            self._verify(manifest, tables)
            self.view = View(manifest, tables)

    @property
    def manifest(self) -> Manifest | None:
        return self.view.manifest if self.view else None

    @property
    def tables(self) -> dict[str, Any]:
        if self.view is None:
            raise MemoryUnavailableError("The memory has no tables yet.")
        return self.view.tables

    # -- lifecycle --------------------------------------------------------------------------
    def _check_version(self, manifest: Manifest) -> None:
        if manifest.schema_version > SCHEMA_VERSION:
            raise MemoryUnavailableError(
                f"The memory in {self.location.where} has schema version "
                f"{manifest.schema_version}, "
                f"newer than this Entropic OS understands ({SCHEMA_VERSION}). Upgrade, or move "
                "the folder aside to start an empty memory."
            )
        # Older schema versions would be migrated here; version 1 is the first.

    def _verify(self, manifest: Manifest, tables: dict[str, Any]) -> None:
        """Each vector table must carry the manifest's embedder and dimension."""
        for logical in VECTOR_TABLES:
            schema = tables[logical].schema
            meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
            dim = schema.field("vector").type.list_size
            if meta.get("embedder") != manifest.embedder or dim != manifest.dim:
                raise MemoryUnavailableError(
                    f"The memory table {tables[logical].name} holds vectors of "
                    f"{meta.get('embedder', 'an unknown embedder')} ({dim} dimensions), but "
                    f"its manifest in {self.location.where} says {manifest.embedder} "
                    f"({manifest.dim}); they must never mix. Move {self.location.where} aside "
                    "to start an empty memory."
                )

    def _open_table(self, logical: str, physical: str) -> Any:
        try:
            return self.db.open_table(physical)
        except (ValueError, FileNotFoundError, OSError) as exc:
            raise MemoryUnavailableError(
                f"The memory table {physical} ({logical}) in {self.location.where} cannot be "
                f"opened ({exc}). Move it aside to start an empty memory."
            ) from None

    def _table_names(self) -> list[str]:
        names: list[str] = []
        page: str | None = None
        while True:
            response = self.db.list_tables(page_token=page)
            names += list(response.tables)
            page = response.page_token
            if not page:
                return names

    def create(self, embedder: Embedder) -> None:
        """Create empty tables for ``embedder`` (a fresh memory)."""
        with self.write_lock:
            manifest = Manifest(embedder=embedder.identity, spec=embedder.spec, dim=embedder.dim)
            tables = self._create_generation(manifest, LOGICAL_TABLES)
            manifest.tables = {name: t.name for name, t in tables.items()}
            manifest.save(self.location)
            self.view = View(manifest, tables)

    def _create_generation(self, manifest: Manifest, logical: Sequence[str]) -> dict[str, Any]:
        out = {}
        for name in logical:
            physical = f"{name}_g{manifest.generation}"
            if physical in self._table_names():
                self.db.drop_table(physical)
            schema = schema_for(name, manifest.dim, manifest.embedder)
            out[name] = self.db.create_table(physical, schema=schema)
        return out

    def drop_strays(self) -> list[str]:
        """Drop tables the manifest does not name (left by an interrupted re-embedding)."""
        keep = set(self.manifest.tables.values()) if self.manifest else set()
        strays = [n for n in self._table_names() if n not in keep]
        for name in strays:
            self.db.drop_table(name)
        return strays

    def repair(self) -> dict[str, int]:
        """Delete what an interrupted ingest left: chunks without a committed document, and
        documents whose chunks are not all there. Returns what was removed."""
        with self.write_lock:
            chunks, documents = self.tables["chunks"], self.tables["documents"]
            counted = Counter(self._column(chunks, "doc_hash"))
            committed = dict(
                zip(
                    self._column(documents, "doc_hash"),
                    self._column(documents, "chunks"),
                    strict=True,
                )
            )
            orphans = [h for h in counted if h not in committed]
            broken = [h for h, n in committed.items() if counted.get(h, 0) != n]
            for hashes, table in ((orphans + broken, chunks), (broken, documents)):
                for i in range(0, len(hashes), 500):
                    listed = ", ".join(quote(h) for h in hashes[i : i + 500])
                    table.delete(f"doc_hash IN ({listed})")
            removed = {"orphan_documents": len(orphans), "broken_documents": len(broken)}
            if orphans or broken:
                log.warning("memory repair: %s", removed)
            return removed

    @staticmethod
    def _column(table: Any, column: str) -> list[Any]:
        if table.count_rows() == 0:
            return []
        data = table.search().select([column]).limit(None).to_arrow()
        return list(data.column(column).to_pylist())

    # -- documents --------------------------------------------------------------------------
    def document(self, doc_hash: str) -> dict[str, Any] | None:
        rows = (
            self.tables["documents"]
            .search()
            .where(f"doc_hash = {quote(doc_hash)}")
            .limit(1)
            .to_list()
        )
        return dict(rows[0]) if rows else None

    def add_document(
        self,
        chunk_rows: dict[str, list[Any]],
        vectors: Vectors,
        document: dict[str, Any],
        view: View,
    ) -> bool:
        """The chunks in one atomic add, then the document's row: its commit marker. False
        (nothing written) when ``view``, whose embedder made the vectors, is no longer live."""
        with self.write_lock:
            if self.view is not view:
                return False
            schema = self.tables["chunks"].schema
            columns = [pa.array(chunk_rows[f.name], f.type) for f in schema if f.name != "vector"]
            table = pa.Table.from_arrays([*columns, vector_array(vectors)], schema=schema)
            self.tables["chunks"].add(table)
            self._commit_document(document)
            return True

    def _commit_document(self, document: dict[str, Any]) -> None:
        """Separate so a test can kill the process between the two writes."""
        self.tables["documents"].add(pa.Table.from_pylist([document], schema=DOCUMENT_SCHEMA))

    # -- interactions -----------------------------------------------------------------------
    def add_interactions(self, rows: list[dict[str, Any]], vectors: Vectors, view: View) -> bool:
        """One atomic add; False (nothing written) when ``view`` is no longer live."""
        with self.write_lock:
            if self.view is not view:
                return False
            schema = self.tables["interactions"].schema
            columns = [
                pa.array([r[f.name] for r in rows], f.type) for f in schema if f.name != "vector"
            ]
            table = pa.Table.from_arrays([*columns, vector_array(vectors)], schema=schema)
            self.tables["interactions"].add(table)
            return True

    def interaction_ids(self) -> set[str]:
        return set(self._column(self.tables["interactions"], "id"))

    # -- queries ----------------------------------------------------------------------------
    def count(self, logical: str, where: str | None = None) -> int:
        return int(self.tables[logical].count_rows(where))

    def search(
        self,
        logical: str,
        vector: Vectors,
        k: int,
        *,
        where: str | None = None,
        ann: dict[str, int] | None = None,
        exact: bool = False,
        view: View | None = None,
    ) -> list[dict[str, Any]]:
        """The ``k`` nearest rows by cosine distance (``_distance``), filtered before the
        search (prefilter keeps recall), through the ANN index when ``ann`` tunes it."""
        columns = CHUNK_COLUMNS if logical == "chunks" else INTERACTION_COLUMNS
        tables = view.tables if view is not None else self.tables
        query = tables[logical].search(vector[0], vector_column_name="vector")
        query = query.distance_type("cosine").select([*columns, "_distance"]).limit(k)
        if where:
            query = query.where(where, prefilter=True)
        if exact:
            query = query.bypass_vector_index()
        elif ann:
            if "nprobes" in ann:
                query = query.nprobes(ann["nprobes"])
            if "refine_factor" in ann:
                query = query.refine_factor(ann["refine_factor"])
            if "ef" in ann:  # HNSW refuses a search list shorter than k
                query = query.ef(max(ann["ef"], k))
        return [dict(row) for row in query.to_list()]

    def disk_bytes(self) -> int:
        return self.location.size_bytes()

    # -- re-embedding -----------------------------------------------------------------------
    def reembed(self, embedder: Embedder, progress: Progress) -> int:
        """Copy both vector tables into a new generation embedded by ``embedder``, then switch
        the manifest over and drop the old tables. Writes made meanwhile (to the old tables)
        are caught up under the write lock before the switch. Returns the rows re-embedded."""
        old = self.manifest
        assert old is not None
        new = Manifest(
            embedder=embedder.identity,
            spec=embedder.spec,
            dim=embedder.dim,
            generation=old.generation + 1,
            tables=dict(old.tables),
        )
        fresh = self._create_generation(new, VECTOR_TABLES)
        batch = REEMBED_BATCH
        total = sum(self.count(name) for name in VECTOR_TABLES) or 1
        done = 0

        def copy(name: str, skip: set[str]) -> int:
            nonlocal done
            source = self.tables[name]
            if source.count_rows() == 0:
                return 0
            columns = [f.name for f in source.schema if f.name != "vector"]
            data = source.search().select(columns).limit(None).to_arrow()
            if skip:
                keep = [i for i, v in enumerate(data.column("id").to_pylist()) if v not in skip]
                data = data.take(pa.array(keep, pa.int64()))
            copied = 0
            for start in range(0, data.num_rows, batch * 16):
                part = data.slice(start, batch * 16)
                texts = embed_texts(name, part)
                parts = [embedder.embed(texts[i : i + batch]) for i in range(0, len(texts), batch)]
                vectors = np.concatenate(parts)  # a slice is never empty
                arrays = [part.column(f.name) for f in fresh[name].schema if f.name != "vector"]
                fresh[name].add(
                    pa.Table.from_arrays(
                        [*arrays, vector_array(vectors)], schema=fresh[name].schema
                    )
                )
                copied += part.num_rows
                done += part.num_rows
                progress(min(done / total, 0.99), f"re-embedded {done:,} of ~{total:,} rows")
            return copied

        rows = sum(copy(name, set()) for name in VECTOR_TABLES)
        with self.write_lock:  # catch up with writes made while copying, then switch
            for name in VECTOR_TABLES:
                have = set(self._column(fresh[name], "id"))
                rows += copy(name, have)
            new.tables.update({name: fresh[name].name for name in VECTOR_TABLES})
            new.save(self.location)
            previous = {name: self.tables[name].name for name in VECTOR_TABLES}
            self.view = View(new, {**self.tables, **fresh})
            for physical in previous.values():
                self.db.drop_table(physical)
        progress(1.0, f"re-embedded {rows:,} rows with {embedder.identity}")
        return rows


def chunk_embed_text(heading: str, text: str) -> str:
    """What a chunk's vector is made from: its structural place, then its text."""
    return f"{heading}\n{text}" if heading else text


def interaction_embed_text(proto: str, prompt: str, reply: str) -> str:
    return f"Asked {proto}: {prompt[:1500]}\n{proto} answered: {reply[:1500]}"


def embed_texts(logical: str, data: Any) -> list[str]:
    """The texts to embed for rows of ``logical`` in an Arrow table."""
    if logical == "chunks":
        return [
            chunk_embed_text(h or "", t or "")
            for h, t in zip(
                data.column("heading").to_pylist(), data.column("text").to_pylist(), strict=True
            )
        ]
    return [
        interaction_embed_text(p or "", q or "", r or "")
        for p, q, r in zip(
            data.column("proto").to_pylist(),
            data.column("prompt").to_pylist(),
            data.column("reply").to_pylist(),
            strict=True,
        )
    ]
