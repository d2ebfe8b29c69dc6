"""Fixtures for the sandbox suites: one executor per runtime, and host-state checks.

A runtime that is not available here is skipped loudly (its reason is printed in a banner at
the end of the run), except under ``ENTROPIC_REQUIRE_ALL=1`` (CI), where it fails: CI
installs bubblewrap and runsc and starts a Docker daemon with runsc and the sandbox image
(``.ci/run``), so all three suites must run there. Each hostile case runs cold and through
the pool of warm sandboxes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backend.sandbox import Limits, Runtime, SandboxResult, SecureCodeExecutor
from backend.sandbox import cgroups as sandbox_cgroups
from backend.sandbox.bubblewrap import BubblewrapRuntime
from backend.sandbox.docker import DockerGvisorRuntime
from backend.sandbox.gvisor import GvisorRuntime
from backend.sandbox.scratch import owner_tag

RUNTIME_NAMES = ("bubblewrap", "runsc", "docker-gvisor")
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
    if os.environ.get("ENTROPIC_REQUIRE_ALL") == "1":
        pytest.fail(
            f"sandbox runtime {runtime.name} is unavailable and ENTROPIC_REQUIRE_ALL=1: {why}",
            pytrace=False,
        )
    pytest.skip(f"SANDBOX RUNTIME NOT TESTED: {runtime.name}: {why}")


@pytest.fixture
def sandbox_root() -> Iterator[Path]:
    """This test's own directory for the runs' host-side directories (traversable by the
    sandbox uid, as /tmp is, so that bwrap can bind the scratch space from it)."""
    root = Path(tempfile.mkdtemp(prefix="sandbox-test-root-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


class PooledExecutor(SecureCodeExecutor):
    """Every run through a warm sandbox: the pool first starts one for exactly this run's
    limits, and the run must be served by it (not started cold)."""

    def run_python(
        self, source: str, limits: Limits | None = None, runtime: str | None = None
    ) -> SandboxResult:
        assert self.warm_up(limits, runtime, timeout=120), "the pool started no sandbox"
        served = self.pool.served
        result = super().run_python(source, limits, runtime)
        assert self.pool.served == served + 1, "the run did not use the warm sandbox"
        return result


@pytest.fixture(params=[(name, mode) for name in RUNTIME_NAMES for mode in ("cold", "pool")],
                ids=lambda p: f"{p[0]}-{p[1]}")  # fmt: skip
def sandbox(
    request: pytest.FixtureRequest, runtimes: dict[str, Runtime], sandbox_root: Path
) -> Iterator[SecureCodeExecutor]:
    """An executor bound to one runtime, cold or through its pool of warm sandboxes; the
    test runs once per runtime and mode."""
    name, mode = request.param
    require(runtimes[name])
    if mode == "cold":
        executor = SecureCodeExecutor([runtimes[name]], scratch_root=sandbox_root, pool_size=0)
    else:
        executor = PooledExecutor([runtimes[name]], scratch_root=sandbox_root, pool_size=1)
    yield executor
    executor.close()


@pytest.fixture
def bubblewrap(runtimes: dict[str, Runtime]) -> Iterator[SecureCodeExecutor]:
    """A bubblewrap executor as the backend makes one (a pool of one warm sandbox, the
    system's temporary directory), closed after the test."""
    require(runtimes["bubblewrap"])
    executor = SecureCodeExecutor([runtimes["bubblewrap"]], pool_size=1)
    yield executor
    executor.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _UNTESTED:
        terminalreporter.section("SANDBOX RUNTIMES NOT TESTED", sep="!", red=True, bold=True)
        for name, why in sorted(_UNTESTED.items()):
            terminalreporter.line(f"{name}: {why}")


@dataclass(frozen=True)
class HostState:
    """What this process's sandboxed runs could leave behind on the host. Only what is ours
    counts (named with our owner tag, or under our root), so that another program using the
    sandbox at the same time makes no difference."""

    leftovers: frozenset[str]
    """Our directories (scratch, runsc bundles, docker cidfiles) in the root and in /tmp."""
    processes: frozenset[str]
    """Processes in our run cgroups, or runsc processes of our containers."""
    cgroups: frozenset[str]
    """Our run cgroups still present."""
    containers: frozenset[str]
    """Our Docker containers still present."""


def host_state(root: Path) -> HostState:
    tag = owner_tag()
    leftovers = {str(p) for p in root.iterdir()}
    leftovers |= {str(p) for p in Path(tempfile.gettempdir()).iterdir() if f"-{tag}-" in p.name}
    processes = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            groups = (proc / "cgroup").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ours = f"-{tag}-" in groups or f"-{tag}-" in cmdline or str(root) in cmdline
        if ours and proc.name != str(os.getpid()):
            processes.add(f"{proc.name}: {cmdline[:200]}")
    groups_left = set()
    layout = sandbox_cgroups._layout()
    for base in layout.bases.values() if layout else ():
        if base.exists():
            groups_left.update(
                str(c) for c in base.iterdir() if c.is_dir() and f"-{tag}-" in c.name
            )
    return HostState(
        frozenset(leftovers), frozenset(processes), frozenset(groups_left), _containers(tag)
    )


def _containers(tag: str) -> frozenset[str]:
    if shutil.which("docker") is None:
        return frozenset()
    try:
        listed = subprocess.run(
            ["docker", "ps", "--all", "--quiet", f"--filter=name=entropic-{tag}-"],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    return frozenset(listed.stdout.split()) if listed.returncode == 0 else frozenset()


@pytest.fixture
def untouched(sandbox_root: Path) -> Iterator[HostState]:
    """Asserts after the test that its runs left nothing behind on the host. Runs after the
    executor is closed (which waits for a pool's clean-ups)."""
    before = host_state(sandbox_root)
    yield before
    after = host_state(sandbox_root)
    assert after.leftovers <= before.leftovers, after.leftovers - before.leftovers
    assert after.processes <= before.processes, after.processes - before.processes
    assert after.cgroups <= before.cgroups, after.cgroups - before.cgroups
    assert after.containers <= before.containers, after.containers - before.containers
