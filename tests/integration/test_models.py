"""Personas answering through a real backend subprocess: the embedded llama.cpp model by
default, and Ollama's API through FakeOllama (a TEST DOUBLE; no Ollama server runs here)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.launcher import MAIN, BackendProcess
from shared_api.commands import AskPersona, Cancel, ModelStatus
from shared_api.events import Event, PersonaReply
from shared_api.replies import AskAccepted, InvokeResult, ModelStatusReply
from shared_api.transport import Client
from tests.doubles.fake_ollama import GB, FakeOllama


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(home: Path, ollama_host: str) -> BackendProcess:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f'[models]\nollama_host = "{ollama_host}"\nmax_tokens = 24\n')
    proc = BackendProcess(home)
    proc.start()
    return proc


@pytest.fixture
def embedded_backend(home: Path) -> Iterator[BackendProcess]:
    proc = start(home, f"http://127.0.0.1:{free_port()}")  # nothing listens: embedded
    yield proc
    proc.stop()


def ask(
    client: Client, proto: str, text: str, **kw: object
) -> tuple[AskAccepted, list[Event], PersonaReply]:
    client.wait_event(lambda e: e.kind == "heartbeat")
    accepted = client.request(AskPersona(proto=proto, text=text, **kw))  # type: ignore[arg-type]
    assert isinstance(accepted, AskAccepted)
    seen: list[Event] = []
    while True:
        event = client.wait_event(
            lambda e: (
                getattr(e, "request_id", None) == accepted.request_id or e.kind == "persona_status"
            ),
            timeout=60,
        )
        seen.append(event)
        if isinstance(event, PersonaReply):
            return accepted, seen, event


def test_each_persona_streams_a_reply_from_the_embedded_model(
    embedded_backend: BackendProcess,
) -> None:
    with embedded_backend.client(events=True) as client:
        for proto in ["BRICK", "ROBIN", "BABS", "ALFRED"]:
            accepted, events, reply = ask(client, proto, "Name one colour.")
            assert accepted.backend == "embedded"
            tokens = [e for e in events if e.kind == "token"]
            assert tokens and "".join(t.text for t in tokens) == reply.text  # type: ignore[union-attr]
            assert reply.error is None and reply.text.strip()
            assert reply.stop_reason in ("stop", "length")
            assert reply.usage.completion_tokens == len(tokens) and reply.usage.prompt_tokens > 0
            statuses = [e.status for e in events if e.kind == "persona_status" and e.proto == proto]  # type: ignore[union-attr]
            assert "streaming" in statuses and statuses[-1] == "idle"
        status = client.request(ModelStatus())
        assert isinstance(status, ModelStatusReply)
        assert status.resident == "embedded:smollm2-135m-instruct"
        assert "unreachable" in status.selections["BRICK"].reason
        # the choice and the reason are in the persona's state, and the interaction in history
        state = client.call("get_state", {"proto": "BRICK", "path": "llm"})
        assert state.value["backend"] == "embedded"  # type: ignore[union-attr]
        described = client.call("describe_proto", {"proto": "ROBIN"})
        assert described.description["interactions"] == 1  # type: ignore[union-attr]


def test_cancel_stops_a_streaming_answer(embedded_backend: BackendProcess) -> None:
    with embedded_backend.client(events=True) as client:
        client.wait_event(lambda e: e.kind == "heartbeat")
        accepted = client.request(
            AskPersona(proto="BRICK", text="Tell me a very long story.", max_tokens=400)
        )
        assert isinstance(accepted, AskAccepted)
        client.wait_event(
            lambda e: e.kind == "token" and e.request_id == accepted.request_id, timeout=60
        )  # type: ignore[union-attr]
        assert client.request(Cancel(request_id=accepted.request_id)).cancelled  # type: ignore[union-attr]
        reply = client.wait_event(lambda e: e.kind == "persona_reply", timeout=60)
        assert reply.stop_reason == "cancelled"  # type: ignore[union-attr]
        assert reply.usage.completion_tokens < 400  # type: ignore[union-attr]


def test_invoke_llm_from_a_live_method_records_history(embedded_backend: BackendProcess) -> None:
    src = "def think(self, q):\n    return self.invoke_llm(q, max_tokens=8)\n"
    with embedded_backend.client() as client:
        client.call("define_method", {"proto": "BABS", "name": "think", "source": src})
        result = client.call(
            "invoke", {"proto": "BABS", "method": "think", "args": {"q": "Say hi."}}
        )
        assert isinstance(result, InvokeResult) and isinstance(result.result, str) and result.result
        described = client.call("describe_proto", {"proto": "BABS"})
        assert described.description["interactions"] == 1  # type: ignore[union-attr]


def test_interactions_survive_kill_9(embedded_backend: BackendProcess) -> None:
    with embedded_backend.client(events=True) as client:
        _, _, _reply = ask(client, "ALFRED", "Say yes.")
    embedded_backend.kill()
    again = BackendProcess(embedded_backend.home)
    again.start()
    try:
        with again.client() as client:
            assert (
                client.call("describe_proto", {"proto": "ALFRED"}).description["interactions"] == 1
            )  # type: ignore[union-attr]
    finally:
        again.stop()


def test_cli_ask_persona_streams(embedded_backend: BackendProcess) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(MAIN),
            "call",
            "--home",
            str(embedded_backend.home),
            "ask_persona",
            '{"proto": "ROBIN", "text": "Say hello."}',
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["kind"] == "persona_reply" and reply["text"]
    assert reply["text"].strip() in done.stderr  # streamed to the terminal as it came


def test_personas_use_ollama_models_when_installed(home: Path) -> None:
    with FakeOllama({"phi3:mini": 2 * GB, "gemma2:9b": 30 * GB}) as fake:
        proc = start(home, fake.host)
        try:
            with proc.client(events=True) as client:
                status = client.request(ModelStatus())
                assert isinstance(status, ModelStatusReply)
                assert status.selections["BRICK"].backend == "ollama"
                assert status.selections["BRICK"].model == "phi3:mini"
                robin = status.selections["ROBIN"]
                assert robin.backend == "embedded" and "ollama pull llama3.1:8b" in robin.reason
                accepted, events, reply = ask(client, "BRICK", "hello")
                assert accepted.backend == "ollama"
                assert reply.text == "the quick brown fox jumps " and reply.model == "phi3:mini"
                assert [r["keep_alive"] for r in fake.chat_requests()] == [0]
                (metrics,) = [e for e in events if e.kind == "model_metrics"]
                assert metrics.resident == "ollama:phi3:mini"  # type: ignore[union-attr]
                assert metrics.queue_wait_ms >= 0 and metrics.tokens_per_s > 0  # type: ignore[union-attr]
                # ALFRED's gemma2:9b is installed but over the 8 GB budget: a typed error
                _, _, too_big = ask(client, "ALFRED", "hello")
                assert too_big.error is not None and too_big.error.code == "model_too_large"
                models = client.call("list_models", {})
                names = {(m.backend, m.name) for m in models.models}  # type: ignore[union-attr]
                assert ("ollama", "phi3:mini") in names and (
                    "embedded",
                    "smollm2-135m-instruct",
                ) in names
        finally:
            proc.stop()
