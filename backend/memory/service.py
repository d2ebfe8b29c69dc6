"""MemoryService: the backend's episodic memory, opened in the background.

``start`` returns at once; a thread imports LanceDB (seconds), loads the embedder, repairs
what a crash left, re-embeds if the configured embedder changed, and records interactions
the memory missed (from the personas' histories). Until then, and if opening fails, the rest
of the backend runs as usual: memory commands raise ``MemoryUnavailableError`` saying why and
what to do, and personas answer without memories.

Interactions are recorded by a writer thread in batches (one LanceDB commit per batch, not
per answer); ingests run one at a time; searches run on the caller's thread.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.bus import EventBus
from backend.memory.config import MemoryConfig
from backend.memory.recorder import Recorder
from backend.memory.retrieval import Recall, build_recall, context_budget
from shared_api.envelope import new_msg_id
from shared_api.errors import EntropicError, MemoryUnavailableError
from shared_api.events import BackendLog, Citation, MemoryMetrics, Progress
from shared_api.replies import DocumentIngested, MemoryHit, MemoryHits, MemoryStatsReply

if TYPE_CHECKING:  # the modules themselves load in the background (pyarrow, pypdf: ~1 s)
    from backend.memory.embedder import Embedder
    from backend.memory.index import IndexManager
    from backend.memory.ingest import Ingestor, IngestOutcome
    from backend.memory.store import MemoryStore, View
    from backend.runtime import Runtime

log = logging.getLogger(__name__)

VECTOR_TABLES = ("chunks", "interactions")
LOGICAL_TABLES = (*VECTOR_TABLES, "documents")

#: How long a memory command waits for the memory to finish opening.
COMMAND_WAIT_S = 20.0
#: Fold small LanceDB commits together after this many writes to a table.
COMPACT_EVERY = 64


class MemoryService:
    def __init__(
        self,
        root: Path,
        config: MemoryConfig,
        bus: EventBus,
        *,
        ollama_host: str = "",
        runtime: Runtime | None = None,
    ) -> None:
        self.root = root
        self.config = config
        self.bus = bus
        self.ollama_host = config.ollama_host or ollama_host
        self.runtime = runtime
        self.state = "disabled" if not config.enabled else "closed"
        self.error: str | None = None
        self.store: MemoryStore | None = None
        self.index: IndexManager | None = None
        self.ingestor: Ingestor | None = None
        self.reembedding: dict[str, Any] | None = None
        self._embedders: dict[str, Embedder] = {}
        self._ready = threading.Event()
        self._stop = threading.Event()
        self.recorder = Recorder(
            lambda: self.state, self._write_interactions, self._interactions_written, self._stop
        )
        self._writes = dict.fromkeys(VECTOR_TABLES, 0)
        self._search_ms: deque[float] = deque(maxlen=200)
        self._opener: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._ingest_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest")

    @property
    def where(self) -> str:
        """Where the memory's tables live, for ``status``."""
        if not self.config.uri:
            return f"local:{self.root}"
        endpoint = self.config.storage_options.get("aws_endpoint", "")
        return self.config.uri + (f" at {endpoint}" if endpoint else "")

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Open in the background; returns at once."""
        if not self.config.enabled:
            self._ready.set()
            return
        with self._start_lock:
            if self.state != "closed" or self._stop.is_set():
                return  # already opening or open (or closing)
            self.state = "opening"
        self._opener = threading.Thread(target=self._open, name="memory-open", daemon=True)
        self._opener.start()
        self.recorder.start()

    def start_when_idle(self, delay_s: float) -> None:
        """Open on first use (a search, an ingest, a recall), or after ``delay_s``: the
        backend answers at once instead of sharing its first seconds with LanceDB."""
        timer = threading.Timer(delay_s, self.start)
        timer.daemon = True
        timer.start()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout) and self.state in ("ready", "reembedding")

    def close(self) -> None:
        self._stop.set()
        self._ingest_pool.shutdown(wait=True, cancel_futures=True)
        if self._opener is not None:  # an open under way is abandoned (it commits atomically)
            self._opener.join(timeout=3)
        self.recorder.close()
        if self.index is not None:
            self.index.join(timeout=5)

    def _open(self) -> None:
        op_id = new_msg_id()
        started = time.perf_counter()
        try:
            from backend.memory.index import IndexManager
            from backend.memory.ingest import Ingestor

            store, embedder, repaired = self._load(op_id)
            self.store = store
            self.index = IndexManager(store, self.config, self._index_progress)
            self.ingestor = Ingestor(store, self.embedder_for, self.config)
            manifest = store.manifest
            assert manifest is not None
            if manifest.embedder != embedder.identity:
                self._open_previous(manifest.spec, manifest.embedder)
                self.state = "reembedding"
                self._ready.set()
                self._reembed(store, embedder, manifest.embedder)
            self.state = "ready"
            self._ready.set()
            seconds = time.perf_counter() - started
            message = f"memory open in {seconds:.1f} s ({embedder.identity}, {self.rows():,} rows)"
            if any(repaired.values()):
                message += f"; removed what an interrupted ingest left: {repaired}"
            log.info("%s", message)
            self._progress("memory_open", op_id, 1.0, message, done=True)
            self._checkpoint()
            self._backfill()
            for logical in VECTOR_TABLES:
                self.index.maybe_index(logical)
        except _Stopping:
            self.state = "closed"
            self._ready.set()
            log.info("memory: opening abandoned, the backend is stopping")
        except Exception as exc:
            self._open_failed(exc, op_id)

    def _load(self, op_id: str) -> tuple[MemoryStore, Embedder, dict[str, int]]:
        """Open the tables and the embedder; create the tables in an empty memory, else
        repair what an interrupted ingest or re-embedding left. Returns what was repaired."""
        from backend.memory.embedder import make_embedder
        from backend.memory.location import open_location
        from backend.memory.store import MemoryStore

        self._checkpoint()
        self._progress("memory_open", op_id, 0.0, "opening the memory")
        location = open_location(self.root, self.config.uri, self.config.storage_options)
        store = MemoryStore(self.root, location)
        self._progress("memory_open", op_id, 0.3, "loading the embedder")
        embedder = make_embedder(
            self.config.embedder,
            ollama_host=self.ollama_host,
            threads=self.config.embed_threads,
        )
        self._embedders[embedder.identity] = embedder
        self._checkpoint()
        strays = store.drop_strays()
        if strays:
            log.warning("memory: dropped tables of an interrupted re-embedding: %s", strays)
        if store.manifest is None:
            store.create(embedder)
            return store, embedder, {}
        return store, embedder, store.repair()

    def _open_failed(self, exc: Exception, op_id: str) -> None:
        """The backend runs on without a memory: say why, and what to do, everywhere."""
        if isinstance(exc, MemoryUnavailableError):
            self.error = exc.message
        else:
            log.exception("memory failed to open")
            remedy = (
                f"check [memory] uri and the AWS_* variables, or move {self.config.uri} aside"
                if self.config.uri
                else f"move {self.root} aside"
            )
            self.error = (
                f"The memory in {self.where} failed to open ({exc.__class__.__name__}: "
                f"{exc}). The backend runs without it; {remedy} to start an empty memory, "
                "and report this with the backend log."
            )
        self.state = "failed"
        self._ready.set()
        log.error("memory unavailable: %s", self.error)
        self.bus.publish(BackendLog(level="warning", message=f"Memory: {self.error}"))
        self._progress("memory_open", op_id, 1.0, self.error, done=True)

    def _checkpoint(self) -> None:
        """Opening (or re-embedding) gives up here once the backend is stopping: what it
        leaves is what a crash would, and the next open repairs it."""
        if self._stop.is_set():
            raise _Stopping()

    def _open_previous(self, spec: str, identity: str) -> None:
        """The embedder that made the stored vectors, to keep searching while re-embedding."""
        from backend.memory.embedder import make_embedder

        try:
            previous = make_embedder(spec, ollama_host=self.ollama_host, threads=1)
        except EntropicError as exc:
            log.warning("memory: the previous embedder %s is unavailable (%s)", spec, exc)
            return
        if previous.identity == identity:
            self._embedders[identity] = previous

    def _reembed(self, store: MemoryStore, embedder: Embedder, old: str) -> None:
        op_id = new_msg_id()
        started = time.perf_counter()
        rows = sum(store.count(name) for name in VECTOR_TABLES)
        self.reembedding = {"from": old, "to": embedder.identity, "rows": rows, "fraction": 0.0}
        log.info(
            "memory: embedder changed from %s to %s: re-embedding %d rows",
            old,
            embedder.identity,
            rows,
        )
        last_logged = [0.0]

        def progress(fraction: float, message: str) -> None:
            self._checkpoint()
            assert self.reembedding is not None
            self.reembedding["fraction"] = round(fraction, 3)
            self._progress("memory_reembed", op_id, fraction, message, done=fraction >= 1.0)
            if fraction - last_logged[0] >= 0.1 or fraction >= 1.0:
                last_logged[0] = fraction
                log.info("memory: re-embedding %.0f%%: %s", 100 * fraction, message)

        progress(0.0, f"re-embedding {rows:,} rows with {embedder.identity}")
        store.reembed(embedder, progress)
        self.reembedding = None
        self._embedders = {embedder.identity: embedder}
        log.info("memory: re-embedded %d rows in %.1f s", rows, time.perf_counter() - started)

    def embedder_for(self, view: View) -> Embedder:
        """The embedder that made ``view``'s vectors."""
        embedder = self._embedders.get(view.manifest.embedder)
        if embedder is None:
            pct = 100 * (self.reembedding or {}).get("fraction", 0.0)
            raise MemoryUnavailableError(
                f"The memory is being re-embedded with {self.config.embedder} ({pct:.0f}% done) "
                f"and its previous embedder ({view.manifest.embedder}) is unavailable; "
                "search and ingest resume when re-embedding is done (see memory_stats)."
            )
        return embedder

    def _require(self, wait: float = COMMAND_WAIT_S) -> MemoryStore:
        self.start()
        if not self.config.enabled:
            raise MemoryUnavailableError(
                "The memory is disabled ([memory] enabled = false in config.toml). Set it to "
                "true and restart the backend."
            )
        if not self._ready.wait(wait):
            raise MemoryUnavailableError(
                "The memory is still opening (loading LanceDB and the embedder); try again in "
                "a few seconds."
            )
        if self.store is None:
            raise MemoryUnavailableError(self.error or "The memory is not open.")
        return self.store

    # -- search -----------------------------------------------------------------------------
    def search(self, text: str, k: int, proto: str | None = None) -> MemoryHits:
        store = self._require()
        assert self.index is not None
        started = time.perf_counter()
        view = store.view
        assert view is not None
        embedder = self.embedder_for(view)
        vector = embedder.embed([text])
        from backend.memory.store import quote  # loaded already: the store is open

        where = f"proto = {quote(proto)}" if proto else None
        hits: list[MemoryHit] = []
        exact = True
        for logical in VECTOR_TABLES:
            ann = self.index.ann_params(logical, view, k)
            exact = exact and ann is None
            for row in store.search(logical, vector, k, where=where, ann=ann, view=view):
                hits.append(_hit(logical, row))
        best: dict[tuple[str, str], MemoryHit] = {}
        for hit in sorted(hits, key=lambda h: h.score, reverse=True):
            best.setdefault((hit.origin, hit.text), hit)  # the same text twice: once
        took_ms = (time.perf_counter() - started) * 1000
        self._search_ms.append(took_ms)
        found = list(best.values())[:k]
        self.bus.publish(
            MemoryMetrics(op="search", took_ms=round(took_ms, 3), rows=self.rows(), hits=len(found))
        )
        return MemoryHits(
            query=text,
            hits=found,
            took_ms=round(took_ms, 3),
            exact=exact,
            embedder=view.manifest.embedder,
        )

    # -- ingest -----------------------------------------------------------------------------
    def ingest(
        self, path: str, proto: str | None, wait: bool = True, open_wait: float = COMMAND_WAIT_S
    ) -> DocumentIngested:
        """Ingest ``path`` (``wait``: to the end, else queued); a memory still opening is
        waited for up to ``open_wait`` seconds."""
        self._require(open_wait)
        target = Path(path).expanduser()
        if not wait:
            self._ingest_pool.submit(self._ingest_in_background, target, proto or "")
            return DocumentIngested(
                path=str(target), name=target.name, status="queued", proto=proto or ""
            )
        outcome = self._ingest(target, proto or "")
        return DocumentIngested(
            path=outcome.path,
            status="ingested" if outcome.status == "ingested" else "duplicate",
            name=outcome.name,
            doc_hash=outcome.doc_hash,
            chunks=outcome.chunks,
            proto=outcome.proto,
            seconds=round(outcome.seconds, 3),
            duplicate_of=outcome.duplicate_of,
        )

    def _ingest(self, target: Path, proto: str) -> IngestOutcome:
        assert self.ingestor is not None and self.index is not None
        op_id = new_msg_id()
        self._progress("memory_ingest", op_id, 0.0, f"{target.name}: reading")
        try:
            outcome = self.ingestor.ingest(target, proto, lambda f, m: self._step(op_id, f, m))
        except EntropicError as exc:
            self._progress("memory_ingest", op_id, 1.0, f"{target.name}: {exc.message}", done=True)
            raise
        if outcome.status == "duplicate":
            message = (
                f"{outcome.name}: already in memory ({outcome.chunks} chunks, from "
                f"{outcome.duplicate_of}); nothing added"
            )
        else:
            rate = outcome.chunks / outcome.seconds if outcome.seconds else 0.0
            message = (
                f"{outcome.name}: {outcome.chunks} chunks remembered in {outcome.seconds:.1f} s "
                f"({rate:.1f} chunks/s)"
            )
            self.bus.publish(
                MemoryMetrics(
                    op="ingest",
                    took_ms=round(outcome.seconds * 1000, 3),
                    rows=self.rows(),
                    chunks=outcome.chunks,
                    detail={"chunks_per_s": round(rate, 2), "name": outcome.name},
                )
            )
            self.after_write("chunks")
        log.info("memory: %s", message)
        self._progress("memory_ingest", op_id, 1.0, message, done=True)
        return outcome

    def _step(self, op_id: str, fraction: float, message: str) -> None:
        self._checkpoint()  # a long ingest stops with the backend (nothing is written yet)
        self._progress("memory_ingest", op_id, fraction, message)

    def _ingest_in_background(self, target: Path, proto: str) -> None:
        try:
            self._ingest(target, proto)
        except _Stopping:
            log.info("memory: ingest of %s abandoned, the backend is stopping", target)
        except EntropicError as exc:
            self.bus.publish(BackendLog(level="warning", message=exc.message))
        except Exception as exc:
            log.exception("ingest of %s failed", target)
            self.bus.publish(BackendLog(level="error", message=f"Ingest of {target} failed: {exc}"))

    # -- prompts ----------------------------------------------------------------------------
    def recall(
        self, proto: str, text: str, *, system: str, n_ctx: int, max_tokens: int
    ) -> Recall | None:
        """The memories for a prompt, or None (no room, nothing relevant, memory not open).
        Never raises: a persona answers without memories rather than not at all."""
        cfg = self.config
        if not cfg.enabled or cfg.retrieval_k == 0:
            return None
        self.start()
        budget = context_budget(
            cfg.retrieval_tokens, n_ctx=n_ctx, system=system, question=text, max_tokens=max_tokens
        )
        if budget <= 0 or not self.wait_ready(cfg.recall_wait_s):
            return None
        try:
            hits = self.search(text[:4000], cfg.retrieval_k).hits
        except EntropicError as exc:
            log.info("memory: no recall for %s: %s", proto, exc.message)
            return None
        except Exception:
            log.exception("memory: recall for %s failed", proto)
            return None
        return build_recall(text, hits, budget, min_score=cfg.min_score)

    def record_interaction(
        self, proto: str, interaction: dict[str, Any], citations: list[Citation] | None = None
    ) -> None:
        """Queue one exchange for the writer thread (returns at once)."""
        if self.config.enabled and self.state != "failed":
            self.start()
            self.recorder.queue(proto, interaction, citations or [])

    def _write_interactions(self, batch: list[dict[str, Any]]) -> bool:
        """Embed and store a batch of interaction rows (the recorder's writer)."""
        from backend.memory.store import interaction_embed_text

        store = self.store
        view = store.view if store is not None else None
        if store is None or view is None:
            return False
        embedder = self.embedder_for(view)
        texts = [interaction_embed_text(r["proto"], r["prompt"], r["reply"]) for r in batch]
        return store.add_interactions(batch, embedder.embed(texts), view)

    def _interactions_written(self, count: int, took_ms: float) -> None:
        self.bus.publish(
            MemoryMetrics(
                op="record",
                took_ms=round(took_ms, 3),
                rows=self.rows(),
                detail={"interactions": count},
            )
        )
        self.after_write("interactions")

    def after_write(self, logical: str) -> None:
        """After a commit: start or fold the index, and now and then compact small commits."""
        assert self.index is not None and self.store is not None
        self._writes[logical] += 1
        if self.index.maybe_index(logical) or self.index.building(logical):
            return
        if self._writes[logical] % COMPACT_EVERY == 0:
            view = self.store.view
            assert view is not None
            with self.store.write_lock, contextlib.suppress(Exception):  # an optimisation only
                view.tables[logical].optimize(cleanup_older_than=timedelta(minutes=10))

    def _backfill(self) -> None:
        """Record interactions the memory lacks (made while it was down, or still queued when
        the backend was killed): the personas' histories hold them all."""
        if self.runtime is None or self.store is None:
            return
        manager = self.runtime.manager
        with manager.lock:
            histories = [(p.name, list(p.history)) for p in manager.list()]
        self.recorder.backfill(histories, self.store.interaction_ids())

    # -- stats ------------------------------------------------------------------------------
    def stats(self) -> MemoryStatsReply:
        self.start()
        state = self.state
        if self.store is None or self.store.manifest is None:
            return MemoryStatsReply(
                state=state, error=self.error, path=self.config.uri or str(self.root)
            )
        assert self.index is not None
        manifest = self.store.manifest
        searches = list(self._search_ms)
        pending = self.recorder.pending
        return MemoryStatsReply(
            state=state,
            error=self.error,
            path=self.config.uri or str(self.root),
            embedder=manifest.embedder,
            dim=manifest.dim,
            schema_version=manifest.schema_version,
            rows={name: self.store.count(name) for name in LOGICAL_TABLES},
            index=self.index.status(),
            disk_bytes=self.store.disk_bytes(),
            detail={
                "generation": manifest.generation,
                "configured_embedder": self.config.embedder,
                "reembedding": self.reembedding,
                "pending_interactions": pending,
                "searches": len(searches),
                "search_p50_ms": round(statistics.median(searches), 3) if searches else None,
            },
        )

    # -- events -----------------------------------------------------------------------------
    def rows(self) -> int:
        """Every memory: chunks and interactions."""
        if self.store is None or self.store.view is None:
            return 0
        return sum(self.store.count(name) for name in VECTOR_TABLES)

    def _progress(
        self, op: str, op_id: str, fraction: float, message: str, done: bool = False
    ) -> None:
        self.bus.publish(
            Progress(
                op=op,
                op_id=op_id,
                fraction=min(1.0, max(0.0, fraction)),
                message=message,
                done=done,
            )
        )

    def _index_progress(self, logical: str, fraction: float, message: str, done: bool) -> None:
        self._progress("memory_index", f"index-{logical}", fraction, message, done)
        if done:
            self.bus.publish(
                MemoryMetrics(op="index", took_ms=0.0, rows=self.rows(), detail={"table": logical})
            )


class _Stopping(MemoryUnavailableError):
    """The backend is stopping: opening, re-embedding or an ingest gives up."""

    def __init__(self) -> None:
        super().__init__("The backend is stopping; try again once it runs.")


def _hit(logical: str, row: dict[str, Any]) -> MemoryHit:
    score = 1.0 - float(row["_distance"])
    if logical == "chunks":
        return MemoryHit(
            origin="document",
            id=row["id"],
            score=round(score, 4),
            source=row["source"] or "",
            name=row["name"] or "",
            proto=row["proto"] or "",
            heading=row["heading"] or "",
            position=int(row["position"] or 0),
            start=int(row["start"] if row["start"] is not None else -1),
            end=int(row["end"] if row["end"] is not None else -1),
            text=row["text"] or "",
            ts=float(row["ts"] or 0.0),
        )
    proto = row["proto"] or ""
    return MemoryHit(
        origin="conversation",
        id=row["id"],
        score=round(score, 4),
        source=f"conversation with {proto}",
        proto=proto,
        heading=f"{row['backend']}:{row['model']}",
        text=f"Asked {proto}: {_clip(row['prompt'] or '', 1000)}\n"
        f"{proto} answered: {row['reply'] or ''}",
        ts=float(row["ts"] or 0.0),
    )


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 3] + "..."
