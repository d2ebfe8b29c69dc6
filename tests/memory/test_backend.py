"""The memory in a real backend subprocess with the embedded model: a document ingested for
BRICK informs ROBIN's answer, and the persona_reply event cites it; the CLI; and a memory
that cannot open leaves the backend running with typed errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.launcher import MAIN, BackendProcess
from shared_api.commands import AskDocument, AskPersona, IngestDocument, MemoryStats, SearchMemory
from shared_api.errors import ErrorCode, ErrorReply
from shared_api.events import PersonaReply
from shared_api.replies import AskAccepted, DocumentIngested, MemoryHits, MemoryStatsReply
from shared_api.transport import Client
from tests.conftest import running_backend
from tests.integration.test_models import free_port
from tests.memory.conftest import FALCON_MD, GARDEN_TXT


def configure(home: Path, extra: str = "") -> None:
    home.mkdir(parents=True, exist_ok=True)
    unreachable = f"http://127.0.0.1:{free_port()}"  # nothing listens: the embedded model
    (home / "config.toml").write_text(
        f'[models]\nollama_host = "{unreachable}"\nmax_tokens = 24\n{extra}'
    )


@pytest.fixture(scope="module")
def rag_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendProcess]:
    home = tmp_path_factory.mktemp("rag") / "home"
    configure(home)
    with running_backend(home) as proc:
        yield proc


def ask(client: Client, proto: str, text: str) -> PersonaReply:
    client.wait_event(lambda e: e.kind == "heartbeat")
    accepted = client.request(AskPersona(proto=proto, text=text))
    assert isinstance(accepted, AskAccepted)
    reply = client.wait_event(
        lambda e: e.kind == "persona_reply" and e.request_id == accepted.request_id,  # type: ignore[union-attr]
        timeout=120,
    )
    assert isinstance(reply, PersonaReply)
    return reply


def test_a_document_read_by_brick_informs_robins_answer_with_citations(
    rag_backend: BackendProcess, tmp_path: Path
) -> None:
    falcon = tmp_path / "falcon.md"
    falcon.write_text(FALCON_MD)
    with rag_backend.client(events=True, timeout=60) as client:
        ingested = client.request(IngestDocument(path=str(falcon), proto="BRICK"))
        assert isinstance(ingested, DocumentIngested) and ingested.status == "ingested"
        reply = ask(client, "ROBIN", "When is the Falcon launch date?")
        assert reply.error is None and reply.text.strip() and reply.backend == "embedded"
        assert reply.citations, "no memories were retrieved into the prompt"
        first = reply.citations[0]
        assert first.n == 1 and first.origin == "document" and first.source == str(falcon)
        assert first.heading == "Project Falcon > Deadlines" and "14th of March" in first.excerpt
        assert first.proto == "BRICK" and first.score > 0.5
        # the exchange itself is remembered, under ROBIN
        stats = client.request(MemoryStats())
        assert isinstance(stats, MemoryStatsReply) and stats.state == "ready"
        hits = client.request(SearchMemory(text="Falcon launch date", k=5, proto="ROBIN"))
        assert isinstance(hits, MemoryHits)
        for _ in range(100):
            if hits.hits:
                break
            client.wait_event(lambda e: e.kind == "memory_metrics", timeout=10)
            hits = client.request(SearchMemory(text="Falcon launch date", k=5, proto="ROBIN"))
        assert isinstance(hits, MemoryHits) and hits.hits[0].origin == "conversation"
        assert hits.hits[0].id == reply.request_id and reply.text.strip() in hits.hits[0].text


def test_a_dropped_document_is_read_remembered_and_asked_by_the_backend(
    rag_backend: BackendProcess, tmp_path: Path
) -> None:
    lighthouse = tmp_path / "lighthouse.txt"  # its own content: the backend is shared
    text = "The lighthouse on Skerry Rock was lit by paraffin until 1962.\n" * 8
    lighthouse.write_text(text)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\x00\x01")
    with rag_backend.client(events=True, timeout=60) as client:
        client.wait_event(lambda e: e.kind == "heartbeat")
        rejected = client.call_raw("ask_document", AskDocument(proto="ROBIN", path=str(blob)))
        assert isinstance(rejected, ErrorReply) and rejected.code == "document_rejected"
        assert ".txt" in rejected.message  # the drop's toast names what can be dropped
        accepted = client.request(
            AskDocument(proto="ROBIN", path=str(lighthouse), budget_chars=300)
        )
        assert isinstance(accepted, AskAccepted)
        assert accepted.asked == f"Document: lighthouse.txt ({len(text)} chars)"
        remembered = client.wait_event(
            lambda e: e.kind == "memory_metrics" and e.op == "ingest",  # type: ignore[union-attr]
            timeout=120,
        )
        assert remembered.detail["name"] == "lighthouse.txt"  # type: ignore[union-attr]
        reply = client.wait_event(
            lambda e: e.kind == "persona_reply" and e.request_id == accepted.request_id,  # type: ignore[union-attr]
            timeout=120,
        )
        assert isinstance(reply, PersonaReply) and reply.error is None and reply.text.strip()
    # the CLI does what a drop does; a relative path is taken from its directory
    rc, body = call(
        rag_backend.home, "ask_document", '{"proto": "ROBIN", "path": "blob.bin"}', tmp_path
    )
    assert rc == 1 and body["code"] == "document_rejected" and "blob.bin" in str(body["message"])


def call(
    home: Path, kind: str, body: str, cwd: Path | None = None
) -> tuple[int, dict[str, object]]:
    argv = [sys.executable, str(MAIN), "call", "--home", str(home), kind, body]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd)
    return done.returncode, json.loads(done.stdout)


def test_the_cli_ingests_relative_paths_and_searches(
    rag_backend: BackendProcess, tmp_path: Path
) -> None:
    (tmp_path / "garden.txt").write_text(GARDEN_TXT)
    home = rag_backend.home
    rc, reply = call(home, "ingest_document", '{"path": "garden.txt", "proto": "ROBIN"}', tmp_path)
    assert (
        rc == 0 and reply["status"] == "ingested" and reply["path"] == str(tmp_path / "garden.txt")
    )
    rc, reply = call(home, "search_memory", '{"text": "how often to water tomatoes", "k": 5}')
    assert rc == 0 and reply["kind"] == "memory_hits"
    top = reply["hits"][0]  # type: ignore[index]
    assert top["name"] == "garden.txt" and "Water the roots deeply" in top["text"]
    rc, reply = call(home, "search_memory", '{"text": "x", "k": 0}')
    assert rc == 1 and reply["code"] == "invalid_body"
    rc, reply = call(home, "ingest_document", '{"path": "/no/such/file.md"}')
    assert (
        rc == 1 and reply["code"] == "document_rejected" and "no longer exists" in reply["message"]
    )
    helped = subprocess.run(
        [sys.executable, str(MAIN), "call", "--help"], capture_output=True, text=True, timeout=60
    )
    for kind in ("search_memory", "ingest_document", "memory_stats"):
        assert kind in helped.stdout


def test_a_memory_that_cannot_open_leaves_the_backend_running(home: Path, tmp_path: Path) -> None:
    configure(home, '[memory]\nembedder = "ollama:nomic-embed-text"\n')
    with running_backend(home) as proc, proc.client(events=True, timeout=60) as client:
        reply = ask(client, "BRICK", "Name one colour.")  # answers without memories
        assert reply.error is None and reply.citations == []
        # a drop is answered all the same; the memory's refusal is a warning the UI toasts
        note = tmp_path / "note.txt"
        note.write_text("Teal is a colour between blue and green.\n")
        accepted = client.request(AskDocument(proto="BRICK", path=str(note)))
        assert isinstance(accepted, AskAccepted)
        warning = client.wait_event(
            lambda e: e.kind == "backend_log" and not e.message.startswith("Memory: "),  # type: ignore[union-attr]
            timeout=60,
        )  # (the memory's own "Memory: ..." warning at open is not this one)
        assert "unreachable" in warning.message  # type: ignore[union-attr]
        answered = client.wait_event(
            lambda e: e.kind == "persona_reply" and e.request_id == accepted.request_id,  # type: ignore[union-attr]
            timeout=120,
        )
        assert isinstance(answered, PersonaReply) and answered.error is None
        failed = client.call_raw("search_memory", {"text": "anything"})
        assert isinstance(failed, ErrorReply) and failed.code == ErrorCode.MEMORY_UNAVAILABLE
        assert "unreachable" in failed.message and 'embedder = "minilm"' in failed.message
        stats = client.request(MemoryStats())
        assert isinstance(stats, MemoryStatsReply) and stats.state == "failed"
        assert client.call("status", {}).services["memory"]["state"] == "failed"  # type: ignore[union-attr]
