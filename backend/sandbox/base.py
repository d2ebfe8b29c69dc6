"""What every sandbox runtime provides, and the constants they share.

A runtime runs ``python3 main.py`` inside a prepared scratch directory under ``Limits`` and
returns a ``SandboxResult``. The conformance suite (``tests/sandbox``) runs the same hostile
cases against every runtime that is available.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, runtime_checkable

from shared_api.errors import SandboxFailedError
from shared_api.sandbox import Limits, SandboxResult

INSTALL_HINT = "apt-get install bubblewrap runsc"
"""The exact command that makes a sandbox available on Debian/Ubuntu (run it as root)."""

SANDBOX_UID = 65534
"""The unprivileged host uid (and gid) code runs as: ``nobody``/``nogroup``."""

SCRIPT_NAME = "main.py"
"""The file in the scratch directory that a run executes."""

SCRATCH = "/scratch"
"""Where the scratch directory appears inside every sandbox; also the working directory."""

SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": SCRATCH,
    "TMPDIR": SCRATCH,
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONIOENCODING": "utf-8",
}
"""The whole environment a sandboxed script sees (the host's is never passed in)."""

PYTHON_ARGS = ("-B", "-E", "-s", SCRIPT_NAME)
"""Interpreter flags: no bytecode, ignore PYTHON* variables, no user site-packages."""


@runtime_checkable
class Runtime(Protocol):
    """One way of running untrusted code. Implementations never run it unsandboxed."""

    name: str

    def available(self) -> str | None:
        """None when the runtime works here, else why not (and what to install)."""

    def enforcement(self) -> dict[str, str]:
        """How each limit (``Limits`` field) and isolation property is enforced."""

    def run(self, scratch: Path, limits: Limits) -> SandboxResult:
        """Run ``scratch/main.py``; ``scratch`` is visible (read-write) at ``/scratch``.

        Raises ``SandboxFailedError`` when the sandbox itself (not the script) failed.
        """


class ProbedRuntime:
    """``available()`` runs the runtime's own ``_check()`` once and remembers the answer."""

    _reason: str | None = None
    _checked = False

    def available(self) -> str | None:
        if not self._checked:
            self._reason = self._check()
            self._checked = True
        return self._reason

    def _check(self) -> str | None:
        raise NotImplementedError

    def run(self, scratch: Path, limits: Limits) -> SandboxResult:
        raise NotImplementedError

    def _smoke_test(self, what: str, wall_s: float) -> str | None:
        """Run ``print("ok")`` in this runtime: None when it works, else why it does not."""
        try:
            with scratch_dir('print("ok")') as scratch:
                probe = self.run(scratch, Limits(wall_s=wall_s))
        except SandboxFailedError as exc:
            return f"{what} does not work here: {exc.message}"
        if probe.exit_code != 0 or probe.stdout != "ok\n":
            return f"{what} probe failed: exit {probe.exit_code}, {probe.stderr.strip()[-500:]}"
        return None


def find_tool(name: str) -> str | None:
    """The absolute path of a host tool on ``PATH``, or None."""
    return shutil.which(name)


def host_python() -> Path | None:
    """A python3 that lives under /usr, so that a read-only /usr makes it usable inside.

    The project's own interpreter may live under /root (pyenv) where the sandbox cannot see
    it, and must not: the sandbox runs the system's python3.
    """
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        path = Path(candidate)
        if path.exists() and os.path.realpath(path).startswith("/usr/"):
            return path
    return None


def is_root() -> bool:
    return os.geteuid() == 0


ROOT_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
"""Top-level directories a sandbox mirrors from the host (read-only), besides /usr."""


def root_entries() -> list[tuple[str, str | None]]:
    """``(name, symlink target)`` for each of ``ROOT_DIRS`` on the host; target None for a
    real directory (bound read-only). On a merged-/usr system they are all symlinks."""
    entries: list[tuple[str, str | None]] = []
    for name in ROOT_DIRS:
        path = Path("/", name)
        if path.is_symlink():
            entries.append((name, os.readlink(path)))
        elif path.is_dir():
            entries.append((name, None))
    return entries


MIB = 1 << 20


def rlimits(limits: Limits) -> dict[str, tuple[int, int]]:
    """The rlimits (soft, hard) every process in a run gets, by ``prlimit`` name.

    RLIMIT_CPU is whole seconds per process: soft at the limit (SIGXCPU), hard one second
    later (SIGKILL); the CPU of the whole tree is enforced from outside where measurable.
    """
    cpu = max(1, math.ceil(limits.cpu_s))
    return {
        "cpu": (cpu, cpu + 1),
        "as": (limits.memory_mb * MIB, limits.memory_mb * MIB),
        "nproc": (limits.pids, limits.pids),
        "fsize": (limits.file_size_mb * MIB, limits.file_size_mb * MIB),
        "nofile": (256, 256),
        "core": (0, 0),
    }


@contextmanager
def scratch_dir(source: str, root: Path | None = None) -> Iterator[Path]:
    """A fresh private directory holding ``main.py``, owned by the sandbox uid when we are
    root (mode 0700, so no other host user can look in), removed with all its contents after.
    """
    path = Path(tempfile.mkdtemp(prefix="entropic-scratch-", dir=root))
    try:
        script = path / SCRIPT_NAME
        script.write_text(source, encoding="utf-8")
        script.chmod(0o644)
        if is_root():
            os.chown(path, SANDBOX_UID, SANDBOX_UID)
        yield path
    finally:
        # rmtree does not follow symlinks the script may have planted (fd-based on Linux).
        shutil.rmtree(path, ignore_errors=True)
