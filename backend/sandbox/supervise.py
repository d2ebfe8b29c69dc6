"""Watch one sandbox process tree from the outside: wall time, CPU time and output limits.

Every runtime starts its command line as a ``Spawned`` (in a new session, its stdin a pipe):
the sandbox comes up and waits for its program. ``Spawned.finish`` then writes the program to
stdin and closes it, reads stdout and stderr without blocking (keeping at most
``Limits.output_bytes`` of them together), and kills the run when it goes past its wall time,
past its CPU time (when the runtime can measure the CPU its whole tree used), or past its
output limit; the limits count from the program's delivery, so a sandbox kept warm loses
nothing by waiting. ``supervise`` does both at once. The kernel-side limits (rlimits,
cgroups, namespaces) are the runtime's job.

Killing is two-staged. The runtime's own ``kill`` stops the sandbox *below* the supervised
process, which then reaps what is left and exits by itself (so nothing is left for the host's
init to reap); if it has not exited ``ESCALATE_S`` later, its children and its whole process
group get SIGKILL. The runtime's kill runs on its own thread while the pipes keep being
drained: a sandbox blocked on a full pipe can make even ``docker kill`` wait.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shared_api.sandbox import KilledReason, Limits, SandboxResult

POLL_S = 0.05
"""How often CPU usage is sampled while a run is alive (only when it can be measured)."""

LINGER_S = 1.0
"""How long output pipes may stay open after the supervised process exited."""

ESCALATE_S = 2.0
"""How long after the runtime's kill the supervised process may take to exit by itself (its
pipes are drained meanwhile)."""

EXIT_GRACE_S = 0.25
"""After a run's END line, how long its processes may take to exit by themselves before
``abort`` kills them (never past the run's wall time)."""

HOST_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
"""The environment of the runtime's own processes (bwrap, runsc...) outside the sandbox."""

CpuProbe = Callable[[], float | None]
Killer = Callable[[int], None]


@dataclass
class Outcome:
    """What ``supervise`` saw; a runtime turns it into a ``SandboxResult``."""

    returncode: int
    """Of the supervised process, as ``subprocess`` reports it (-N: killed by signal N)."""
    stdout: bytes
    stderr: bytes
    truncated: tuple[bool, bool]
    killed_reason: KilledReason | None
    duration_s: float
    rusage_cpu_s: float
    """User + system CPU of the process and of the descendants reaped below it: not always
    the whole tree (bwrap's monitor exits without reaping its pid-1 helper)."""
    cpu_s: float | None = field(default=None)
    """CPU of the whole tree from the runtime's probe (a cgroup), when there is one."""

    @property
    def status(self) -> int:
        """The exit status in shell convention: 128 + N after signal N."""
        return self.returncode if self.returncode >= 0 else 128 - self.returncode


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (none when it is gone)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        with contextlib.suppress(OSError, ValueError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def kill_children(pid: int) -> bool:
    """SIGKILL every direct child of ``pid``; False when it has none (or is gone)."""
    found = children(pid)
    for child in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    return bool(found)


def kill_tree(pid: int) -> None:
    """The last resort: SIGKILL ``pid``'s children and its whole process group."""
    kill_children(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def supervise(
    argv: Sequence[str],
    limits: Limits,
    *,
    program: bytes = b"",
    cpu_usage: CpuProbe | None = None,
    kill: Killer | None = None,
    pass_fds: Sequence[int] = (),
    env: Mapping[str, str] | None = None,
) -> Outcome:
    """Start ``argv``, hand it ``program`` on stdin and run it to completion or until a limit
    is hit; never leaves it running. (``Spawned`` does the same in two steps.)"""
    return Spawned(argv, pass_fds=pass_fds, env=env).finish(
        program, limits, cpu_usage=cpu_usage, kill=kill
    )


class Spawned:
    """A started command waiting for its program on stdin (a sandbox that is warm).

    The command gets ``env`` (by default only ``HOST_ENV``) and runs in ``/`` in a new
    session: nothing of this process's environment or working directory reaches it (a
    sandbox can read its own init's /proc/1/environ). ``finish`` then delivers the program,
    closes stdin and supervises the run; its limits count from that moment.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        pass_fds: Sequence[int] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.proc = subprocess.Popen(  # noqa: S603 - argv is built by the runtime, not the script
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
            env=dict(env if env is not None else HOST_ENV),
            cwd="/",
        )
        self.pidfd = os.pidfd_open(self.proc.pid)
        self._done = False
        self._reaped = False
        self._exit_by = 0.0  # after its END line: until when it may take to exit by itself

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        """Still waiting (it has not exited by itself)."""
        return not self._done and self.proc.poll() is None

    def finish(
        self,
        program: bytes,
        limits: Limits,
        *,
        cpu_usage: CpuProbe | None = None,
        kill: Killer | None = None,
        marked: bool = False,
        early: bool = False,
    ) -> Outcome:
        """Deliver ``program`` and watch the run (see ``supervise``); once only.

        ``cpu_usage`` returns the CPU seconds the whole run has used so far (None if
        unknown); what it read before delivery is not counted. ``kill(pid)`` stops the
        sandbox under the supervised process so that it can reap and exit by itself;
        without one, a kill is ``kill_tree``.

        ``marked`` (a sandbox running ``base.BOOT``): the program goes after a line with a
        fresh mark, and the END line the sandbox writes with that mark on stdout ends the
        run's output (what follows is dropped). With ``early``, the run is over then: the
        outcome is returned at once, its status the one reported, and the process is left
        to ``abort``, which must follow (off the caller's path, in a pool's cleaner).
        """
        if self._done:
            raise RuntimeError("a started sandbox runs one program only")
        self._done = True
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        probe = _since_now(cpu_usage)
        started = time.monotonic()
        mark = os.urandom(8).hex().encode() if marked else None
        if mark is not None:
            program = mark + b"\n" + program
        watcher = _Watcher(
            proc, self.pidfd, limits, probe, kill or kill_tree, started, program, mark, early
        )
        usage = None
        try:
            if not watcher.watch():
                kill_tree(proc.pid)  # gave up on it (it lingered, or ignored the runtime's kill)
        except BaseException:
            kill_tree(proc.pid)
            raise
        finally:
            if watcher.killer is not None:
                watcher.killer.join(timeout=ESCALATE_S)
            if not (early and watcher.reported is not None):
                usage = self._reap()
            duration = time.monotonic() - started
        if usage is None:  # ended by its END line: still running its exit, reaped by abort
            self._exit_by = min(time.monotonic() + EXIT_GRACE_S, watcher.deadline)
        return _outcome(watcher, proc.returncode, usage, duration, probe)

    def abort(self, kill: Killer | None = None) -> None:
        """Stop it without running anything (a warm sandbox that is not needed), or stop
        and reap what is left of a run that ended by its END line."""
        if self._reaped:
            return
        self._done = True
        if self._exit_by > 0:  # its END line came: it is exiting by itself, give it a moment
            with contextlib.suppress(OSError, ValueError):
                select.select([self.pidfd], [], [], max(0.0, self._exit_by - time.monotonic()))
            if self.proc.poll() is not None:
                self._reap()
                return
        (kill or kill_tree)(self.proc.pid)
        deadline = time.monotonic() + ESCALATE_S
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if self.proc.poll() is None:
            kill_tree(self.proc.pid)
        self._reap()

    def _reap(self) -> resource.struct_rusage:
        self._reaped = True
        proc = self.proc
        if proc.returncode is None:
            _, wait_status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(wait_status)
        else:  # reaped by poll(): its rusage is gone with it
            usage = resource.struct_rusage((0.0,) * 2 + (0,) * 14)
        os.close(self.pidfd)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return usage


def _since_now(cpu_usage: CpuProbe | None) -> CpuProbe | None:
    """``cpu_usage`` less what it reads now (the sandbox's start-up is not the run's)."""
    if cpu_usage is None:
        return None
    base = cpu_usage() or 0.0

    def used() -> float | None:
        value = cpu_usage()
        return None if value is None else max(0.0, value - base)

    return used


class _Watcher:
    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        pidfd: int,
        limits: Limits,
        cpu_usage: CpuProbe | None,
        kill: Killer,
        started: float,
        program: bytes = b"",
        mark: bytes | None = None,
        early: bool = False,
    ) -> None:
        self.proc = proc
        self.early = early
        self.end = b"\0" + mark + b" " if mark is not None else None
        self._held = b""  # stdout that may be the start of the END line
        self.reported: int | None = None
        """The exit status from the END line, once it came."""
        self.program = memoryview(program)
        self.pidfd = pidfd
        self.limits = limits
        self.cpu_usage = cpu_usage
        self._kill = kill
        self.deadline = started + limits.wall_s
        self.out = (bytearray(), bytearray())
        self.truncated = [False, False]
        self.reason: KilledReason | None = None
        self.killed_at = 0.0
        self.killer: threading.Thread | None = None
        self.room = limits.output_bytes

    def kill(self, reason: KilledReason) -> None:
        if self.reason is None:
            self.reason = reason
            self.killed_at = time.monotonic()
            self.killer = threading.Thread(
                target=self._kill, args=(self.proc.pid,), name="sandbox-kill", daemon=True
            )
            self.killer.start()

    def watch(self) -> bool:
        """Read until both pipes are at EOF and the process has exited (True), or give up
        (False) when that takes too long after an exit or a kill."""
        assert self.proc.stdout is not None and self.proc.stderr is not None
        with selectors.DefaultSelector() as sel:
            for index, stream in enumerate((self.proc.stdout, self.proc.stderr)):
                os.set_blocking(stream.fileno(), False)
                sel.register(stream.fileno(), selectors.EVENT_READ, index)
            sel.register(self.pidfd, selectors.EVENT_READ, -1)
            assert self.proc.stdin is not None
            if self.program:
                os.set_blocking(self.proc.stdin.fileno(), False)
                sel.register(self.proc.stdin.fileno(), selectors.EVENT_WRITE, -2)
            else:
                self.proc.stdin.close()
            return self._loop(sel)

    def _loop(self, sel: selectors.BaseSelector) -> bool:
        exited_at: float | None = None
        while sel.get_map():  # until both pipes are at EOF and the process has exited
            now = time.monotonic()
            if self.reason is None:
                self._check_limits(now)
            ends = []
            if exited_at is not None:
                ends.append(exited_at + LINGER_S)
            if self.reason is not None:
                ends.append(self.killed_at + ESCALATE_S)
            give_up_at = min(ends) if ends else None
            if give_up_at is not None and now >= give_up_at:
                return False  # something still holds its pipes, or it ignored the kill
            wake = [give_up_at] if give_up_at is not None else []
            if self.reason is None:
                wake.append(self.deadline)
                if self.cpu_usage is not None:
                    wake.append(now + POLL_S)
            for key, _ in sel.select(max(0.0, min(wake) - now)):
                if key.data == -1:
                    sel.unregister(self.pidfd)
                    exited_at = time.monotonic()
                elif key.data == -2:
                    self._write(sel)
                else:
                    self._read(sel, key.fd, key.data)
            if self.early and self.reported is not None and self.reason is None:  # END
                self._drain_stderr(sel)
                return True
        return True

    def _drain_stderr(self, sel: selectors.BaseSelector) -> None:
        """Read what stderr holds now (the sandbox flushed it before its END line), without
        waiting for more."""
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while fd in sel.get_map() and self.reason is None:
            before = len(self.out[1])
            self._read(sel, fd, 1)
            if len(self.out[1]) == before:
                return

    def _write(self, sel: selectors.BaseSelector) -> None:
        """Hand the sandbox the next part of its program; close stdin after the last."""
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            sent = os.write(stdin.fileno(), self.program)
        except BlockingIOError:
            return
        except OSError:  # it is gone, or closed stdin: the outcome will say
            sent = len(self.program)
        self.program = self.program[sent:]
        if not self.program:
            sel.unregister(stdin.fileno())
            stdin.close()

    def _check_limits(self, now: float) -> None:
        if now >= self.deadline:
            self.kill("wall_time")
        elif self.cpu_usage is not None:
            used = self.cpu_usage()
            if used is not None and used > self.limits.cpu_s:
                self.kill("cpu_time")

    def _read(self, sel: selectors.BaseSelector, fd: int, index: int) -> None:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            sel.unregister(fd)
            if index != 0 or not self._held:
                return
            chunk, self._held = self._held, b""  # no END line after all: it was output
        elif index == 0 and self.end is not None:
            if self.reported is not None:
                return  # written after the END line: not the run's
            chunk = self._split_end(chunk)
        if self.reason == "output_limit":
            return  # draining after the kill: the limit is already reached
        keep = chunk[: self.room]
        self.out[index].extend(keep)
        self.room -= len(keep)
        if len(keep) < len(chunk):
            self.truncated[index] = True
            self.kill("output_limit")

    def _split_end(self, chunk: bytes) -> bytes:
        """The run's own stdout in ``chunk``: up to the END line (whose status it notes), less
        a tail held back while it may be the start of that line."""
        assert self.end is not None
        data, self._held = self._held + chunk, b""
        at = data.find(self.end)
        if at >= 0:
            newline = data.find(b"\n", at)
            if newline < 0:
                self._held = data[at:]  # the rest of the line is on its way
                return data[:at]
            status = data[at + len(self.end) : newline]
            if self.reason is None and status.isdigit() and int(status) <= 255:
                self.reported = int(status)
                return data[:at]
            return data  # not a status: plain output
        start = data.rfind(b"\0", max(0, len(data) - len(self.end)))
        if start >= 0 and self.end.startswith(data[start:]):
            self._held = data[start:]
            return data[:start]
        return data


def to_result(
    outcome: Outcome,
    runtime: str,
    limits: Limits,
    *,
    oom_killed: bool = False,
    cpu_known: bool = True,
) -> SandboxResult:
    """The typed result, with kernel-side kills (OOM, RLIMIT_CPU) recognised.

    ``exit_code`` is None whenever the run was killed, so that it means the same on every
    runtime whatever did the killing. ``cpu_known`` False (no cgroup measured the whole
    tree) reports ``cpu_s`` as None rather than an undercount.
    """
    reason = outcome.killed_reason
    cpu = outcome.cpu_s if outcome.cpu_s is not None else outcome.rusage_cpu_s
    if reason is None and oom_killed:
        reason = "memory"
    # RLIMIT_CPU sends SIGXCPU at the soft limit, SIGKILL at the hard one (when the script
    # ignored SIGXCPU); the CPU measured tells that SIGKILL from others.
    xcpu = outcome.status == 128 + signal.SIGXCPU
    hard = outcome.status == 128 + signal.SIGKILL and cpu >= limits.cpu_s * 0.9
    if reason is None and (xcpu or hard):
        reason = "cpu_time"
    return SandboxResult(
        runtime=runtime,
        exit_code=None if reason is not None else outcome.status,
        stdout=outcome.stdout.decode("utf-8", "replace"),
        stderr=outcome.stderr.decode("utf-8", "replace"),
        stdout_truncated=outcome.truncated[0],
        stderr_truncated=outcome.truncated[1],
        timed_out=reason == "wall_time",
        killed_reason=reason,
        duration_s=round(outcome.duration_s, 4),
        cpu_s=round(cpu, 4) if cpu_known else None,
        limits=limits,
    )


def _outcome(
    watcher: _Watcher,
    returncode: int | None,
    usage: resource.struct_rusage | None,
    duration: float,
    probe: CpuProbe | None,
) -> Outcome:
    """The run's outcome; ``usage`` None: it ended by its END line (its status the one
    reported, its exit still under way, so no rusage and no kill reason)."""
    ended = usage is None
    reported = watcher.reported if watcher.reported is not None else -1
    return Outcome(
        returncode=reported if ended or returncode is None else returncode,
        stdout=bytes(watcher.out[0]),
        stderr=bytes(watcher.out[1]),
        truncated=(watcher.truncated[0], watcher.truncated[1]),
        killed_reason=None if ended else watcher.reason,
        duration_s=duration,
        rusage_cpu_s=0.0 if usage is None else usage.ru_utime + usage.ru_stime,
        cpu_s=probe() if probe is not None else None,
    )
