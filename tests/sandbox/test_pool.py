"""The pool of warm sandboxes: one run per sandbox, never reused; bounded; refilled in the
background; other limits start cold; a dead warm sandbox is never handed out; and the Tool
Forge's calls go through it without asking. (The hostile suite runs through it too.)"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.sandbox import Limits, Runtime, SecureCodeExecutor
from backend.sandbox import cgroups as sandbox_cgroups
from backend.sandbox.scratch import owner_tag
from tests.forge.scripts import RIGHT
from tests.forge.test_forge import build, forge
from tests.sandbox.conftest import require

pytestmark = pytest.mark.usefixtures("untouched")

LEAVE_TRACES = """
import builtins, json, os, time
builtins.LEFT_BY_THE_LAST_RUN = "secret"
open("/scratch/secret.txt", "w").write("secret")
child = os.fork()
if child == 0:  # a process that would outlive the run, were the sandbox reused
    os.setsid()
    time.sleep(30)
    os._exit(0)
print(json.dumps({"child": child}))
"""

LOOK_FOR_TRACES = """
import builtins, json, os
print(json.dumps({
    "builtins": hasattr(builtins, "LEFT_BY_THE_LAST_RUN"),
    "files": sorted(os.listdir("/scratch")),
    "processes": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "me": os.getpid(),
}))
"""


@pytest.fixture(params=["bubblewrap", "runsc"])
def pooled(
    request: pytest.FixtureRequest, runtimes: dict[str, Runtime], sandbox_root: Path
) -> Iterator[SecureCodeExecutor]:
    require(runtimes[request.param])
    executor = SecureCodeExecutor([runtimes[request.param]], scratch_root=sandbox_root, pool_size=2)
    yield executor
    executor.close()


def _our_groups() -> list[str]:
    tag = f"-{owner_tag()}-"
    layout = sandbox_cgroups._layout()
    base = next(iter(layout.bases.values())) if layout else None
    if base is None or not base.exists():
        return []
    return [child.name for child in base.iterdir() if tag in child.name]


def _wait(condition: object, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_each_warm_sandbox_serves_one_run_only(pooled: SecureCodeExecutor) -> None:
    assert pooled.warm_up(timeout=120)
    first = pooled.run_python(LEAVE_TRACES)
    assert first.exit_code == 0, first
    assert pooled.warm_up(timeout=120)
    second = pooled.run_python(LOOK_FOR_TRACES)
    assert second.exit_code == 0, second
    seen = json.loads(second.stdout)
    assert pooled.pool.served == 2 and pooled.pool.missed == 0
    assert seen["builtins"] is False  # a fresh interpreter
    assert seen["files"] == ["main.py"]  # a fresh scratch space
    # nothing of the first run is alive: only this sandbox's init and the run itself
    assert json.loads(first.stdout)["child"] not in seen["processes"], seen
    assert seen["me"] in seen["processes"] and len(seen["processes"]) <= 2, seen


def test_the_pool_is_bounded_and_refills_in_the_background(pooled: SecureCodeExecutor) -> None:
    assert pooled.warm_up(timeout=120)
    assert _wait(lambda: pooled.pool.ready() == 2, 120)
    assert len(_our_groups()) == 2
    peak = 0
    for _ in range(3):
        result = pooled.run_python("print('ok')")
        assert result.stdout == "ok\n", result
        peak = max(peak, len(_our_groups()))
    assert _wait(lambda: pooled.pool.ready() == 2, 120)  # refilled, not more
    time.sleep(0.5)
    assert pooled.pool.ready() == 2 and len(_our_groups()) == 2 and peak <= 2
    assert pooled.pool.served >= 1


def test_other_limits_start_cold_and_become_the_pools(pooled: SecureCodeExecutor) -> None:
    assert pooled.warm_up(timeout=120)
    other = Limits(cpu_s=2, memory_mb=128)
    result = pooled.run_python(
        "import resource\nprint(resource.getrlimit(resource.RLIMIT_AS)[0])", other
    )
    assert result.stdout == f"{128 << 20}\n" and pooled.pool.missed == 1, result
    assert pooled.warm_up(other, timeout=120)
    served = pooled.pool.served
    again = pooled.run_python(
        "import resource\nprint(resource.getrlimit(resource.RLIMIT_AS)[0])", other
    )
    assert again.stdout == f"{128 << 20}\n" and pooled.pool.served == served + 1
    assert _wait(lambda: len(_our_groups()) <= 2, 30)


def test_a_warm_sandbox_that_died_is_never_handed_out(pooled: SecureCodeExecutor) -> None:
    assert pooled.warm_up(timeout=120)
    assert _wait(lambda: pooled.pool.ready() == 2, 120)
    for warm in list(pooled.pool._ready):
        os.killpg(warm.spawned.pid, signal.SIGKILL)
    assert _wait(lambda: not any(w.alive() for w in list(pooled.pool._ready)), 10)
    result = pooled.run_python("print('fresh')")
    assert result.stdout == "fresh\n" and pooled.pool.missed == 1, result


def test_forged_tool_calls_go_through_the_pool(
    tmp_path: Path, runtimes: dict[str, Runtime]
) -> None:
    require(runtimes["bubblewrap"])
    executor = SecureCodeExecutor([runtimes["bubblewrap"]], pool_size=1)
    world = build(tmp_path, executor)
    try:
        world.model.script(RIGHT)
        assert forge(world).outcome == "attached"
        for a in range(4):
            assert executor.warm_up(timeout=60)
            reply = world.runtime.invoke("ROBIN", "add_numbers", {"a": a, "b": 40})
            assert reply.result == a + 40  # type: ignore[union-attr]
        assert executor.pool.served >= 4
    finally:
        world.close()
        executor.close()
