"""What every sandbox runtime provides, and the constants they share.

A runtime ``start``s a sandbox under ``Limits``: the interpreter loads and waits for its
program on stdin (``BOOT``). ``Warm.run`` hands it the program, which the bootstrap writes to
``/scratch/main.py`` and runs as ``__main__``, and returns a ``SandboxResult``; the sandbox is
then destroyed. A cold run is a start followed at once by its run; a pool keeps a few started
ones (``pool.WarmPool``). The conformance suite (``tests/sandbox``) runs the same hostile
cases against every runtime that is available, cold and pooled.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from backend.sandbox.scratch import Scratch
from backend.sandbox.supervise import CpuProbe, Killer, Outcome, Spawned
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

BOOT = """\
def _boot():
    import builtins, json, linecache, sys, traceback, types  # tools use them: load them now
    mark, _, source = sys.stdin.buffer.read().partition(b"\\n")  # blocks until EOF
    with open("/scratch/main.py", "wb") as f:
        f.write(source)
    leave = _leave  # the program gets __main__'s namespace to itself
    space = sys.modules["__main__"].__dict__
    space.clear()
    space.update(__name__="__main__", __doc__=None, __package__=None, __loader__=None,
                 __spec__=None, __file__="/scratch/main.py", __cached__=None,
                 __builtins__=builtins)
    sys.argv[:] = ["main.py"]
    sys.path[0] = "/scratch"
    code = 0
    try:
        exec(compile(source, "/scratch/main.py", "exec"), space)
    except SystemExit as exc:  # what the interpreter makes of it
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code & 0xFF
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException as exc:  # reported as python3 main.py would, without this frame
        exc = exc.with_traceback(exc.__traceback__.tb_next)
        sys.excepthook(type(exc), exc, exc.__traceback__)
        code = 1
    leave(code, mark)
def _leave(code, mark):
    import atexit, os, sys
    threading = sys.modules.get("threading")
    if threading is not None:
        threading._shutdown()  # waits for non-daemon threads, as the interpreter's exit does
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:
            code = code or 120  # as the interpreter reports an unflushable stdout
    try:  # the end of the run, after all its output: the host need not wait for the exit
        os.write(1, b"\\0" + mark + b" %d\\n" % code)
    except OSError:
        pass
    os._exit(code)
_boot()
"""
"""What the sandbox runs: it loads the interpreter (and what tools use), then reads its
program on stdin, writes it to ``/scratch/main.py`` and runs it as ``python3 main.py``
would, in the same process. Nothing of the host is in it.

It leaves as the interpreter's exit would, as far as anyone can see (non-daemon threads
joined, ``atexit`` handlers run, standard streams flushed, the same exit status), then with
``os._exit``: the sandbox is destroyed next, so the interpreter's own teardown (modules,
objects: ~10 ms of a pooled call on a loaded machine) is skipped, and with it only what
``__del__`` methods would print during that teardown.

The first line on stdin is a mark the host chose for this run; the last thing the sandbox
writes to stdout is NUL, the mark and the exit status (``supervise.END``), so that the host
has the run's whole output and status without waiting for the sandbox's processes and
namespaces to be torn down (a pooled run's are destroyed after, off the caller's path). A
program that forges that line can only end its own run early: its tree is killed next."""

PYTHON_ARGS = ("-B", "-E", "-s", "-c", BOOT)
"""Interpreter flags: no bytecode, ignore PYTHON* variables, no user site-packages."""


@runtime_checkable
class Runtime(Protocol):
    """One way of running untrusted code. Implementations never run it unsandboxed."""

    name: str

    def available(self) -> str | None:
        """None when the runtime works here, else why not (and what to install)."""

    def enforcement(self) -> dict[str, str]:
        """How each limit (``Limits`` field) and isolation property is enforced."""

    def start(self, limits: Limits, root: Path | None = None) -> Warm:
        """A sandbox for one run under ``limits``, started and waiting for its program.

        Its host-side directories go under ``root`` (default: the system's temporary
        directory). Raises ``SandboxFailedError`` when it cannot be set up.
        """


class Warm:
    """A started sandbox: ``run`` hands it its one program, ``discard`` destroys it unused.

    The runtime supplies how to watch it (``cpu_usage``, ``kill``), how to read its outcome
    (``interpret``: may raise ``SandboxFailedError``) and how to remove everything it made
    on the host (``cleanup``, always called exactly once).
    """

    def __init__(
        self,
        runtime: str,
        limits: Limits,
        spawned: Spawned,
        *,
        scratch: Scratch,
        interpret: Callable[[Outcome], SandboxResult],
        cleanup: Callable[[], None],
        cpu_usage: CpuProbe | None = None,
        kill: Killer | None = None,
    ) -> None:
        self.runtime = runtime
        self.limits = limits
        self.spawned = spawned
        self.scratch = scratch
        self._interpret = interpret
        self._cleanup = cleanup
        self._cpu_usage = cpu_usage
        self._kill = kill
        self.defer: Callable[[Callable[[], None]], None] | None = None
        """Where to hand the removal of what is left on the host once the run is over (a
        pool's cleaner, off the caller's path); None: done before ``run`` returns."""

    def alive(self) -> bool:
        """Still waiting for its program (it did not die meanwhile)."""
        return self.spawned.alive()

    def run(self, source: str) -> SandboxResult:
        """Run ``source`` as ``/scratch/main.py``; the sandbox is destroyed after."""
        try:
            outcome = self.spawned.finish(
                source.encode("utf-8", "surrogateescape"),
                self.limits,
                cpu_usage=self._cpu_usage,
                kill=self._kill,
                marked=True,
                early=self.defer is not None,  # a pool's cleaner tears it down after
            )
            result = self._interpret(outcome)
            full = self.scratch.full()
        finally:
            # The sandbox's processes are gone by now (reaped, or killed through its cgroup
            # by the cleanup); what is left is its empty cgroup, scratch and directories.
            if self.defer is not None:
                self.defer(self._finish)
            else:
                self._finish()
        return result.model_copy(update={"disk_full": full})

    def discard(self) -> None:
        """Destroy it without running anything."""
        try:
            self.spawned.abort(self._kill)
        finally:
            self._finish()

    def _finish(self) -> None:
        try:
            self.spawned.abort(self._kill)  # a run that ended early: its tree, now
            self._cleanup()
        finally:
            self.scratch.remove()


def start_or_clean(build: Callable[[], Warm], *cleanups: Callable[[], None]) -> Warm:
    """``build()``, running ``cleanups`` (in order) when it fails."""
    try:
        return build()
    except BaseException:
        for cleanup in cleanups:
            with contextlib.suppress(Exception):
                cleanup()
        raise


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

    def start(self, limits: Limits, root: Path | None = None) -> Warm:
        raise NotImplementedError

    def run(self, source: str, limits: Limits, root: Path | None = None) -> SandboxResult:
        """A cold run: start a sandbox and run ``source`` in it at once."""
        return self.start(limits, root).run(source)

    def _smoke_test(self, what: str, wall_s: float) -> str | None:
        """Run ``print("ok")`` in this runtime: None when it works, else why it does not."""
        try:
            probe = self.run('print("ok")', Limits(wall_s=wall_s))
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
