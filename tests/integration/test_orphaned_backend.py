"""A backend started by a workbench that died (kill -9) saves and exits by itself once no
workbench has been attached for ``[backend] orphan_exit_s``; ``status`` says who started it
and whether it will stop by itself. A real backend subprocess, over real ZeroMQ."""

from __future__ import annotations

import time
from pathlib import Path

from backend.launcher import BackendProcess


def test_an_orphaned_backend_saves_and_exits(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("[backend]\norphan_exit_s = 3\n")
    proc = BackendProcess(home, started_by="workbench pid 999999")
    proc.start()
    try:
        with proc.client() as client:
            status = client.call("status", {})
            lifecycle = status.services["lifecycle"]
            assert lifecycle["started_by"] == "workbench pid 999999"
            assert lifecycle["stops_when_idle"] is True and lifecycle["orphan_exit_s"] == 3
            client.call("ping", {"client": "workbench"})  # attached: the count restarts
        assert proc.proc is not None
        deadline = time.monotonic() + 60
        while proc.proc.poll() is None:
            assert time.monotonic() < deadline, "the orphaned backend kept running"
            time.sleep(0.2)
        assert proc.stop() == 0  # it had exited: this only collects it
        log = proc.log_tail(40)
        assert "no workbench attached" in log and "backend stopped" in log
        assert not (home / "connection.json").exists()
    finally:
        if proc.alive:
            proc.kill()


def test_a_backend_from_the_command_line_runs_on(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("[backend]\norphan_exit_s = 1\n")
    proc = BackendProcess(home)
    proc.start()
    try:
        time.sleep(3)
        assert proc.alive
        with proc.client() as client:
            lifecycle = client.call("status", {}).services["lifecycle"]
        assert lifecycle["started_by"] == "command line" and not lifecycle["stops_when_idle"]
    finally:
        proc.stop()
