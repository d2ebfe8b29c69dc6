"""Shared fixtures: a real backend subprocess per test that asks for one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from backend.launcher import BackendProcess

# The real servers (PostgreSQL, S3, an OpenAI-compatible one), one of each per session.
pytest_plugins = ["tests.servers"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


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
