"""Fixtures for the sandbox suites: one executor per runtime, and host-state checks.

A runtime that is not available here is skipped loudly (its reason is printed in a banner at
the end of the run), except under ``ENTROPIC_REQUIRE_ALL=1`` (CI), where it fails: CI
installs bubblewrap and runsc, so their suites must run there. The Docker runtime is skipped
even in CI when no Docker daemon answers (CI does not run one).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backend.sandbox import Runtime, SecureCodeExecutor
from backend.sandbox import cgroups as sandbox_cgroups
from backend.sandbox.base import SANDBOX_UID
from backend.sandbox.bubblewrap import BubblewrapRuntime
from backend.sandbox.docker import DockerGvisorRuntime
from backend.sandbox.gvisor import GvisorRuntime

RUNTIME_NAMES = ("bubblewrap", "runsc", "docker-gvisor")
_NO_DOCKER_DAEMON = ("docker not found", "the Docker daemon does not answer")
_UNTESTED: dict[str, str] = {}


@pytest.fixture(scope="session")
def runtimes() -> dict[str, Runtime]:
    """One instance of each runtime for the session (each probes itself once)."""
    return {
        "bubblewrap": BubblewrapRuntime(),
        "runsc": GvisorRuntime(),
        "docker-gvisor": DockerGvisorRuntime(),
    }


def require(runtime: Runtime) -> None:
    """Skip loudly, or under ENTROPIC_REQUIRE_ALL=1 fail, when ``runtime`` cannot run here."""
    why = runtime.available()
    if why is None:
        return
    _UNTESTED[runtime.name] = why
    if runtime.name == "docker-gvisor" and why.startswith(_NO_DOCKER_DAEMON):
        pytest.skip(f"SANDBOX RUNTIME NOT TESTED: docker-gvisor: {why}")
    if os.environ.get("ENTROPIC_REQUIRE_ALL") == "1":
        pytest.fail(
            f"sandbox runtime {runtime.name} is unavailable and ENTROPIC_REQUIRE_ALL=1: {why}",
            pytrace=False,
        )
    pytest.skip(f"SANDBOX RUNTIME NOT TESTED: {runtime.name}: {why}")


@pytest.fixture(params=RUNTIME_NAMES)
def sandbox(request: pytest.FixtureRequest, runtimes: dict[str, Runtime]) -> SecureCodeExecutor:
    """An executor bound to one runtime; the test runs once per runtime."""
    runtime = runtimes[request.param]
    require(runtime)
    return SecureCodeExecutor([runtime])


@pytest.fixture
def bubblewrap(runtimes: dict[str, Runtime]) -> SecureCodeExecutor:
    require(runtimes["bubblewrap"])
    return SecureCodeExecutor([runtimes["bubblewrap"]])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _UNTESTED:
        terminalreporter.section("SANDBOX RUNTIMES NOT TESTED", sep="!", red=True, bold=True)
        for name, why in sorted(_UNTESTED.items()):
            terminalreporter.line(f"{name}: {why}")


@dataclass(frozen=True)
class HostState:
    """What a sandboxed run could leave behind on the host."""

    leftovers: frozenset[str]
    """/tmp entries of ours (scratch, runsc bundles, docker cidfiles)."""
    processes: frozenset[str]
    """Processes running as the sandbox uid, or runsc processes of our containers."""
    cgroups: frozenset[str]
    """Run cgroups still present."""


def host_state() -> HostState:
    leftovers = {p.name for p in Path("/tmp").iterdir() if p.name.startswith("entropic-")}
    processes = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        uid_line = next((line for line in status.splitlines() if line.startswith("Uid:")), "")
        if str(SANDBOX_UID) in uid_line.split()[1:2] or (
            "runsc" in cmdline and "entropic-" in cmdline
        ):
            processes.add(f"{proc.name}: {cmdline[:200]}")
    groups = set()
    layout = sandbox_cgroups._layout()
    for base in layout.bases.values() if layout else ():
        if base.exists():
            groups.update(str(child) for child in base.iterdir() if child.is_dir())
    return HostState(frozenset(leftovers), frozenset(processes), frozenset(groups))


@pytest.fixture
def untouched() -> Iterator[HostState]:
    """Asserts after the test that the run left nothing behind on the host."""
    before = host_state()
    yield before
    after = host_state()
    assert after.leftovers <= before.leftovers, after.leftovers - before.leftovers
    assert after.processes <= before.processes, after.processes - before.processes
    assert after.cgroups <= before.cgroups, after.cgroups - before.cgroups
