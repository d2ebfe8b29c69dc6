"""`main.py sandbox run FILE` and `main.py sandbox status`, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.launcher import MAIN
from backend.sandbox import Runtime
from tests.sandbox.conftest import require


def sandbox_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(MAIN), "sandbox", *args],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "hello.py"
    path.write_text("import sys\nprint('hello from the sandbox')\nsys.exit(3)\n")
    return path


@pytest.mark.parametrize("name", ["bubblewrap", "runsc"])
def test_run_prints_the_result_and_exits_0_whatever_the_script_did(
    name: str, script: Path, runtimes: dict[str, Runtime]
) -> None:
    require(runtimes[name])
    done = sandbox_cli(
        "run", str(script), "--timeout", "20", "--memory", "128", "--disk", "8", "--runtime", name
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["runtime"] == name
    assert (result["exit_code"], result["stdout"]) == (3, "hello from the sandbox\n")
    assert result["limits"]["wall_s"] == 20 and result["limits"]["memory_mb"] == 128
    assert result["limits"]["disk_mb"] == 8 and result["disk_full"] is False
    assert set(result) >= {"stderr", "timed_out", "killed_reason", "duration_s"}


def test_run_uses_the_first_available_runtime(script: Path, runtimes: dict[str, Runtime]) -> None:
    require(runtimes["bubblewrap"])
    done = sandbox_cli("run", str(script), "--timeout", "1", "--cpu", "1")
    assert done.returncode == 0, done.stderr
    status = json.loads(sandbox_cli("status").stdout)
    assert json.loads(done.stdout)["runtime"] == status["runtime"]
    assert status["runtimes"][status["runtime"]]["enforcement"]["cpu_s"]


def test_killed_run_still_exits_0(tmp_path: Path, runtimes: dict[str, Runtime]) -> None:
    require(runtimes["bubblewrap"])
    loop = tmp_path / "loop.py"
    loop.write_text("while True:\n    pass\n")
    done = sandbox_cli("run", str(loop), "--timeout", "10", "--cpu", "1", "--runtime", "bubblewrap")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["exit_code"], result["killed_reason"]) == (None, "cpu_time")


def test_bad_usage_exits_2(tmp_path: Path, script: Path) -> None:
    assert sandbox_cli("run", str(tmp_path / "missing.py")).returncode == 2
    done = sandbox_cli("run", str(script), "--memory", "1")
    assert done.returncode == 2 and "memory_mb" in done.stderr
    assert sandbox_cli("run", str(script), "--runtime", "nsjail").returncode == 2
    assert sandbox_cli().returncode == 2


def test_no_sandbox_exits_4_with_the_packages_to_install(script: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # nothing to sandbox with on this PATH
    done = sandbox_cli("run", str(script), env=env)
    assert done.returncode == 4
    assert "apt-get install bubblewrap runsc" in done.stderr
    assert done.stdout == ""  # and nothing ran
    status = sandbox_cli("status", env=env)
    assert status.returncode == 4 and json.loads(status.stdout)["runtime"] is None


def test_help() -> None:
    for args in (["--help"], ["run", "--help"], ["status", "--help"]):
        done = sandbox_cli(*args)
        assert done.returncode == 0, done.stderr
    assert "apt-get install bubblewrap runsc" in sandbox_cli("--help").stdout
    assert "--runtime" in sandbox_cli("run", "--help").stdout
