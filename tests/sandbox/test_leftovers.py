"""What a process that dies mid-run leaves behind is swept at the next start, and only that:
never what a live process (another program using the sandbox right now) is using."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from backend.sandbox import SecureCodeExecutor
from backend.sandbox import cgroups as sandbox_cgroups
from backend.sandbox import scratch as scratch_module
from backend.sandbox.scratch import LEGACY_AGE_S, Scratch, start_ticks, sweep
from tests.sandbox.conftest import host_state, require

REPO = Path(__file__).resolve().parents[2]


def _dead_owner() -> tuple[int, int]:
    """The pid and start time of a process that has exited."""
    proc = subprocess.Popen(["/bin/sleep", "0.2"])
    start = start_ticks(proc.pid)
    proc.wait()
    assert start is not None
    return proc.pid, start


def test_sweep_removes_only_what_dead_owners_left(tmp_path: Path) -> None:
    dead_pid, dead_start = _dead_owner()
    me, my_start = os.getpid(), start_ticks(os.getpid())
    dead = tmp_path / f"entropic-scratch-{dead_pid}-{dead_start}-abc123"
    dead_runsc = tmp_path / f"entropic-runsc-{dead_pid}-{dead_start}-def456"
    reused_pid = tmp_path / f"entropic-docker-{me}-{(my_start or 0) + 1}-ghi789"  # not us
    live = tmp_path / f"entropic-runsc-{me}-{my_start}-jkl012"
    legacy = tmp_path / "entropic-scratch-ab12cd34"
    other = tmp_path / "entropic-notours-1-1-x"
    for path in (dead, dead_runsc, reused_pid, live, legacy, other):
        path.mkdir()
        (path / "main.py").write_text("x")
    (dead_runsc / "state").mkdir()
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep").write_text("keep")
    planted = tmp_path / f"entropic-scratch-{dead_pid}-{dead_start}-link00"
    planted.symlink_to(target)  # a symlink is never followed, nor removed

    removed = sweep(tmp_path)
    assert sorted(removed) == sorted([dead.name, dead_runsc.name, reused_pid.name])
    assert not dead.exists() and not dead_runsc.exists() and not reused_pid.exists()
    assert live.exists() and legacy.exists() and other.exists()
    assert planted.is_symlink() and (target / "keep").read_text() == "keep"
    # directories from before owners were named go once no run can still be using them
    assert sweep(tmp_path, now=time.time() + LEGACY_AGE_S + 60) == [legacy.name]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root mounts a scratch tmpfs")
def test_sweep_unmounts_a_dead_owners_scratch(tmp_path: Path) -> None:
    mine = Scratch.create(8, tmp_path)  # a live owner's (ours): kept
    assert mine.path is not None and os.path.ismount(mine.path)
    dead_pid, dead_start = _dead_owner()
    left = tmp_path / f"entropic-scratch-{dead_pid}-{dead_start}-mnt000"
    left.mkdir()
    scratch_module._mount(left, "size=8m")  # as a process that died had mounted it
    try:
        (left / "data").write_bytes(b"x" * 4096)
        assert sweep(tmp_path) == [left.name]
        assert not left.exists()
        assert str(left) not in Path("/proc/self/mountinfo").read_text()
        assert os.path.ismount(mine.path)
    finally:
        mine.remove()
        if os.path.ismount(left):
            scratch_module.remove(left)


CRASH = """
import os, sys, time
sys.path.insert(0, {repo!r})
from pathlib import Path
from backend.sandbox import Limits, SecureCodeExecutor
from backend.sandbox.{module} import {cls}
executor = SecureCodeExecutor([{cls}()], scratch_root={root}, pool_size=1)
assert executor.warm_up(timeout=120)
print("warm", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize(
    ("name", "module", "cls"),
    [("bubblewrap", "bubblewrap", "BubblewrapRuntime"), ("runsc", "gvisor", "GvisorRuntime")],
)
def test_a_crashed_owners_leftovers_are_swept_at_startup(
    name: str, module: str, cls: str, runtimes: dict[str, object], sandbox_root: Path
) -> None:
    require(runtimes[name])  # type: ignore[arg-type]
    source = CRASH.format(
        repo=str(REPO), module=module, cls=cls, root=f"Path({str(sandbox_root)!r})"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(source)], stdout=subprocess.PIPE, text=True
    )
    assert owner.stdout is not None
    assert owner.stdout.readline() == "warm\n"
    tag = f"-{owner.pid}-{start_ticks(owner.pid)}-"
    made = [p.name for p in sandbox_root.iterdir()]
    assert made and all(tag in n for n in made), made
    owner.send_signal(signal.SIGKILL)  # mid-life: a warm sandbox, its scratch, its cgroup
    owner.wait()
    owner.stdout.close()
    # The next start sweeps them: directories, the mounted scratch and the cgroup.
    me = SecureCodeExecutor([runtimes[name]], scratch_root=sandbox_root, pool_size=1)  # type: ignore[list-item]
    try:
        assert not [p.name for p in sandbox_root.iterdir() if tag in p.name]
        assert tag not in Path("/proc/self/mountinfo").read_text()
        assert not [group for group in _run_cgroups() if tag in group]
        # and its own warm sandbox, made meanwhile, is not swept by another start
        assert me.warm_up(timeout=120)
        mine = [p.name for p in sandbox_root.iterdir()]
        assert mine
        SecureCodeExecutor([runtimes[name]], scratch_root=sandbox_root, pool_size=0)  # type: ignore[list-item]
        sweep(sandbox_root)
        assert [p.name for p in sandbox_root.iterdir()] == mine
        assert me.run_python("print('still fine')").stdout == "still fine\n"
    finally:
        me.close()


def _run_cgroups() -> list[str]:
    layout = sandbox_cgroups._layout()
    found: list[str] = []
    for base in layout.bases.values() if layout else ():
        if base.exists():
            found += [child.name for child in base.iterdir() if child.is_dir()]
    return found


def test_the_leftover_check_ignores_another_program_using_the_sandbox(
    runtimes: dict[str, object], sandbox_root: Path
) -> None:
    """The hostile suite's "nothing left behind" check counts only this process's runs."""
    require(runtimes["bubblewrap"])  # type: ignore[arg-type]
    before = host_state(sandbox_root)
    source = CRASH.format(repo=str(REPO), module="bubblewrap", cls="BubblewrapRuntime", root=None)
    other = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(source)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout is not None and other.stdout.readline() == "warm\n"
        # the other program has a warm sandbox (directories, cgroup, processes) right now
        tag = f"-{other.pid}-{start_ticks(other.pid)}-"
        assert any(tag in group for group in _run_cgroups())
        executor = SecureCodeExecutor(
            [runtimes["bubblewrap"]],  # type: ignore[list-item]
            scratch_root=sandbox_root,
            pool_size=0,
        )
        assert executor.run_python("print(1)").stdout == "1\n"
        assert host_state(sandbox_root) == before
    finally:
        other.send_signal(signal.SIGINT)  # it exits normally, closing its pool
        other.wait(timeout=60)
        if other.stdout is not None:
            other.stdout.close()
