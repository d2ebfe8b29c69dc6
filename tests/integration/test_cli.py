"""The scriptable console: `main.py call` against a real backend subprocess."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from backend.launcher import MAIN, BackendProcess


def call(home: Path, kind: str, body: str | None = None) -> tuple[int, dict[str, object] | str]:
    argv = [sys.executable, str(MAIN), "call", "--home", str(home), kind]
    if body is not None:
        argv.append(body)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    try:
        return done.returncode, json.loads(done.stdout)
    except json.JSONDecodeError:
        return done.returncode, done.stderr


def test_connection_file_is_private(backend: BackendProcess) -> None:
    info = backend.home / "connection.json"
    assert stat.S_IMODE(info.stat().st_mode) == 0o600
    assert stat.S_IMODE((backend.home / "keys" / "image.key").stat().st_mode) == 0o600
    data = json.loads(info.read_text())
    run = backend.home / "run"
    assert data["request_endpoint"] == f"ipc://{run / 'requests.sock'}"  # private sockets
    assert data["event_endpoint"] == f"ipc://{run / 'events.sock'}"
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    assert len(bytes.fromhex(data["key"])) == 32


def test_call_set_get_invoke(backend: BackendProcess) -> None:
    home = backend.home
    assert call(home, "ping") == (0, {"kind": "pong", "protocol": "1.0", "pid": backend.proc.pid})
    rc, reply = call(home, "set_state", '{"proto": "BRICK", "path": "mood.level", "value": 3}')
    assert rc == 0 and reply["kind"] == "proto_updated"
    rc, reply = call(home, "get_state", '{"proto": "BRICK", "path": "mood"}')
    assert (rc, reply["value"]) == (0, {"level": 3})
    src = "def greet(self, who):\n    return 'hello ' + who\n"
    rc, _ = call(
        home, "define_method", json.dumps({"proto": "BRICK", "name": "greet", "source": src})
    )
    assert rc == 0
    rc, reply = call(
        home, "invoke", '{"proto": "BRICK", "method": "greet", "args": {"who": "ROBIN"}}'
    )
    assert (rc, reply["result"]) == (0, "hello ROBIN")


def test_call_errors_exit_nonzero(backend: BackendProcess) -> None:
    home = backend.home
    rc, reply = call(home, "set_state", '{"proto": "BRICK"}')
    assert rc == 1 and reply["code"] == "invalid_body"
    rc, reply = call(home, "no_such_command")
    assert rc == 1 and reply["code"] == "unknown_kind"
    rc, reply = call(home, "get_state", '{"proto": "NOBODY"}')
    assert rc == 1 and reply["code"] == "not_found"
    rc, err = call(home, "get_state", "{not json")
    assert rc == 2 and "not valid JSON" in err


def test_call_without_backend_says_how_to_start(tmp_path: Path) -> None:
    rc, err = call(tmp_path / "nohome", "ping")
    assert rc == 3
    assert "main.py backend --home" in err


def test_every_subcommand_has_help() -> None:
    for argv in ([], ["backend"], ["call"]):
        done = subprocess.run(
            [sys.executable, str(MAIN), *argv, "--help"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert "--home" in done.stdout


def test_remove_a_clone_but_never_a_codex_persona(backend: BackendProcess) -> None:
    home = backend.home
    assert call(home, "clone_proto", '{"proto": "ROBIN", "new_name": "ROBIN-2"}')[0] == 0
    rc, reply = call(home, "remove_proto", '{"proto": "ROBIN"}')
    assert rc == 1 and reply["code"] == "invalid_value" and "clones" in reply["message"]
    rc, reply = call(home, "remove_proto", '{"proto": "ROBIN-2"}')
    assert (rc, reply["change"]) == (0, "remove")
    backend.kill()  # journaled: the removal survives a crash
    again = BackendProcess(home)
    again.start()
    try:
        rc, reply = call(home, "list_protos")
        assert sorted(p["name"] for p in reply["protos"]) == ["ALFRED", "BABS", "BRICK", "ROBIN"]
    finally:
        again.stop()


def test_unusable_document_paths_are_typed_one_line_errors(
    backend: BackendProcess, tmp_path: Path
) -> None:
    """A NUL byte or a symlink loop in an ingest_document path: a typed error with a
    one-line reason, from the backend and the CLI alike, never a traceback."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    for path, reason in ((str(tmp_path / "x\x00y.md"), "NUL byte"), (str(tmp_path / "a"), "loop")):
        argv = [sys.executable, str(MAIN), "call", "--home", str(backend.home)]
        argv += ["ingest_document", json.dumps({"path": path})]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done
        assert "Traceback" not in done.stdout + done.stderr
        reply = json.loads(done.stdout)
        assert reply["code"] == "document_rejected" and reason in reply["message"], reply
        assert "\n" not in reply["message"] and reply["traceback"] is None


def test_a_stopped_backend_leaves_no_socket_files(tmp_path: Path) -> None:
    home = tmp_path / "home"
    backend = BackendProcess(home)
    backend.start()
    try:
        run = home / "run"
        assert {p.name for p in run.glob("*.sock")} == {"requests.sock", "events.sock"}
    finally:
        assert backend.stop() == 0
    assert list(run.glob("*.sock")) == [], "a graceful stop unlinks its ipc sockets"
