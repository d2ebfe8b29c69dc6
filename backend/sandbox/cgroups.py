"""A fresh cgroup per run: a memory and a pids limit for the whole process tree, its CPU
time, whether the OOM killer fired, and a way to kill everything in it.

Works on cgroup v1 (one hierarchy per controller, as on this project's CI machines: the
groups go under this process's own group, so any limit above still applies) and on the
unified v2 hierarchy (under ``/sys/fs/cgroup/entropic-sandbox``). Creating one needs root
(or a delegated subtree); callers treat ``OSError`` from ``RunCgroup.create`` as "no cgroup".
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from backend.sandbox.scratch import start_ticks

GROUP = "entropic-sandbox"


@dataclass(frozen=True)
class _Layout:
    version: int
    bases: dict[str, Path]
    """v1: controller -> the directory that run groups go under; v2: {"unified": ...}."""


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fstype, super options) of every cgroup mount."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, _source, options = [*right.split(), "", "", ""][:3]
        if fstype in ("cgroup", "cgroup2"):
            found.append((left.split()[4], fstype, set(options.split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """controller -> this process's group path (v1); "" -> its v2 path."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


@cache
def _layout() -> _Layout | None:
    mounts = _mounts()
    own = _own_paths()
    v1: dict[str, Path] = {}
    for point, fstype, options in mounts:
        for controller in ("memory", "pids", "cpuacct"):
            if fstype == "cgroup" and controller in options and controller in own:
                v1[controller] = Path(point) / own[controller].lstrip("/") / GROUP
    if len(v1) == 3:
        return _Layout(1, v1)
    for point, fstype, _ in mounts:
        controllers = Path(point, "cgroup.controllers")
        if fstype == "cgroup2" and controllers.exists():
            available = set(controllers.read_text().split())
            if {"memory", "pids"} <= available:
                return _Layout(2, {"unified": Path(point) / GROUP})
    return None


def describe() -> str:
    """Which cgroup layout runs get, for ``status()``."""
    layout = _layout()
    if layout is None:
        return "none (no memory+pids+cpuacct cgroup hierarchy)"
    return f"v{layout.version} under {', '.join(str(p) for p in layout.bases.values())}"


class RunCgroup:
    """One run's group(s). Create, ``wrap`` the command, read usage, ``close``."""

    def __init__(self, layout: _Layout, dirs: dict[str, Path]) -> None:
        self.layout = layout
        self.dirs = dirs

    @classmethod
    def create(cls, name: str, *, memory_bytes: int, pids: int) -> RunCgroup:
        """Make the groups and set their limits; raises ``OSError`` where that is impossible."""
        layout = _layout()
        if layout is None:
            raise OSError("no usable cgroup hierarchy (memory, pids and cpuacct)")
        if layout.version == 2:
            _enable_v2(layout.bases["unified"])
        dirs = {key: base / name for key, base in layout.bases.items()}
        group = cls(layout, {})
        try:
            for key, path in dirs.items():
                path.mkdir(parents=True)
                group.dirs[key] = path
            group._limit(memory_bytes, pids)
        except OSError:
            group.close()
            raise
        return group

    def _limit(self, memory_bytes: int, pids: int) -> None:
        if self.layout.version == 1:
            mem = self.dirs["memory"]
            _write(mem / "memory.limit_in_bytes", memory_bytes)
            if (mem / "memory.memsw.limit_in_bytes").exists():
                _write(mem / "memory.memsw.limit_in_bytes", memory_bytes)
            _write(self.dirs["pids"] / "pids.max", pids)
        else:
            unified = self.dirs["unified"]
            _write(unified / "memory.max", memory_bytes)
            if (unified / "memory.swap.max").exists():
                _write(unified / "memory.swap.max", 0)
            _write(unified / "pids.max", pids)

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` behind a root shell that joins the group(s) first, then execs it.

        Joining before the first exec means nothing the run starts can escape the group.
        """
        procs = [str(path / "cgroup.procs") for path in self.dirs.values()]
        joins = " && ".join(f'echo $$ > "${i}"' for i in range(1, len(procs) + 1))
        script = f'{joins} && shift {len(procs)} && exec "$@"'
        return ["/bin/sh", "-c", script, "sh", *procs, *argv]

    def cpu_s(self) -> float | None:
        """CPU seconds used by everything in the group so far."""
        try:
            if self.layout.version == 1:
                return int((self.dirs["cpuacct"] / "cpuacct.usage").read_text()) / 1e9
            for line in (self.dirs["unified"] / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
        except (OSError, ValueError):
            pass
        return None

    def oom_killed(self) -> bool:
        """Whether the kernel OOM-killed anything in the group."""
        name = "memory" if self.layout.version == 1 else "unified"
        events = "memory.oom_control" if self.layout.version == 1 else "memory.events"
        try:
            text = (self.dirs[name] / events).read_text()
        except (OSError, KeyError):
            return False
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip() != "0":
                return True
        return False

    def pids(self) -> list[int]:
        path = next(iter(self.dirs.values()), None)
        if path is None:
            return []
        try:
            return [int(p) for p in (path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def wait_empty(self, timeout: float, spare: int | None = None) -> bool:
        """Wait for every process in the group (but ``spare``) to exit; True if they did."""
        deadline = time.monotonic() + timeout
        while [pid for pid in self.pids() if pid != spare]:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def kill_all(self, timeout: float = 5.0, spare: int | None = None) -> None:
        """SIGKILL every process in the group (but ``spare``) until none is left (or
        ``timeout`` passes)."""
        deadline = time.monotonic() + timeout
        while True:
            pids = [pid for pid in self.pids() if pid != spare]
            if not pids or time.monotonic() > deadline:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)

    def close(self) -> None:
        """Kill what is left and remove the group(s)."""
        self.kill_all()
        for path in self.dirs.values():
            for _ in range(200):  # a killed task can take a moment to leave the group
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
        self.dirs = {}


def _write(path: Path, value: int | str) -> None:
    path.write_text(str(value))


def _enable_v2(base: Path) -> None:
    root = base.parent
    wanted = "+memory +pids"
    if not {"memory", "pids"} <= set((root / "cgroup.subtree_control").read_text().split()):
        _write(root / "cgroup.subtree_control", wanted)
    base.mkdir(exist_ok=True)
    if not {"memory", "pids"} <= set((base / "cgroup.subtree_control").read_text().split()):
        _write(base / "cgroup.subtree_control", wanted)


_OWNED = re.compile(r"-(\d+)-(\d+)-[0-9a-f]{12}$")


def sweep() -> list[str]:
    """Remove the run groups whose owner process is gone (killing what is left in them).

    Run groups are named ``...-PID-START-RANDOM`` after the process that made them; others'
    groups, and those of live processes, are left alone.
    """
    layout = _layout()
    if layout is None or os.geteuid() != 0:  # only root makes run groups
        return []
    removed: list[str] = []
    names: set[str] = set()
    for base in layout.bases.values():
        with contextlib.suppress(OSError):
            names.update(child.name for child in base.iterdir() if child.is_dir())
    for name in sorted(names):
        match = _OWNED.search(name)
        if match is None:
            continue
        pid, start = int(match.group(1)), int(match.group(2))
        if start_ticks(pid) == start:
            continue  # its owner still runs
        dirs = {key: base / name for key, base in layout.bases.items() if (base / name).is_dir()}
        RunCgroup(layout, dirs).close()
        removed.append(name)
    return removed
