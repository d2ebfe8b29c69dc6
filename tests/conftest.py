"""Shared fixtures: a real backend subprocess per test that asks for one.

The suite spawns many backends: they talk through SmolLM2-135M ("tiny") unless a test says
otherwise, so no test loads the 1.1 GB default model by accident. The few ``slow`` tests that
need the capable model ask for it with the ``capable_model`` fixture (or ``capable_env`` for
a module-scoped backend), and share its set-ups from here."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

from backend.launcher import BackendProcess
from backend.llm.catalog import DEFAULT_MODEL, MODEL_ENV, entry

if TYPE_CHECKING:
    from backend.config import ForgeConfig
    from backend.forge import ToolForge
    from backend.runtime import Runtime
    from backend.sandbox import SecureCodeExecutor
    from shared_api.replies import DialogueStatusReply
    from shared_api.transport import Client

os.environ[MODEL_ENV] = "tiny"  # inherited by every backend the tests start


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


# -- the capable model --------------------------------------------------------------------
#: The capable default model (issue 12), for the few ``slow`` tests that judge what it writes.
CAPABLE = entry(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def capable_model_path() -> Path:
    """The capable model's file, in place and verified. Absent, the test is skipped loudly,
    and fails under ``ENTROPIC_REQUIRE_ALL=1`` (`make test` fetches the model first)."""
    from backend.llm.fetch import is_ready

    if not is_ready(CAPABLE):
        cannot_run(f"{CAPABLE.name} is not in {CAPABLE.path()}: run `main.py models fetch`")
    return CAPABLE.path()


@pytest.fixture
def capable_model(capable_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The capable model's file; this test's model selection, and the backends it starts,
    use it (the suite's ``$ENTROPIC_MODEL=tiny`` would beat a config.toml's default)."""
    monkeypatch.setenv(MODEL_ENV, DEFAULT_MODEL)
    return capable_model_path


@contextmanager
def capable_env() -> Iterator[None]:
    """``capable_model``'s setting for a backend a module-scoped fixture starts."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MODEL_ENV, DEFAULT_MODEL)
        yield


def capable_models_toml(model: Path) -> str:
    """``[models]`` pointing the embedded backend at the capable model (pinned)."""
    return (
        f'[models]\nbackend = "embedded"\nembedded_model = "{model}"\n'
        f'embedded_sha256 = "{CAPABLE.sha256}"\n'
    )


@contextmanager
def capable_forge(
    root: Path, model: Path, executor: SecureCodeExecutor, config: ForgeConfig
) -> Iterator[tuple[Runtime, ToolForge]]:
    """An in-process runtime whose personas talk through the capable model and forge in
    ``executor``; everything is closed afterwards."""
    from backend.bus import EventBus
    from backend.config import BackendConfig, ModelsConfig
    from backend.forge import ToolForge
    from backend.home import Home
    from backend.llm.service import PersonaLLM
    from backend.protos import Proto
    from backend.runtime import Runtime

    bus = EventBus()
    runtime = Runtime(Home(root).ensure(), BackendConfig(autosave_interval_s=0), bus)
    models = ModelsConfig(
        backend="embedded", embedded_model=str(model), embedded_sha256=CAPABLE.sha256
    )
    llm = PersonaLLM(runtime, models, bus)
    forge = ToolForge(runtime, llm, bus, config, executor)
    Proto.llm, Proto.tool_runner = llm, forge
    runtime.start()
    try:
        yield runtime, forge
    finally:
        forge.close()
        llm.close()
        runtime.close(save=False)
        Proto.llm = Proto.tool_runner = None


def dialogue_to_the_end(
    client: Client, goal: str, timeout_s: float, poll_s: float = 0.5
) -> DialogueStatusReply:
    """Start a dialogue on ``goal`` and wait until it finishes or fails, rejecting every
    amendment it proposes (not what these tests judge); returns its last status."""
    from shared_api import commands as c
    from shared_api.replies import DialogueStatusReply

    started = client.request(c.StartDialogue(goal=goal))
    did = started.dialogue.dialogue_id  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout_s
    while True:
        status = client.request(c.DialogueStatus(dialogue_id=did))
        assert isinstance(status, DialogueStatusReply)
        if status.dialogue.status == "awaiting_approval":
            for approval in status.approvals:
                client.request(c.DecideAmendment(interrupt_id=approval.interrupt_id, approve=False))
        if status.dialogue.status in ("finished", "error"):
            return status
        assert time.monotonic() < deadline, status.dialogue
        time.sleep(poll_s)
