"""The bubblewrap runtime: namespaces, rlimits, an unprivileged host uid and seccomp.

The command line, outermost first:

1. (root, when a cgroup can be made) ``/bin/sh`` joins the run's memory/pids/cpuacct cgroup,
2. (root) ``unshare --pid --fork --kill-child`` makes a pid namespace around the whole run, so
   that nothing of it (not even a zombie) outlives the run,
3. (root) ``setpriv`` drops to uid/gid 65534 with no groups, no capabilities (bounding set
   emptied) and no_new_privs, *before* bwrap runs: bwrap started as host root with a uid map
   would give the sandbox host root's files,
4. ``bwrap`` makes new user, mount, pid, net, ipc, uts and cgroup namespaces: the root is
   empty but for /usr (and /bin, /lib... links) read-only, a private /proc and /dev, and the
   scratch directory read-write at /scratch; no /etc, /root, /home or /tmp; the environment
   is cleared; the seccomp filter is loaded; the sandbox dies with its parent,
5. ``prlimit``, *inside* the new user namespace, sets the rlimits, so RLIMIT_NPROC counts
   this run's processes only (the kernel counts it per user namespace),
6. ``python3 -B -E -s -c BOOT``, which waits for its program on stdin.

/scratch is a tmpfs of ``Limits.disk_mb``: mounted on the host as root (see ``scratch``),
else made by bwrap itself (``--size --tmpfs``) inside the sandbox.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

from backend.sandbox import cgroups, seccomp
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
from backend.sandbox.scratch import Scratch, owner_tag
from backend.sandbox.supervise import (
    Outcome,
    Spawned,
    children,
    kill_children,
    kill_tree,
    to_result,
)
from shared_api.errors import SandboxFailedError
from shared_api.sandbox import Limits, SandboxResult

_SETUP_ERRORS = (b"bwrap: ", b"setpriv: ", b"prlimit: ", b"unshare: ", b"sh: ")


class BubblewrapRuntime(ProbedRuntime):
    name = "bubblewrap"

    def __init__(self, *, uid: int = SANDBOX_UID, use_cgroups: bool = True) -> None:
        self.uid = uid
        self.use_cgroups = use_cgroups
        self._disable_userns = False

    def _check(self) -> str | None:
        bwrap = find_tool("bwrap")
        if bwrap is None:
            return "bwrap not found on PATH: apt-get install bubblewrap"
        if is_root() and (find_tool("setpriv") is None or find_tool("unshare") is None):
            return "setpriv or unshare not found on PATH: apt-get install util-linux"
        if _usr_tool("prlimit") is None:
            return "/usr/bin/prlimit not found: apt-get install util-linux"
        if host_python() is None:
            return "no python3 under /usr for the sandbox to run: apt-get install python3"
        if not seccomp.supported():
            return "no seccomp filter for this CPU architecture (x86_64 and aarch64 only)"
        help_text = subprocess.run(  # noqa: S603
            [bwrap, "--help"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
        self._disable_userns = "--disable-userns" in help_text
        return self._smoke_test("bubblewrap", wall_s=20)

    def enforcement(self) -> dict[str, str]:
        cgroup = cgroups.describe()
        return {
            "isolation": "bwrap: new user/mount/pid/net/ipc/uts/cgroup namespaces, read-only "
            "/usr, only /scratch writable, no /etc /root /home /tmp, cleared environment, "
            f"host uid {self.uid if is_root() else os.getuid()}, no capabilities, "
            "no_new_privs, seccomp deny-list",
            "network": "none (empty network namespace)",
            "wall_s": "killed from outside (the sandbox's pid-namespace init, so the kernel "
            "kills everything in it)",
            "cpu_s": "RLIMIT_CPU per process; whole tree from outside via the cpuacct cgroup"
            + ("" if cgroup.startswith("v") else " (unavailable: per process only)"),
            "memory_mb": "RLIMIT_AS per process; memory cgroup for the whole tree"
            + ("" if cgroup.startswith("v") else " (unavailable: per process only)"),
            "pids": "RLIMIT_NPROC inside the run's own user namespace (per run); pids cgroup",
            "file_size_mb": "RLIMIT_FSIZE",
            "disk_mb": "/scratch is a tmpfs of that size (the only writable place)",
            "output_bytes": "read by the supervisor, killed past the limit",
            "cgroup": cgroup,
        }

    def start(self, limits: Limits, root: Path | None = None) -> Warm:
        scratch = Scratch.create(limits.disk_mb, root)
        group: cgroups.RunCgroup | None = None

        def cleanup() -> None:
            if group is not None:
                group.close()

        def build() -> Warm:
            nonlocal group
            group = self._cgroup(limits)
            spawned = self._spawn(scratch, limits, group)
            return Warm(
                self.name,
                limits,
                spawned,
                scratch=scratch,
                interpret=lambda outcome: self._interpret(outcome, limits, group),
                cleanup=cleanup,
                cpu_usage=group.cpu_s if group is not None else None,
                kill=_kill if is_root() else kill_tree,
            )

        return start_or_clean(build, cleanup, scratch.remove)

    def _spawn(self, scratch: Scratch, limits: Limits, group: cgroups.RunCgroup | None) -> Spawned:
        read_fd, write_fd = os.pipe()
        try:
            os.write(write_fd, seccomp.build_filter())  # bwrap reads it once it runs
            os.close(write_fd)
            write_fd = -1
            argv = self._argv(scratch, limits, read_fd)
            if group is not None:
                argv = group.wrap(argv)
            return Spawned(argv, pass_fds=(read_fd,))
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)

    def _interpret(
        self, outcome: Outcome, limits: Limits, group: cgroups.RunCgroup | None
    ) -> SandboxResult:
        oom = group.oom_killed() if group is not None else False
        if (
            outcome.killed_reason is None
            and outcome.status == 1
            and not outcome.stdout
            and outcome.stderr.startswith(_SETUP_ERRORS)
        ):
            raise SandboxFailedError(
                "bubblewrap could not set up the sandbox: "
                + outcome.stderr.decode("utf-8", "replace").strip(),
                runtime=self.name,
            )
        return to_result(outcome, self.name, limits, oom_killed=oom, cpu_known=group is not None)

    def _cgroup(self, limits: Limits) -> cgroups.RunCgroup | None:
        if not (self.use_cgroups and is_root()):
            return None
        try:
            return cgroups.RunCgroup.create(
                f"bwrap-{owner_tag()}-{uuid.uuid4().hex[:12]}",
                memory_bytes=(limits.memory_mb + limits.disk_mb) * MIB,  # tmpfs pages count
                pids=limits.pids + 4,  # + sh/setpriv/bwrap's own processes
            )
        except OSError:
            return None  # rlimits alone still enforce every limit, per process

    def _argv(self, scratch: Scratch, limits: Limits, seccomp_fd: int) -> list[str]:
        bwrap, prlimit, python = find_tool("bwrap"), _usr_tool("prlimit"), host_python()
        if bwrap is None or prlimit is None or python is None:
            raise SandboxFailedError("bubblewrap, prlimit or python3 disappeared; reinstall")
        argv: list[str] = []
        if is_root():
            # A fresh pid namespace whose init is bwrap's monitor: when it exits, the kernel
            # kills and reaps everything below it, so no zombie is left to a lazy host init
            # (bwrap's own pid-1 helper outlives the monitor by a moment otherwise).
            argv += [find_tool("unshare") or "unshare", "--pid", "--fork", "--kill-child", "--"]
            argv += [
                find_tool("setpriv") or "setpriv",
                f"--reuid={self.uid}",
                f"--regid={self.uid}",
                "--clear-groups",
                "--bounding-set=-all",
                "--inh-caps=-all",
                "--no-new-privs",
                "--",
            ]
        argv += [bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session"]
        if self._disable_userns:
            argv.append("--disable-userns")
        argv += ["--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
        for name, target in root_entries():
            if target is None:
                argv += ["--ro-bind", f"/{name}", f"/{name}"]
            else:
                argv += ["--symlink", target, f"/{name}"]
        argv += ["--proc", "/proc", "--dev", "/dev"]
        if scratch.path is not None:
            argv += ["--bind", str(scratch.path), SCRATCH]
        else:
            argv += ["--perms", "0700", "--size", str(scratch.size_mb * MIB), "--tmpfs", SCRATCH]
        argv += ["--chdir", SCRATCH, "--clearenv"]
        for key, value in SANDBOX_ENV.items():
            argv += ["--setenv", key, value]
        argv += ["--seccomp", str(seccomp_fd), "--", prlimit]
        argv += [f"--{name}={soft}:{hard}" for name, (soft, hard) in rlimits(limits).items()]
        argv += ["--", str(python), *PYTHON_ARGS]
        return argv


def _kill(pid: int) -> None:
    # ``pid`` is `unshare`; its child, bwrap's monitor, is the init of the run's pid
    # namespace, and the monitor's child is the init of the sandbox's own pid namespace.
    # Killing that one makes the kernel kill everything in the sandbox; the monitor then
    # exits (137) and `unshare` after it, having reaped all. (Killing the monitor itself
    # works too, but makes `unshare` complain on stderr as it exits.)
    for monitor in children(pid):
        if kill_children(monitor):
            return
    if not kill_children(pid):
        kill_tree(pid)


def _usr_tool(name: str) -> str | None:
    """A tool that must exist inside the sandbox too, so under /usr."""
    for directory in ("/usr/bin", "/usr/sbin", "/usr/local/bin"):
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    return None
