"""Shared fixtures: a real backend subprocess per test that asks for one.

The suite spawns many backends: they talk through SmolLM2-135M ("tiny") unless a test says
otherwise, so no test loads the 1.1 GB default model by accident. The few ``slow`` tests that
need the capable model ask for it with the ``capable_model`` fixture."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest

from backend.launcher import BackendProcess
from backend.llm.catalog import DEFAULT_MODEL, MODEL_ENV

os.environ[MODEL_ENV] = "tiny"  # inherited by every backend the tests start


@pytest.fixture
def capable_model(monkeypatch: pytest.MonkeyPatch) -> str:
    """Backends started by this test use the capable default model (it must be fetched:
    `make test` does, else this fails with the command that fetches it)."""
    from backend.llm.catalog import entry
    from backend.llm.fetch import is_ready

    model = entry(DEFAULT_MODEL)
    if not is_ready(model):
        pytest.fail(f"{model.name} is not in {model.path()}: run `main.py models fetch`.")
    monkeypatch.setenv(MODEL_ENV, DEFAULT_MODEL)
    return DEFAULT_MODEL

# The real servers (PostgreSQL, S3, an OpenAI-compatible one), one of each per session.
pytest_plugins = ["tests.servers"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


#: Tests skipped in this run, and why (printed in a banner at the end).
_NOT_RUN: dict[str, str] = {}


def cannot_run(why: str, *, machine_can_not: bool = False) -> NoReturn:
    """Skip the current test loudly. Under ``ENTROPIC_REQUIRE_ALL=1`` (CI) fail instead,
    unless ``machine_can_not``: the machine itself cannot run it (e.g. another CPU
    architecture), which no installation fixes; that is still reported at the end."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
    _NOT_RUN[test] = why
    if os.environ.get("ENTROPIC_REQUIRE_ALL") == "1" and not machine_can_not:
        pytest.fail(f"{why} (ENTROPIC_REQUIRE_ALL=1: this must run here)", pytrace=False)
    pytest.skip(f"NOT TESTED: {why}")


def require_root(what: str) -> None:
    """Tests that switch to another uid need root (CI runs as root)."""
    if os.geteuid() != 0:
        cannot_run(f"{what} needs root to switch to another uid")


def require_cgroups() -> None:
    """Tests of the sandbox's memory/pids cgroups need root and a cgroup hierarchy (CI has
    both: under ``ENTROPIC_REQUIRE_ALL=1`` their absence fails)."""
    from backend.sandbox import cgroups

    if os.geteuid() != 0:
        cannot_run("creating cgroups needs root")
    if cgroups._layout() is None:
        cannot_run("no memory and pids cgroup hierarchy is mounted")


def require_x86_64() -> None:
    """Tests that name x86-64 syscall numbers: no installation makes another CPU run them."""
    machine = os.uname().machine
    if machine != "x86_64":
        cannot_run(f"this is {machine}: the syscall numbers are x86-64's", machine_can_not=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _NOT_RUN:
        terminalreporter.section("TESTS NOT RUN ON THIS MACHINE", sep="!", red=True, bold=True)
        for test, why in sorted(_NOT_RUN.items()):
            terminalreporter.line(f"{test}: {why}")


@contextmanager
def running_backend(home: Path) -> Iterator[BackendProcess]:
    """A ``main.py backend`` subprocess for ``home``, stopped (gracefully) afterwards."""
    proc = BackendProcess(home)
    proc.start()
    try:
        yield proc
    finally:
        if proc.alive:
            proc.stop()


@pytest.fixture
def backend(home: Path) -> Iterator[BackendProcess]:
    """A running backend for a fresh home; its log is printed if the test fails."""
    with running_backend(home) as proc:
        yield proc


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    proc = item.funcargs.get("backend") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(proc, BackendProcess):
        report.sections.append(("backend log", proc.log_tail(80)))
