"""Ingest and search through a real MemoryService: LanceDB in a temp folder, the real
offline MiniLM embedder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from shared_api.errors import DocumentError, MemoryUnavailableError
from tests.memory.conftest import OpenMemory, wait_until
from tests.unit.test_documents import minimal_pdf


def test_ingest_then_search_returns_the_right_chunk(
    open_memory: OpenMemory, docs: dict[str, Path]
) -> None:
    memory = open_memory()
    svc = memory.service
    for path in docs.values():
        assert svc.ingest(str(path), "BRICK").status == "ingested"
    found = svc.search("When does Falcon launch?", 3)
    top = found.hits[0]
    assert top.origin == "document" and top.name == "falcon.md"
    assert "14th of March" in top.text and top.heading == "Project Falcon > Deadlines"
    assert top.source == str(docs["falcon.md"]) and top.proto == "BRICK"
    assert found.exact and found.embedder.startswith("minilm-l6-v2-int8@")
    assert top.score > found.hits[1].score
    # the chunk's offsets point at its text in the file
    text = docs["falcon.md"].read_text()
    assert text[top.start : top.end].strip() == top.text
    assert svc.search("how much sun do tomatoes need", 1).hits[0].name == "garden.txt"
    code = svc.search("value added tax on an amount", 1).hits[0]
    assert code.name == "invoices.py" and code.heading == "def vat"
    metrics = [e for e in memory.events if e.kind == "memory_metrics"]
    assert {m.op for m in metrics} >= {"ingest", "search"}  # type: ignore[union-attr]
    done = [p for p in memory.progress("memory_ingest") if p.done]
    assert len(done) == 3 and all("chunks remembered" in p.message for p in done)


def test_reingesting_the_same_content_adds_nothing(
    open_memory: OpenMemory, docs: dict[str, Path], tmp_path: Path
) -> None:
    svc = open_memory().service
    first = svc.ingest(str(docs["falcon.md"]), "BRICK")
    rows = svc.stats().rows
    again = svc.ingest(str(docs["falcon.md"]), "ROBIN")
    copy = tmp_path / "copy-of-falcon.md"
    copy.write_bytes(docs["falcon.md"].read_bytes())
    elsewhere = svc.ingest(str(copy), "BABS")
    for reply in (again, elsewhere):
        assert reply.status == "duplicate" and reply.doc_hash == first.doc_hash
        assert reply.duplicate_of == str(docs["falcon.md"]) and reply.chunks == first.chunks
    assert svc.stats().rows == rows == {"chunks": first.chunks, "interactions": 0, "documents": 1}


def test_filtered_search_only_returns_that_personas_memories(
    open_memory: OpenMemory, docs: dict[str, Path]
) -> None:
    svc = open_memory().service
    svc.ingest(str(docs["falcon.md"]), "BRICK")
    svc.ingest(str(docs["garden.txt"]), "ROBIN")
    svc.record_interaction(
        "ROBIN",
        {"id": "i-1", "prompt": "When is the Falcon launch?", "reply": "In March.", "ts": 1.0},
    )
    wait_until(lambda: svc.stats().rows["interactions"] == 1, what="the interaction write")
    unfiltered = svc.search("Falcon launch date", 10)
    assert {h.proto for h in unfiltered.hits} == {"BRICK", "ROBIN"}
    robin = svc.search("Falcon launch date", 10, proto="ROBIN")
    assert robin.hits and {h.proto for h in robin.hits} == {"ROBIN"}
    assert robin.hits[0].origin == "conversation" and "In March." in robin.hits[0].text
    assert svc.search("Falcon launch date", 10, proto="BABS").hits == []


def test_every_format_is_chunked_by_its_structure(open_memory: OpenMemory, tmp_path: Path) -> None:
    svc = open_memory(chunk_chars=300).service
    files = {
        "items.json": json.dumps(
            {
                "shop": "Corner Books",
                "items": [{"sku": i, "title": f"Volume {i}"} for i in range(40)],
            }
        ),
        "people.csv": "name,city\n" + "".join(f"person{i},city{i}\n" for i in range(60)),
        "report.pdf": minimal_pdf("Quarterly revenue rose by nine percent.", "Costs fell."),
    }
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        assert svc.ingest(str(path), "BABS").status == "ingested"
    item = svc.search("Volume 37", 1).hits[0]
    assert item.name == "items.json" and item.heading == "$.items" and "$.items[" in item.text
    row = svc.search("person42 city42", 1).hits[0]
    assert row.name == "people.csv" and row.text.startswith("name,city\n")
    assert row.heading.startswith("rows ") and "person42" in row.text
    assert svc.search("revenue growth this quarter", 1).hits[0].name == "report.pdf"


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("photo.png", b"\x89PNG....", "unsupported_type"),
        ("empty.txt", b"", "empty"),
        ("blank.md", b"  \n\n ", "empty"),
        ("binary.txt", b"abc\x00def", "binary"),
        ("latin1.txt", "caf\xe9".encode("latin-1"), "not_utf8"),
        ("broken.pdf", b"%PDF-1.4\n%%EOF\n", "broken_pdf"),
    ],
)
def test_bad_files_get_typed_errors(
    open_memory: OpenMemory, tmp_path: Path, name: str, data: bytes, reason: str
) -> None:
    svc = open_memory().service
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DocumentError) as caught:
        svc.ingest(str(path), None)
    assert caught.value.detail["reason"] == reason and name in caught.value.message
    assert svc.stats().rows["documents"] == 0


def test_missing_relative_and_too_large_files(open_memory: OpenMemory, tmp_path: Path) -> None:
    svc = open_memory(max_document_mb=0.001).service
    with pytest.raises(DocumentError, match="no longer exists"):
        svc.ingest(str(tmp_path / "gone.md"), None)
    with pytest.raises(DocumentError, match="absolute path"):
        svc.ingest("notes.md", None)
    big = tmp_path / "big.txt"
    big.write_text("word " * 1000)
    with pytest.raises(DocumentError, match="over the"):
        svc.ingest(str(big), None)


def test_queued_ingest_reports_through_events(
    open_memory: OpenMemory, docs: dict[str, Path], tmp_path: Path
) -> None:
    memory = open_memory()
    svc = memory.service
    assert svc.ingest(str(docs["garden.txt"]), "ROBIN", wait=False).status == "queued"
    wait_until(lambda: any(p.done for p in memory.progress("memory_ingest")), what="ingest")
    assert svc.stats().rows["documents"] == 1
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00")
    assert svc.ingest(str(bad), None, wait=False).status == "queued"
    wait_until(lambda: any(e.kind == "backend_log" for e in memory.events), what="the warning")
    log = next(e for e in memory.events if e.kind == "backend_log")
    assert "bad.bin" in log.message and "not supported" in log.message  # type: ignore[union-attr]


def test_interactions_are_recorded_in_batches_and_searchable(open_memory: OpenMemory) -> None:
    memory = open_memory()
    svc = memory.service
    for i in range(40):
        svc.record_interaction(
            "BRICK",
            {
                "id": f"q{i}",
                "prompt": f"What is {i} squared?",
                "reply": f"{i * i}",
                "backend": "embedded",
                "model": "smollm2",
                "ts": time.time(),
                "usage": {"prompt_tokens": 5, "completion_tokens": 2},
                "timings": {"tokens_per_s": 50.0},
            },
        )
    svc.record_interaction(
        "ROBIN", {"id": "colour", "prompt": "My favourite colour is teal.", "reply": "Noted!"}
    )
    wait_until(lambda: svc.stats().rows["interactions"] == 41, what="41 interactions")
    records = [e for e in memory.events if e.kind == "memory_metrics" and e.op == "record"]  # type: ignore[union-attr]
    assert 1 <= len(records) < 41  # batched: far fewer commits than interactions
    hit = svc.search("which colour do I like best?", 1).hits[0]
    assert hit.origin == "conversation" and hit.proto == "ROBIN" and hit.id == "colour"
    assert hit.source == "conversation with ROBIN" and "teal" in hit.text


def test_disabled_memory_says_how_to_enable_it(tmp_path: Path) -> None:
    from backend.bus import EventBus
    from backend.memory.config import MemoryConfig
    from backend.memory.service import MemoryService

    svc = MemoryService(tmp_path / "memory", MemoryConfig(enabled=False), EventBus())
    svc.start()
    with pytest.raises(MemoryUnavailableError, match=r"enabled = false.*restart"):
        svc.search("anything", 3)
    assert svc.recall("BRICK", "hi", system="", n_ctx=2048, max_tokens=64) is None
    assert svc.stats().state == "disabled"
    svc.close()
    assert not (tmp_path / "memory").exists()


def test_interactions_missing_from_the_memory_are_recorded_from_the_histories(
    open_memory: OpenMemory, tmp_path: Path
) -> None:
    """Answers given while the memory was down (or queued when the backend was killed) are
    in the personas' journaled histories: opening records what the memory lacks, once."""
    from backend.bus import EventBus
    from backend.config import BackendConfig
    from backend.home import Home
    from backend.runtime import Runtime

    runtime = Runtime(
        Home(tmp_path / "home").ensure(), BackendConfig(autosave_interval_s=0), EventBus()
    )
    runtime.start()
    try:
        for i, (proto, prompt, reply) in enumerate(
            [("BABS", "Where did the Vikings land?", "Newfoundland, around 1000 AD."),
             ("ALFRED", "Summarise the meeting.", "We agreed to ship on Friday.")]
        ):  # fmt: skip
            interaction = {"id": f"h{i}", "ts": 1.0 + i, "prompt": prompt, "reply": reply,
                           "backend": "embedded", "model": "smollm2"}  # fmt: skip
            runtime.commit({"op": "record_interaction", "proto": proto, "interaction": interaction})
        root = tmp_path / "memory"
        svc = open_memory(root, runtime=runtime).service
        wait_until(lambda: svc.stats().rows["interactions"] == 2, what="the backfill")
        hit = svc.search("Norse explorers in North America", 1).hits[0]
        assert hit.id == "h0" and hit.proto == "BABS" and "Newfoundland" in hit.text
        svc.close()
        again = open_memory(root, runtime=runtime).service  # nothing is recorded twice
        time.sleep(1.0)
        assert again.stats().rows["interactions"] == 2
    finally:
        runtime.close(save=False)
