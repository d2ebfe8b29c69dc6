"""Switching the embedder re-embeds everything into a new table generation, with progress;
vectors of two embedders never share a table. Ollama's side is FakeOllama (a TEST DOUBLE:
feature-hashed bag-of-words vectors; no Ollama server can run here)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.memory.store import MemoryStore
from shared_api.errors import ErrorCode
from tests.doubles.fake_ollama import EMBED_DIM, GB, FakeOllama
from tests.memory.conftest import OpenMemory, wait_until


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama({"nomic-embed-text": GB // 4}) as server:
        yield server


def test_switching_embedders_reembeds_with_progress(
    open_memory: OpenMemory, docs: dict[str, Path], fake: FakeOllama, tmp_path: Path
) -> None:
    root = tmp_path / "memory"
    first = open_memory(root)
    for path in docs.values():
        first.service.ingest(str(path), "BRICK")
    first.service.record_interaction(
        "ROBIN", {"id": "r1", "prompt": "Favourite fruit?", "reply": "Mango."}
    )
    wait_until(lambda: first.service.stats().rows["interactions"] == 1)
    before = first.service.stats()
    assert before.dim == 384 and before.embedder.startswith("minilm")
    first.service.close()

    switched = open_memory(root, embedder="ollama:nomic-embed-text", ollama_host=fake.host)
    svc = switched.service
    wait_until(lambda: svc.state == "ready", what="re-embedding")
    after = svc.stats()
    assert after.embedder == "ollama:nomic-embed-text@000000000000" and after.dim == EMBED_DIM
    assert after.rows == before.rows and after.detail["generation"] == 2
    steps = switched.progress("memory_reembed")
    assert steps[0].fraction == 0.0 and steps[-1].done and steps[-1].fraction == 1.0
    assert [s.fraction for s in steps] == sorted(s.fraction for s in steps)
    assert (
        f"re-embedded {sum(before.rows[t] for t in ('chunks', 'interactions'))} rows"
        in steps[-1].message
    )
    hit = svc.search("Falcon launch date March", 1).hits[0]
    assert hit.name == "falcon.md" and "14th of March" in hit.text
    embed_calls = [r for r in fake.state.requests if r["path"] == "/api/embed"]
    assert embed_calls and all(r["model"] == "nomic-embed-text" for r in embed_calls)

    # the tables, their schema metadata and the manifest all name the new embedder
    store = svc.store
    assert store is not None
    for name in ("chunks", "interactions"):
        table = store.tables[name]
        assert table.name == f"{name}_g2"
        meta = table.schema.metadata
        assert meta[b"embedder"] == after.embedder.encode() and meta[b"dim"] == b"64"
        assert table.schema.field("vector").type.list_size == EMBED_DIM
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["embedder"] == after.embedder and manifest["dim"] == EMBED_DIM
    assert sorted(store._table_names()) == ["chunks_g2", "documents_g1", "interactions_g2"]
    svc.close()

    back = open_memory(root).service  # and back again
    wait_until(lambda: back.state == "ready", what="re-embedding back")
    assert back.stats().dim == 384 and back.stats().rows == before.rows
    assert back.search("who leads the project?", 1).hits[0].text.startswith("Margaret Okafor")


def test_an_interrupted_reembedding_is_dropped_and_redone(
    open_memory: OpenMemory, docs: dict[str, Path], fake: FakeOllama, tmp_path: Path
) -> None:
    root = tmp_path / "memory"
    svc = open_memory(root).service
    svc.ingest(str(docs["garden.txt"]), "ROBIN")
    svc.close()
    # a crash half-way: the new generation's table exists, the manifest still names the old
    store = MemoryStore(root)
    store.db.create_table("chunks_g2", schema=store.tables["chunks"].schema)
    del store
    reopened = open_memory(root).service
    assert reopened.stats().detail["generation"] == 1
    assert reopened.store is not None and "chunks_g2" not in reopened.store._table_names()
    assert reopened.search("basil next to tomatoes", 1).hits[0].name == "garden.txt"


def test_an_unreachable_embedder_leaves_the_backend_a_typed_error(
    open_memory: OpenMemory, tmp_path: Path
) -> None:
    from backend.bus import EventBus
    from backend.memory.config import MemoryConfig
    from backend.memory.service import MemoryService
    from shared_api.errors import MemoryUnavailableError
    from tests.integration.test_models import free_port

    config = MemoryConfig(
        embedder="ollama:nomic-embed-text", ollama_host=f"http://127.0.0.1:{free_port()}"
    )
    svc = MemoryService(tmp_path / "memory", config, EventBus())
    svc.start()
    assert not svc.wait_ready(60) and svc.state == "failed"
    with pytest.raises(MemoryUnavailableError) as caught:
        svc.search("anything", 1)
    assert caught.value.code == ErrorCode.MEMORY_UNAVAILABLE
    assert "unreachable" in caught.value.message and 'embedder = "minilm"' in caught.value.message
    assert svc.recall("BRICK", "hi", system="", n_ctx=2048, max_tokens=32) is None
    svc.close()


def test_search_and_ingest_keep_working_while_reembedding(
    open_memory: OpenMemory,
    docs: dict[str, Path],
    fake: FakeOllama,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from backend.memory.embedder import OllamaEmbedder

    root = tmp_path / "memory"
    first = open_memory(root, chunk_chars=200)
    first.service.ingest(str(docs["falcon.md"]), "BRICK")
    first.service.ingest(str(docs["invoices.py"]), "BRICK")
    first.service.close()
    slow_call = OllamaEmbedder._call

    def slow(self: OllamaEmbedder, texts: list[str]) -> object:
        time.sleep(0.4)  # a slow embedding server: the switch takes a few seconds
        return slow_call(self, texts)

    monkeypatch.setattr(OllamaEmbedder, "_call", slow)
    monkeypatch.setattr("backend.memory.store.REEMBED_BATCH", 2)
    switching = open_memory(
        root, embedder="ollama:nomic-embed-text", ollama_host=fake.host, chunk_chars=200
    )
    svc = switching.service
    assert svc.state == "reembedding"
    during = svc.search("Falcon launch date", 1)  # the old tables, the old embedder
    assert during.embedder.startswith("minilm") and "14th of March" in during.hits[0].text
    assert svc.stats().detail["reembedding"]["to"].startswith("ollama:nomic-embed-text")
    added = svc.ingest(str(docs["garden.txt"]), "ROBIN")  # written to the old tables...
    assert added.status == "ingested"
    wait_until(lambda: svc.state == "ready", what="re-embedding")
    after = svc.search("basil tomatoes pests", 1)  # ...and caught up before the switch
    assert after.embedder.startswith("ollama:") and after.hits[0].name == "garden.txt"
    assert svc.stats().rows["documents"] == 3


def test_a_missing_ollama_embedding_model_names_the_pull(tmp_path: Path) -> None:
    from backend.bus import EventBus
    from backend.memory.config import MemoryConfig
    from backend.memory.service import MemoryService

    with FakeOllama({}) as empty:  # reachable, but nothing installed
        config = MemoryConfig(embedder="ollama:nomic-embed-text", ollama_host=empty.host)
        svc = MemoryService(tmp_path / "memory", config, EventBus())
        svc.start()
        assert not svc.wait_ready(60) and svc.state == "failed"
        assert svc.error is not None and "ollama pull nomic-embed-text" in svc.error
        svc.close()
