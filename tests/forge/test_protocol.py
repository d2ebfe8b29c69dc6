"""The Tool Forge through a real backend subprocess over ZeroMQ, in its real sandbox (runsc or
bubblewrap, whichever the backend picks). BRICK talks through FakeOllama (a TEST DOUBLE for
an Ollama server) scripted to write a wrong tool first and a right one second."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.launcher import MAIN, BackendProcess
from backend.sandbox import Runtime
from shared_api.commands import (
    DescribeProto,
    ForgeTool,
    Invoke,
    ListTools,
    RemoveTool,
    RunTool,
    SaveImage,
    Status,
)
from shared_api.errors import RemoteError
from shared_api.events import Event, ForgeFinished
from shared_api.replies import (
    DoesNotUnderstand,
    ForgeAccepted,
    InvokeResult,
    ProtoDescription,
    ProtoUpdated,
    StatusReply,
    ToolList,
    ToolResult,
)
from shared_api.transport import Client
from tests.doubles.fake_ollama import GB, FakeOllama
from tests.forge.conftest import require
from tests.forge.scripts import RIGHT, WRONG


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama({"phi3:mini": 2 * GB}) as f:
        f.state.load_delay_s = 0.0
        yield f


@pytest.fixture
def backend(home: Path, fake: FakeOllama, runtimes: dict[str, Runtime]) -> Iterator[BackendProcess]:
    if runtimes["runsc"].available() is not None:
        require(runtimes["bubblewrap"])  # the backend needs one real sandbox
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[models]\nollama_host = "{fake.host}"\n\n[forge]\ncandidates = 1\nretry_candidates = 0\nprobes = false\n'
    )
    proc = BackendProcess(home)
    proc.start()
    yield proc
    proc.kill()


def forge(client: Client, **body: object) -> tuple[ForgeAccepted, list[Event], ForgeFinished]:
    client.wait_event(lambda e: e.kind == "heartbeat")
    accepted = client.request(ForgeTool.model_validate(body))
    assert isinstance(accepted, ForgeAccepted), accepted
    seen: list[Event] = []
    while True:
        event = client.wait_event(
            lambda e: getattr(e, "request_id", None) == accepted.request_id, timeout=60
        )
        seen.append(event)
        if isinstance(event, ForgeFinished):
            return accepted, seen, event


def test_forge_call_save_restart_remove(
    home: Path, fake: FakeOllama, backend: BackendProcess
) -> None:
    fake.script(WRONG, RIGHT)
    with backend.client(events=True) as client:
        status = client.request(Status())
        assert isinstance(status, StatusReply) and status.services["forge"]["autonomy"] is False
        accepted, events, finished = forge(
            client, proto="ROBIN", name="add_numbers", description="add two numbers",
            examples=["add_numbers(a=1, b=2) == 3"],
        )  # fmt: skip
        assert accepted.author == "BRICK" and accepted.max_attempts == 3
        assert finished.outcome == "attached", finished
        phases = [e.phase for e in events if e.kind == "forge_progress"]  # type: ignore[union-attr]
        assert phases == ["writing", "testing", "failed", "writing", "testing", "passed"]
        # BRICK's model was asked twice, the second time with the failure
        chats = fake.chat_requests()
        assert [c["model"] for c in chats] == ["phi3:mini", "phi3:mini"]
        assert "it returned -1" in chats[1]["messages"][-1]["content"]

        result = client.request(RunTool(proto="ROBIN", name="add_numbers", args={"a": 2, "b": 3}))
        assert isinstance(result, ToolResult) and result.result == 5
        sandbox = client.request(Status()).services["forge"]["sandbox"]  # type: ignore[union-attr]
        assert result.runtime == sandbox["runtime"] in ("runsc", "bubblewrap", "docker-gvisor")
        invoked = client.request(Invoke(proto="ROBIN", method="add_numbers", args={"a": 1, "b": 1}))
        assert isinstance(invoked, InvokeResult) and invoked.result == 2
        described = client.request(DescribeProto(proto="ROBIN"))
        assert isinstance(described, ProtoDescription)
        assert [t.name for t in described.tools] == ["add_numbers"]
        assert described.tools[0].attempts[0].passed is False
        assert client.request(SaveImage()).kind == "image_saved"
    assert backend.stop() == 0

    restarted = BackendProcess(home)
    restarted.start()
    try:
        with restarted.client() as client:
            again = client.request(
                RunTool(proto="ROBIN", name="add_numbers", args={"a": 4, "b": 4})
            )
            assert isinstance(again, ToolResult) and again.result == 8
            with pytest.raises(RemoteError) as bad:
                client.request(RunTool(proto="ROBIN", name="add_numbers", args={"a": [1], "b": 2}))
            assert bad.value.code == "method_failed"
            assert "TypeError" in (bad.value.reply.traceback or "")
            assert isinstance(
                client.request(RemoveTool(proto="ROBIN", name="add_numbers")), ProtoUpdated
            )
            tools = client.request(ListTools())
            assert isinstance(tools, ToolList) and tools.tools == []
            with pytest.raises(RemoteError) as missing:
                client.request(RunTool(proto="ROBIN", name="add_numbers"))
            assert missing.value.code == "not_found" and "forge one" in missing.value.message
    finally:
        restarted.stop()


def test_unknown_message_proposes_a_forge(backend: BackendProcess) -> None:
    with backend.client() as client:
        reply = client.request(Invoke(proto="BABS", method="word_count", args={"text": "a b"}))
        assert isinstance(reply, DoesNotUnderstand)
        assert reply.proposal is not None and reply.proposal["proto"] == "BABS"
        assert ForgeTool.model_validate(reply.proposal).name == "word_count"  # sendable as is


def test_cli_streams_the_attempts(home: Path, fake: FakeOllama, backend: BackendProcess) -> None:
    fake.script(RIGHT)
    body = json.dumps(
        {"proto": "BRICK", "name": "add_numbers", "description": "add",
         "examples": ["add_numbers(a=2, b=2) == 4"]}
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(MAIN), "call", "--home", str(home), "--timeout", "60", "forge_tool", body],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "[1/3] writing" in done.stderr and "[1/3] passed" in done.stderr
    finished = json.loads(done.stdout)
    assert finished["kind"] == "forge_finished" and finished["outcome"] == "attached"
    fake.script("no code", "no code", "no code")
    failed = subprocess.run(
        [sys.executable, str(MAIN), "call", "--home", str(home), "--timeout", "60", "forge_tool",
         json.dumps({"proto": "BRICK", "name": "other", "description": "x", "max_attempts": 1})],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert failed.returncode == 1 and json.loads(failed.stdout)["outcome"] == "gave_up"
    assert "SyntaxError" in failed.stderr  # the feedback BRICK was given
