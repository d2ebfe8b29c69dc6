"""When and how a memory table gets its ANN index, built in the background.

Below ``index_threshold`` rows (default 100,000) search is exact: a brute-force scan, which
at that size answers in tens of milliseconds with perfect recall. Above it a table gets an
ANN index, chosen by measurement (``python -m benchmarks memory``, 100k rows, 2 cores):
HNSW-SQ by default (recall@10 ~0.985, p50 ~5-8 ms, built in ~1.5 min), or IVF_PQ with a
``refine_factor`` re-ranking on full vectors (recall@10 ~1.0, p50 ~9-14 ms, ~2-3x longer to
build). Without refine, IVF_PQ's recall@10 is ~0.63, so refine is not optional.

The build runs on its own thread while queries keep using the table (LanceDB swaps the index
in atomically when it commits), with ``memory_index`` progress events. Rows added after the
build are searched exactly alongside the index until ``optimize`` folds them in.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from backend.memory.config import MemoryConfig
from backend.memory.store import VECTOR_TABLES, MemoryStore, View

log = logging.getLogger(__name__)

#: (fraction, message, done) for the table being indexed.
OnProgress = Callable[[str, float, str, bool], None]
#: Fold unindexed rows into the index once they are this share of the indexed ones.
REINDEX_SHARE = 0.1
#: Seconds per row an index build takes here (2 cores, ~80 s for 100k rows of HNSW-SQ);
#: refined by every build. Only the progress estimate uses it.
DEFAULT_SECONDS_PER_ROW = 0.0008
TICK_S = 2.0


def ivf_pq_partitions(rows: int) -> int:
    """~1,600 rows per partition, 8..1024: at 100k rows 62 partitions build in about a
    quarter of the time 256 need, and refine keeps the recall."""
    return max(8, min(1024, rows // 1600))


def pq_sub_vectors(dim: int) -> int:
    for width in (8, 4, 2, 1):  # 8 dimensions per sub-vector where the dimension allows
        if dim % width == 0 and dim // width >= 1:
            return dim // width
    return 1


def index_config(kind: str, rows: int, dim: int) -> Any:
    from lancedb.index import HnswSq, IvfPq

    if kind == "hnsw_sq":
        return HnswSq(distance_type="cosine", num_partitions=max(1, rows // 100_000))
    return IvfPq(
        distance_type="cosine",
        num_partitions=ivf_pq_partitions(rows),
        num_sub_vectors=pq_sub_vectors(dim),
    )


class IndexManager:
    def __init__(self, store: MemoryStore, config: MemoryConfig, on_progress: OnProgress) -> None:
        self.store = store
        self.config = config
        self.on_progress = on_progress
        self.seconds_per_row = DEFAULT_SECONDS_PER_ROW
        self._lock = threading.Lock()
        self._building: dict[str, dict[str, Any]] = {}
        self._indexed: dict[str, str | None] = {}  # physical table -> index type, or None
        self.last_build: dict[str, dict[str, Any]] = {}
        self._threads: list[threading.Thread] = []

    # -- queries ----------------------------------------------------------------------------
    def index_type(self, table: Any) -> str | None:
        """The vector index type on ``table`` (cached: only this manager adds indexes)."""
        name = table.name
        if name not in self._indexed:
            kinds = [str(i.index_type) for i in table.list_indices() if "vector" in i.columns]
            self._indexed[name] = kinds[0] if kinds else None
        return self._indexed[name]

    def ann_params(self, logical: str, view: View, k: int = 10) -> dict[str, int] | None:
        """Query tuning for the table's index (for ``k`` results), or None: exact search."""
        kind = self.index_type(view.tables[logical])
        if kind is None:
            return None
        if "Hnsw" in kind:  # the search list must be well above k
            return {"nprobes": self.config.nprobes, "ef": max(64, 4 * k)}
        return {"nprobes": self.config.nprobes, "refine_factor": self.config.refine_factor}

    def building(self, logical: str) -> bool:
        with self._lock:
            return logical in self._building

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"threshold": self.config.index_threshold}
        view = self.store.view
        for logical in VECTOR_TABLES:
            entry: dict[str, Any] = {"index": None}
            if view is not None:
                entry["index"] = self.index_type(view.tables[logical])
            with self._lock:
                if logical in self._building:
                    b = self._building[logical]
                    entry["building"] = {
                        "rows": b["rows"],
                        "kind": b["kind"],
                        "elapsed_s": round(time.monotonic() - b["started"], 1),
                    }
            if logical in self.last_build:
                entry["last_build"] = self.last_build[logical]
            out[logical] = entry
        return out

    # -- building ---------------------------------------------------------------------------
    def maybe_index(self, logical: str) -> bool:
        """Start a background build when the table crossed the threshold and has no index;
        fold new rows into an existing index when enough have piled up. True if started."""
        view = self.store.view
        if view is None or self.building(logical):
            return False
        table = view.tables[logical]
        rows = table.count_rows()
        if self.index_type(table) is None:
            if rows < self.config.index_threshold:
                return False
            return self._start(logical, table, rows, "build")
        stats = table.index_stats("vector_idx")
        if stats is not None and stats.num_unindexed_rows > max(
            1000, REINDEX_SHARE * stats.num_indexed_rows
        ):
            return self._start(logical, table, stats.num_unindexed_rows, "optimize")
        return False

    def _start(self, logical: str, table: Any, rows: int, what: str) -> bool:
        with self._lock:
            if logical in self._building:
                return False
            self._building[logical] = {
                "rows": rows,
                "kind": self.config.index_type if what == "build" else "optimize",
                "started": time.monotonic(),
            }
        thread = threading.Thread(
            target=self._build, args=(logical, table, rows, what), name=f"index-{logical}"
        )
        thread.daemon = True
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return True

    def _build(self, logical: str, table: Any, rows: int, what: str) -> None:
        kind = self.config.index_type
        if what == "build":
            label = f"{kind.upper()} index on {rows:,} {logical}"
        else:
            label = f"{rows:,} new {logical} into the index"
        estimate = max(1.0, rows * self.seconds_per_row)
        done = threading.Event()
        started = time.monotonic()

        def tick() -> None:
            while not done.wait(TICK_S):
                elapsed = time.monotonic() - started
                fraction = min(0.95, elapsed / estimate)
                self.on_progress(logical, fraction, f"{label}: {elapsed:.0f} s", False)

        ticker = threading.Thread(target=tick, name=f"index-tick-{logical}", daemon=True)
        self.on_progress(logical, 0.0, f"{label}: started", False)
        log.info("memory: %s started", label)
        ticker.start()
        try:
            if what == "build":
                dim = self.store.manifest.dim if self.store.manifest else 384
                table.create_index("vector", config=index_config(kind, rows, dim))
                self._scalar_index(table)
                self._indexed.pop(table.name, None)
            else:
                table.optimize(cleanup_older_than=timedelta(minutes=5))
            seconds = time.monotonic() - started
            if what == "build":
                self.seconds_per_row = seconds / max(rows, 1)
            self.last_build[logical] = {
                "what": what,
                "kind": kind,
                "rows": rows,
                "seconds": round(seconds, 1),
                "at": time.time(),
            }
            message = f"{label}: done in {seconds:.1f} s"
            log.info("memory: %s", message)
            self.on_progress(logical, 1.0, message, True)
        except Exception as exc:
            log.exception("memory: %s failed", label)
            self.on_progress(logical, 1.0, f"{label} failed: {exc}; search stays exact", True)
        finally:
            done.set()
            with self._lock:
                self._building.pop(logical, None)

    @staticmethod
    def _scalar_index(table: Any) -> None:
        """A bitmap index on ``proto`` keeps prefiltered (per-persona) searches cheap."""
        from lancedb.index import Bitmap

        if not any("proto" in index.columns for index in table.list_indices()):
            table.create_index("proto", config=Bitmap())

    def join(self, timeout: float = 600.0) -> None:
        """Wait for running builds (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))


def recall_at(exact: list[str], approximate: list[str]) -> float:
    """recall@k of ``approximate`` against the exact top-k ids."""
    if not exact:
        return math.nan
    return len(set(exact) & set(approximate)) / len(exact)
