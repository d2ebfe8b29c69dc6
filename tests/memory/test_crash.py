"""kill -9 in the middle of an ingest, in a real subprocess: the memory is consistent after
reopening (no partial document, no duplicate), and the document can be ingested again."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from backend.memory.store import MemoryStore
from tests.memory.conftest import OpenMemory

ROOT = Path(__file__).resolve().parents[2]

INGESTER = """
import os, signal, sys
from pathlib import Path
from backend.bus import EventBus
from backend.memory.config import MemoryConfig
from backend.memory.service import MemoryService
from backend.memory.store import MemoryStore

root, mode, *paths = sys.argv[1:]
if mode == "kill_before_commit":
    # chunks written, commit marker not yet: the worst moment for a crash
    MemoryStore._commit_document = lambda self, doc: os.kill(os.getpid(), signal.SIGKILL)
svc = MemoryService(Path(root), MemoryConfig(), EventBus())
svc.start()
assert svc.wait_ready(90), svc.error
print("ready", flush=True)
for path in paths:
    print("ingesting", path, flush=True)
    svc.ingest(path, "BRICK")
    print("ingested", path, flush=True)
svc.close()
"""


def book(folder: Path, name: str, paragraphs: int) -> Path:
    """A document of distinct paragraphs (~40 chunks per 100 paragraphs)."""
    text = "\n\n".join(
        f"Chapter {name} paragraph {i}: the {name} archive notes that item {i * 7} was "
        f"catalogued on day {i} by clerk number {i % 13}."
        for i in range(paragraphs)
    )
    path = folder / f"{name}.txt"
    path.write_text(text)
    return path


def start(root: Path, mode: str, paths: list[Path]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", INGESTER, str(root), mode, *map(str, paths)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def consistency(root: Path) -> tuple[dict[str, int], Counter[str]]:
    """(committed documents -> chunk count, chunks per doc hash), read raw (no repair)."""
    store = MemoryStore(root)
    docs = store.tables["documents"].to_arrow().to_pylist()
    chunks = store.tables["chunks"].search().select(["id", "doc_hash"]).limit(None).to_arrow()
    ids = chunks.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "duplicate chunk ids"
    hashes = [d["doc_hash"] for d in docs]
    assert len(hashes) == len(set(hashes)), "a document committed twice"
    return {d["doc_hash"]: d["chunks"] for d in docs}, Counter(
        chunks.column("doc_hash").to_pylist()
    )


def test_kill_between_chunks_and_commit_marker_is_repaired(
    open_memory: OpenMemory, tmp_path: Path
) -> None:
    root = tmp_path / "memory"
    path = book(tmp_path, "alpha", 30)
    with start(root, "kill_before_commit", [path]) as proc:
        assert proc.wait(timeout=120) == -signal.SIGKILL
    committed, counted = consistency(root)
    assert committed == {} and sum(counted.values()) > 0  # the chunks landed, the marker not
    svc = open_memory(root).service  # opening repairs
    assert svc.stats().rows == {"chunks": 0, "interactions": 0, "documents": 0}
    again = svc.ingest(str(path), "BRICK")
    assert again.status == "ingested" and again.chunks == sum(counted.values())
    assert svc.search("clerk number 5 catalogued", 1).hits[0].name == "alpha.txt"


def test_kill_at_random_moments_leaves_whole_documents_only(
    open_memory: OpenMemory, tmp_path: Path
) -> None:
    root = tmp_path / "memory"
    paths = [book(tmp_path, name, 100) for name in ("north", "south", "east", "west")]
    rng = random.Random(6)
    for _round in range(2):
        with start(root, "normal", paths) as proc:
            assert proc.stdout is not None
            first = proc.stdout.readline()  # "ingesting ...": the first embedding has begun
            assert first.startswith("ingesting"), first
            time.sleep(rng.uniform(0.3, 1.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        committed, counted = consistency(root)
        for doc_hash, chunks in committed.items():
            assert counted[doc_hash] == chunks, "a committed document lost chunks"
    svc = open_memory(root).service
    outcomes = [svc.ingest(str(p), "BRICK") for p in paths]
    committed, counted = consistency(root)
    assert len(committed) == 4 and committed == dict(counted)
    assert {o.status for o in outcomes} <= {"ingested", "duplicate"}
    assert svc.stats().rows["chunks"] == sum(counted.values())
