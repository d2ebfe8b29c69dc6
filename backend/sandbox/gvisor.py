"""The gVisor runtime: ``runsc run`` with a generated OCI bundle, on the ptrace platform.

The script runs against gVisor's user-space kernel, not the host's. The bundle's root is an
empty read-only directory; /usr (and the /bin, /lib... links) is bound read-only, the
scratch directory read-write at /scratch; the process runs as uid/gid 65534 with no
capabilities and no_new_privs; there is no network (``--network=none``). Each run gets its
own state directory, so runs never share or race on container ids.

gVisor does not enforce RLIMIT_CPU, so CPU time is enforced from outside: the whole runsc
process tree runs in a fresh cgroup whose cpuacct usage is polled. A run past its CPU (or
wall, or output) limit is stopped with ``runsc kill``, then anything left in the cgroup is
killed and ``runsc delete -force`` removes a container that ``runsc run`` did not. The same
cgroup caps memory (the limit plus gVisor's own overhead) and host tasks; inside, RLIMIT_AS,
RLIMIT_NPROC and RLIMIT_FSIZE apply to the script. A small subreaper (the host's python3)
runs ``runsc run`` so that the sandbox and gofer processes it leaves behind are reaped
before the run returns, not whenever the host's init gets to them.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

from backend.sandbox import cgroups
from backend.sandbox.base import (
    MIB,
    PYTHON_ARGS,
    SANDBOX_ENV,
    SANDBOX_UID,
    SCRATCH,
    ProbedRuntime,
    Warm,
    find_tool,
    host_python,
    is_root,
    rlimits,
    root_entries,
    start_or_clean,
)
from backend.sandbox.scratch import Scratch, make_dir, owner_tag, remove
from backend.sandbox.supervise import Outcome, Spawned, to_result
from shared_api.errors import SandboxFailedError
from shared_api.sandbox import Limits, SandboxResult

OVERHEAD_MB = 256
"""Host memory allowed to gVisor itself (sentry, gofer) on top of ``Limits.memory_mb``."""


def host_tasks(limits: Limits) -> int:
    """The host pids-cgroup backstop for one gVisor sandbox.

    On the ptrace platform each guest task has host stub threads and the sentry's Go threads
    grow with activity: a fork bomb held to 16 guest processes measured 352 host tasks, to
    32 measured 480. Too low a backstop crashes the sentry (exit 2), so this leaves room;
    the guest's own limit is RLIMIT_NPROC inside gVisor.
    """
    return 16 * limits.pids + 256


class GvisorRuntime(ProbedRuntime):
    name = "runsc"

    def __init__(self, *, platform: str = "ptrace") -> None:
        # The kvm platform hangs on this project's VMs; ptrace works everywhere.
        self.platform = platform

    def _check(self) -> str | None:
        if find_tool("runsc") is None:
            return "runsc not found on PATH: apt-get install runsc"
        if not is_root():
            return "runsc needs root here (rootless gVisor is not supported)"
        if host_python() is None:
            return "no python3 under /usr for the sandbox to run: apt-get install python3"
        try:
            probe_group = f"probe-{uuid.uuid4().hex[:12]}"
            cgroups.RunCgroup.create(probe_group, memory_bytes=256 * MIB, pids=64).close()
        except OSError as exc:
            return f"cannot create a cgroup to enforce CPU time and memory on runsc: {exc}"
        return self._smoke_test("runsc", wall_s=30)

    def enforcement(self) -> dict[str, str]:
        return {
            "isolation": f"gVisor user-space kernel ({self.platform} platform), OCI bundle: "
            "read-only root, /usr read-only, only /scratch writable (and gVisor's own "
            f"in-memory tmpfs), uid {SANDBOX_UID}, no capabilities, no_new_privs",
            "network": "none (runsc --network=none)",
            "wall_s": "from outside: runsc kill, then the cgroup, then runsc delete -force",
            "cpu_s": "from outside: the run's cpuacct cgroup is polled and killed past the "
            "limit (gVisor ignores RLIMIT_CPU)",
            "memory_mb": f"RLIMIT_AS inside; host memory cgroup at the limit + {OVERHEAD_MB} MB "
            "for gVisor itself",
            "pids": "RLIMIT_NPROC inside gVisor; host pids cgroup as a backstop",
            "file_size_mb": "RLIMIT_FSIZE inside gVisor",
            "disk_mb": "/scratch is a tmpfs of that size (the only writable place)",
            "output_bytes": "read by the supervisor, killed past the limit",
            "cgroup": cgroups.describe(),
        }

    def start(self, limits: Limits, root: Path | None = None) -> Warm:
        runsc = find_tool("runsc")
        if runsc is None:
            raise SandboxFailedError("runsc disappeared from PATH: apt-get install runsc")
        try:
            scratch = Scratch.create(limits.disk_mb, root)
            work = make_dir("runsc", root)
        except OSError as exc:
            raise SandboxFailedError(f"could not prepare the runsc sandbox: {exc}") from exc
        cid = f"entropic-{owner_tag()}-{uuid.uuid4().hex[:12]}"
        state, log = work / "state", work / "runsc.log"
        base = [runsc, "--root", str(state), "--log", str(log)]
        group: cgroups.RunCgroup | None = None

        def cleanup() -> None:
            if state.exists() and any(state.iterdir()):  # runsc run did not delete it itself
                subprocess.run(  # noqa: S603
                    [*base, "delete", "-force", cid], capture_output=True, timeout=30, check=False
                )
            if group is not None:
                group.close()  # kills anything still left in the run's cgroup
            remove(work)

        def build() -> Warm:
            nonlocal group
            try:
                bundle = self._bundle(work, scratch, limits)
                group = cgroups.RunCgroup.create(
                    cid,
                    memory_bytes=(limits.memory_mb + limits.disk_mb + OVERHEAD_MB) * MIB,
                    pids=host_tasks(limits),
                )
                run_group = group
                spawned = Spawned(group.wrap(self._argv(base, bundle, cid)))
            except OSError as exc:
                raise SandboxFailedError(f"could not prepare the runsc sandbox: {exc}") from exc
            return Warm(
                self.name,
                limits,
                spawned,
                scratch=scratch,
                interpret=lambda outcome: self._interpret(outcome, limits, run_group, log),
                cleanup=cleanup,
                cpu_usage=group.cpu_s,
                kill=lambda pid: _kill(pid, base, cid, run_group),
            )

        return start_or_clean(build, cleanup, scratch.remove)

    def _argv(self, base: list[str], bundle: Path, cid: str) -> list[str]:
        return [
            # `runsc run` leaves its sandbox and gofer processes to the host's init to
            # reap (which may take its time); a subreaper reaps them before it exits.
            str(host_python() or "python3"),
            "-I",
            "-S",
            "-c",
            _REAPER,
            *base,
            f"--platform={self.platform}",
            "--network=none",
            "--ignore-cgroups",  # we place the whole tree in our own cgroup instead
            "run",
            "--bundle",
            str(bundle),
            cid,
        ]

    def _interpret(
        self, outcome: Outcome, limits: Limits, group: cgroups.RunCgroup, log: Path
    ) -> SandboxResult:
        oom = group.oom_killed()
        error = None if outcome.killed_reason or oom else _logged_error(log)
        if error is not None:
            raise SandboxFailedError(f"runsc failed: {error}", runtime=self.name)
        return to_result(outcome, self.name, limits, oom_killed=oom)

    def _bundle(self, work: Path, scratch: Scratch, limits: Limits) -> Path:
        python = host_python()
        if python is None:
            raise SandboxFailedError("no python3 under /usr: apt-get install python3")
        bundle = work / "bundle"
        rootfs = bundle / "rootfs"
        for name in ("usr", "proc", "dev", "scratch"):
            (rootfs / name).mkdir(parents=True)
        mounts: list[dict[str, Any]] = [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "noexec", "mode=755", "size=1m"]},
            _bind("/usr", "/usr", readonly=True),
        ]  # fmt: skip
        for name, target in root_entries():
            if target is None:
                (rootfs / name).mkdir()
                mounts.append(_bind(f"/{name}", f"/{name}", readonly=True))
            else:
                (rootfs / name).symlink_to(target)
        if scratch.path is not None:
            mounts.append(_bind(str(scratch.path), SCRATCH, readonly=False))
        else:  # gVisor's own tmpfs, of the same size
            options = ["nosuid", "nodev", f"size={scratch.size_mb}m", "mode=0700",
                       f"uid={SANDBOX_UID}", f"gid={SANDBOX_UID}"]  # fmt: skip
            mounts.append(
                {"destination": SCRATCH, "type": "tmpfs", "source": "tmpfs", "options": options}
            )
        spec = {
            "ociVersion": "1.0.2",
            "process": {
                "terminal": False,
                "user": {"uid": SANDBOX_UID, "gid": SANDBOX_UID, "additionalGids": []},
                "args": [str(python), *PYTHON_ARGS],
                "env": [f"{k}={v}" for k, v in SANDBOX_ENV.items()],
                "cwd": SCRATCH,
                "capabilities": {
                    key: []
                    for key in ("bounding", "effective", "inheritable", "permitted", "ambient")
                },
                "rlimits": [
                    {"type": f"RLIMIT_{name.upper()}", "soft": soft, "hard": hard}
                    for name, (soft, hard) in rlimits(limits).items()
                ],
                "noNewPrivileges": True,
            },
            "root": {"path": "rootfs", "readonly": True},
            "hostname": "sandbox",
            "mounts": mounts,
            "linux": {
                "namespaces": [
                    {"type": kind} for kind in ("pid", "network", "ipc", "uts", "mount")
                ],
            },
        }
        (bundle / "config.json").write_text(json.dumps(spec, indent=1))
        return bundle


def _kill(reaper: int, base: list[str], cid: str, group: cgroups.RunCgroup) -> None:
    # `runsc kill` first: it stops the container through the sandbox in ~20 ms and the
    # sandbox then exits by itself, after which `delete -force` is quick. SIGKILLing the
    # sandbox's processes instead makes `delete -force` wait seconds for a sandbox that is
    # gone. Whatever has not exited a second later is killed through the cgroup, sparing
    # the reaper, which then reaps it all and exits.
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(  # noqa: S603
            [*base, "kill", cid, "KILL"], capture_output=True, timeout=5, check=False
        )
    if not group.wait_empty(timeout=1.0, spare=reaper):
        group.kill_all(spare=reaper)


_REAPER = """\
import ctypes, os, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
_, status = os.waitpid(pid, 0)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
sys.exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
"""
"""Runs ``runsc run`` as its child and waits for every orphan it leaves, then exits with its
status (the host's python3, as root, outside the sandbox)."""


def _bind(source: str, destination: str, *, readonly: bool) -> dict[str, Any]:
    options = ["rbind", "ro" if readonly else "rw", "nosuid", "nodev"]
    return {"destination": destination, "type": "bind", "source": source, "options": options}


def _logged_error(log: Path) -> str | None:
    """runsc's own error, from its log file (which the script cannot write to)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("level") == "error":
            return str(entry.get("msg", line))
    return None
