"""Fixtures for the integration tests: a backend shared by one module, and a spawner for
tests that kill and restart backends on one home."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backend.launcher import BackendProcess
from tests.conftest import running_backend

Spawn = Callable[[], BackendProcess]


@pytest.fixture(scope="module")
def shared_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendProcess]:
    """One running backend for a whole module (the fuzz and event tests only need it alive)."""
    with running_backend(tmp_path_factory.mktemp("shared") / "home") as proc:
        yield proc


@pytest.fixture
def spawn(home: Path) -> Iterator[Spawn]:
    """``spawn()`` starts a new backend on the test's home (after a kill, a restart); every
    process it started is killed at teardown."""
    started: list[BackendProcess] = []

    def start() -> BackendProcess:
        for proc in started:
            assert not proc.alive, "stop or kill the previous backend before spawning another"
        proc = BackendProcess(home)
        started.append(proc)
        proc.start()
        return proc

    yield start
    for proc in started:
        proc.kill()  # also closes the log of a process that already exited


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not report.failed or not hasattr(item, "funcargs"):
        return
    proc = item.funcargs.get("shared_backend")
    if isinstance(proc, BackendProcess):
        report.sections.append(("shared backend log", proc.log_tail(80)))
    if "spawn" in item.funcargs:
        log = Path(item.funcargs["home"]).resolve() / "backend.log"
        if log.exists():
            tail = log.read_text(errors="replace").splitlines()[-80:]
            report.sections.append(("backend log (all restarts)", "\n".join(tail)))
