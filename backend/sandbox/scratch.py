"""A run's scratch space and working directories on the host, named after their owner.

Every directory a run makes on the host is called ``entropic-KIND-PID-START-RANDOM``: the
process that made it (its pid and its start time, so a reused pid is not mistaken for it).
``sweep`` removes the ones whose owner is gone, and never one whose owner still runs.

The scratch space (``/scratch`` inside every sandbox) is a size-limited tmpfs: the whole run
may write ``Limits.disk_mb`` there, together, and nothing it writes reaches a host disk. As
root it is mounted on the host (so the host can tell afterwards whether the run filled it,
and bind it into any runtime); otherwise the runtime makes one inside the sandbox (bwrap's
``--size --tmpfs``, Docker's ``--tmpfs``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

SANDBOX_ID = 65534
"""The uid/gid that owns the scratch space (``base.SANDBOX_UID``; repeated to stay import-free)."""

KINDS = ("scratch", "runsc", "docker")
"""What the directories are for: scratch space, a runsc bundle and state, a docker cidfile."""

_NAME = re.compile(r"^entropic-(?:" + "|".join(KINDS) + r")-(\d+)-(\d+)-[A-Za-z0-9_]+$")
_LEGACY = re.compile(r"^entropic-(?:" + "|".join(KINDS) + r")-[A-Za-z0-9_]{8}$")
LEGACY_AGE_S = 2 * 3600 + 600
"""Directories from before owners were named are swept once this old (by ctime, which a
script cannot set back): no run lasts longer (``Limits.wall_s`` is at most an hour)."""

FULL_BYTES = 64 << 10
"""A scratch space with less than this left counts as full."""

_MS_NOSUID, _MS_NODEV = 2, 4
_MNT_DETACH = 2


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return int(stat.rpartition(")")[2].split()[19])


def owner_tag() -> str:
    """``PID-START`` of this process, as it appears in the names of what it makes."""
    return f"{os.getpid()}-{_own_start(os.getpid())}"


@cache
def _own_start(pid: int) -> int:
    return start_ticks(pid) or 0


def make_dir(kind: str, root: Path | None = None) -> Path:
    """A fresh private (0700) directory ``entropic-KIND-PID-START-*`` under ``root``."""
    prefix = f"entropic-{kind}-{owner_tag()}-"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root))


def owner_alive(name: str) -> bool | None:
    """Whether the process that made ``name`` still runs; None when the name says no owner."""
    match = _NAME.match(name)
    if match is None:
        return None
    pid, start = int(match.group(1)), int(match.group(2))
    return start_ticks(pid) == start


@dataclass
class Scratch:
    """One run's scratch space: a host tmpfs at ``path``, or (``path`` None) one the runtime
    makes inside the sandbox, of ``size_mb``."""

    path: Path | None
    size_mb: int

    @classmethod
    def create(cls, size_mb: int, root: Path | None = None) -> Scratch:
        """As root, a tmpfs mounted on a fresh directory (mode 0700, owned by the sandbox
        uid); otherwise none (the runtime makes its own inside the sandbox)."""
        if os.geteuid() != 0 or _libc() is None:
            return cls(None, size_mb)
        path = make_dir("scratch", root)
        owner = f"mode=0700,uid={SANDBOX_ID},gid={SANDBOX_ID}"
        options = f"size={size_mb}m,nr_inodes={inodes(size_mb)},{owner}"
        try:
            _mount(path, options)
        except OSError:
            shutil.rmtree(path, ignore_errors=True)
            raise
        return cls(path, size_mb)

    def full(self) -> bool | None:
        """Whether the run filled it; None when the host cannot see it."""
        if self.path is None:
            return None
        try:
            stats = os.statvfs(self.path)
        except OSError:
            return None
        return stats.f_bavail * stats.f_frsize < FULL_BYTES

    def remove(self) -> None:
        if self.path is not None:
            remove(self.path)
            self.path = None


def inodes(size_mb: int) -> int:
    """Files a scratch space of ``size_mb`` may hold: enough for any sensible use, few
    enough that empty files cannot pile up kernel memory outside the size limit."""
    return max(1024, size_mb * 256)


def remove(path: Path) -> None:
    """Unmount ``path`` if it is a mount point (a scratch tmpfs), then delete it."""
    with contextlib.suppress(OSError):
        if os.path.ismount(path):
            _umount(path)
    # rmtree does not follow symlinks the script may have planted (fd-based on Linux).
    shutil.rmtree(path, ignore_errors=True)


def sweep(root: Path | None = None, *, now: float | None = None) -> list[str]:
    """Remove the directories under ``root`` (default: the system's temporary directory)
    whose owner process is gone. Returns their names. Another live process's are kept, as
    are symlinks and anything not owned by us or by the sandbox uid."""
    base = Path(root) if root is not None else Path(tempfile.gettempdir())
    now = time.time() if now is None else now
    removed: list[str] = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    owners = {os.geteuid(), SANDBOX_ID} if os.geteuid() == 0 else {os.geteuid()}
    for entry in entries:
        if not entry.name.startswith("entropic-"):
            continue
        alive = owner_alive(entry.name)
        try:
            st = entry.lstat()
        except OSError:
            continue
        if not _is_dir(st.st_mode) or st.st_uid not in owners:
            continue
        legacy_stale = alive is None and bool(_LEGACY.match(entry.name))
        if alive is False or (legacy_stale and now - st.st_ctime > LEGACY_AGE_S):
            remove(entry)
            removed.append(entry.name)
    if removed:
        log.info("sandbox: removed %d directories left by dead processes", len(removed))
    return removed


def _is_dir(mode: int) -> bool:
    import stat

    return stat.S_ISDIR(mode)


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name, use_errno=True) if name else None


def _mount(path: Path, options: str) -> None:
    libc = _libc()
    if libc is None:
        raise OSError("no libc to mount with")
    flags = _MS_NOSUID | _MS_NODEV
    if libc.mount(b"tmpfs", os.fsencode(path), b"tmpfs", flags, options.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mounting a tmpfs on {path}: {os.strerror(err)}")


def _umount(path: Path) -> None:
    libc = _libc()
    if libc is not None and libc.umount2(os.fsencode(path), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unmounting {path}: {os.strerror(err)}")
