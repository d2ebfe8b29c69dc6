"""Model roles through a real backend subprocess: which model serves which role of each
persona, and why, in ``model_status``, ``status`` and the Inspector's ``describe_proto``.
(The suite's backends run the tiny model: tests/conftest.py sets ``$ENTROPIC_MODEL``.)"""

from __future__ import annotations

import socket
from pathlib import Path

from backend.launcher import BackendProcess
from shared_api.commands import ModelStatus
from shared_api.replies import ModelStatusReply, ProtoDescription, StatusReply

TINY = "smollm2-135m-instruct"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_status_says_which_model_serves_which_role_and_why(home: Path) -> None:
    home.mkdir(parents=True)
    (home / "config.toml").write_text(
        f'[models]\nollama_host = "http://127.0.0.1:{free_port()}"\n'  # nobody listens
        '[models.roles]\ncode = "ollama:coder:7b"\n'
        '[models.personas.ALFRED]\njudge = "smollm2-135m"\n'
        "[memory]\nenabled = false\n"
    )
    proc = BackendProcess(home)
    proc.start()
    try:
        with proc.client() as client:
            status = client.request(ModelStatus())
            assert isinstance(status, ModelStatusReply)
            assert status.default_model["model"] == TINY
            assert "$ENTROPIC_MODEL" in status.default_model["reason"]
            assert set(status.roles) >= {"BRICK", "ROBIN", "BABS", "ALFRED"}
            brick = status.roles["BRICK"]
            assert set(brick) == {"chat", "code", "judge"}
            assert (brick["chat"].backend, brick["chat"].model) == ("embedded", TINY)
            assert "Ollama unreachable" in brick["chat"].reason
            assert (brick["code"].backend, brick["code"].model) == ("ollama", "coder:7b")
            assert brick["code"].reason == "code: [models.roles] code = ollama:coder:7b"
            alfred = status.roles["ALFRED"]["judge"]
            assert alfred.model == TINY and "[models.personas.ALFRED] judge" in alfred.reason
            assert status.selections["BRICK"] == brick["chat"]  # the persona's chat model
            described = client.call("describe_proto", {"proto": "ALFRED"})
            assert isinstance(described, ProtoDescription)
            assert described.models["judge"] == alfred and set(described.models) == set(brick)
            overview = client.call("status", {})
            assert isinstance(overview, StatusReply)
            models = overview.services["models"]
            assert models["roles"]["BRICK"]["code"]["model"] == "coder:7b"  # type: ignore[index, call-overload]
            assert models["default"]["model"] == TINY  # type: ignore[index, call-overload]
    finally:
        proc.stop()
