"""The ANN index: built in the background once a table crosses the threshold, while queries
keep working; recall against exact search; prefiltered queries; new rows folded in.

Clustered vectors (never uniform random ones: IVF_PQ's recall on those says nothing) are
written straight into a real store; the threshold is lowered so the test stays small."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backend.memory.config import MemoryConfig
from backend.memory.index import IndexManager, recall_at
from backend.memory.store import MemoryStore

DIM = 32


class _Identity:
    identity, spec, dim = "test-vectors", "test", DIM


def clustered(rng: np.random.Generator, n: int, centres: np.ndarray) -> np.ndarray:
    points = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.normal(size=(n, DIM))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def add(store: MemoryStore, vectors: np.ndarray, start: int) -> None:
    n = len(vectors)
    ids = [f"d{start}:{i}" for i in range(n)]
    rows: dict[str, list[Any]] = {
        "id": ids,
        "doc_hash": [f"d{start}"] * n,
        "source": ["/synthetic"] * n,
        "name": ["synthetic"] * n,
        "fmt": ["text"] * n,
        "proto": ["BRICK" if i % 4 else "ROBIN" for i in range(n)],
        "position": list(range(n)),
        "start": [0] * n,
        "end": [0] * n,
        "heading": [""] * n,
        "text": ids,
        "ts": [0.0] * n,
    }
    marker = {"doc_hash": f"d{start}", "source": "/synthetic", "name": "synthetic",
              "fmt": "text", "proto": "BRICK", "chunks": n, "bytes": 0, "ts": 0.0}  # fmt: skip
    assert store.view is not None
    assert store.add_document(rows, vectors, marker, store.view)


@pytest.mark.parametrize(
    ("index_type", "built", "tuning"),
    [
        ("hnsw_sq", "IvfHnswSq", {"nprobes": 8, "ef": 64}),
        ("ivf_pq", "IvfPq", {"nprobes": 8, "refine_factor": 10}),
    ],
)
def test_index_builds_in_background_while_queries_keep_working(
    tmp_path: Path, index_type: str, built: str, tuning: dict[str, int]
) -> None:
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(40, DIM))
    store = MemoryStore(tmp_path / "memory")
    store.create(_Identity())  # type: ignore[arg-type]
    add(store, clustered(rng, 4000, centres), 0)
    progress: list[tuple[str, float, str, bool]] = []
    config = MemoryConfig(index_threshold=3000, index_type=index_type, nprobes=8, refine_factor=10)
    manager = IndexManager(store, config, lambda *p: progress.append(p))
    queries = clustered(rng, 20, centres)
    exact = [[r["id"] for r in store.search("chunks", q[None], 10, exact=True)] for q in queries]
    assert manager.ann_params("chunks", store.view) is None  # type: ignore[arg-type]
    assert not manager.maybe_index("interactions")  # empty: below the threshold

    answered: list[int] = []
    errors: list[BaseException] = []

    def query_while_building() -> None:
        try:
            while manager.building("chunks") or not answered:
                answered.append(len(store.search("chunks", queries[0][None], 10)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    assert manager.maybe_index("chunks")
    querier = threading.Thread(target=query_while_building)
    querier.start()
    manager.join(timeout=300)
    querier.join(timeout=60)
    assert not errors and answered and set(answered) == {10}
    assert progress[0][1] == 0.0 and progress[-1][3] and "done in" in progress[-1][2]
    view = store.view
    assert view is not None
    assert manager.index_type(view.tables["chunks"]) == built
    ann = manager.ann_params("chunks", view)
    assert ann == tuning
    found = [[r["id"] for r in store.search("chunks", q[None], 10, ann=ann)] for q in queries]
    recall = float(np.mean([recall_at(e, f) for e, f in zip(exact, found, strict=True)]))
    assert recall >= 0.9, recall
    assert manager.status()["chunks"]["last_build"]["rows"] == 4000

    # prefiltered: only ROBIN's rows, and still the nearest of them
    robin = store.search("chunks", queries[1][None], 10, where="proto = 'ROBIN'", ann=ann)
    robin_exact = store.search("chunks", queries[1][None], 10, where="proto = 'ROBIN'", exact=True)
    assert len(robin) == 10 and {int(r["position"]) % 4 for r in robin} == {0}
    assert recall_at([r["id"] for r in robin_exact], [r["id"] for r in robin]) >= 0.8

    # rows added after the build are found at once, and later folded into the index
    add(store, clustered(rng, 1500, centres), 1)
    newest = store.search("chunks", queries[2][None], 5000, ann=ann)
    assert any(r["id"].startswith("d1:") for r in newest)
    assert manager.maybe_index("chunks")  # 1,500 unindexed > 10% of 4,000
    manager.join(timeout=300)
    stats = view.tables["chunks"].index_stats("vector_idx")
    assert stats.num_unindexed_rows == 0 and stats.num_indexed_rows == 5500
