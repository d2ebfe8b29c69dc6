"""The Docker + gVisor runtime: ``docker run --runtime=runsc`` against a local image.

Chosen first when a Docker daemon answers, has the ``runsc`` runtime registered and holds the
image (default ``python:3.11-slim``; it is never pulled implicitly). The container has no
network, a read-only root, uid 65534, no capabilities, no_new_privs, and only the scratch
directory mounted (read-write at /scratch). Killing the ``docker run`` client does not stop
the container, so every kill is a ``docker kill``; the container is removed afterwards.

gVisor ignores RLIMIT_CPU, so the container's CPU time is read from its cgroup (found from
the id in ``--cidfile``) and the container killed past the limit; where that cgroup cannot
be found, the CPU limit is enforced as wall time (with ``--cpus=1`` the CPU used can never
exceed the wall time, so that is never looser than the limit). Docker has no ``--ulimit as``
and gVisor ignores RLIMIT_DATA, so a bootstrap sets RLIMIT_AS inside and execs python3.

Where runsc cannot build a network stack for the container ("cannot run with network enabled
in root network namespace", as on this project's VMs), register it in daemon.json with
``"runtimeArgs": ["--network=none"]``; the availability probe reports that error otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from backend.sandbox.base import (
    PYTHON_ARGS,
    SANDBOX_ENV,
    SANDBOX_UID,
    SCRATCH,
    ProbedRuntime,
    find_tool,
    rlimits,
)
from backend.sandbox.gvisor import OVERHEAD_MB, host_tasks
from backend.sandbox.supervise import HOST_ENV, supervise, to_result
from shared_api.errors import SandboxFailedError
from shared_api.sandbox import Limits, SandboxResult

DEFAULT_IMAGE = "python:3.11-slim"

_CGROUP_CPU_FILES = (
    "/sys/fs/cgroup/cpuacct/docker/{id}/cpuacct.usage",
    "/sys/fs/cgroup/cpu,cpuacct/docker/{id}/cpuacct.usage",
    "/sys/fs/cgroup/cpuacct/system.slice/docker-{id}.scope/cpuacct.usage",
    "/sys/fs/cgroup/cpu,cpuacct/system.slice/docker-{id}.scope/cpuacct.usage",
    "/sys/fs/cgroup/system.slice/docker-{id}.scope/cpu.stat",
    "/sys/fs/cgroup/docker/{id}/cpu.stat",
)


_SET_AS = (
    "import os, resource, sys; resource.setrlimit(resource.RLIMIT_AS, (%d, %d)); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def runtimes_from_info(info_json: str) -> set[str]:
    """The runtime names in ``docker info --format '{{json .Runtimes}}'`` output."""
    try:
        runtimes = json.loads(info_json)
    except json.JSONDecodeError:
        return set()
    return set(runtimes) if isinstance(runtimes, dict) else set()


class DockerGvisorRuntime(ProbedRuntime):
    name = "docker-gvisor"

    def __init__(self, *, image: str = DEFAULT_IMAGE, docker: str = "docker") -> None:
        self.image = image
        self.docker = docker

    def _check(self) -> str | None:
        docker = find_tool(self.docker)
        if docker is None:
            return "docker not found on PATH (optional: apt-get install docker.io runsc)"
        info = self._docker("info", "--format", "{{json .Runtimes}}", timeout=10)
        if info.returncode != 0:
            why = info.stderr.strip().splitlines()[-1:] or ["no answer"]
            return f"the Docker daemon does not answer: {why[0]}"
        if "runsc" not in runtimes_from_info(info.stdout):
            return (
                "Docker has no runsc runtime: apt-get install runsc && runsc install, "
                "then restart dockerd"
            )
        if self._docker("image", "inspect", self.image, timeout=10).returncode != 0:
            return f"image {self.image} is not present locally: docker pull {self.image}"
        return self._smoke_test("docker --runtime=runsc", wall_s=60)

    def _docker(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(  # noqa: S603
                [self.docker, *args], capture_output=True, text=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return subprocess.CompletedProcess([self.docker, *args], 1, "", str(exc))

    def enforcement(self) -> dict[str, str]:
        return {
            "isolation": f"Docker container on gVisor (runsc), image {self.image}, read-only "
            f"root, only /scratch mounted, uid {SANDBOX_UID}, --cap-drop=ALL, "
            "no-new-privileges",
            "network": "none (--network=none)",
            "wall_s": "docker kill from outside",
            "cpu_s": "from outside: the container's cgroup CPU usage is polled and it is "
            "docker-killed past the limit (gVisor ignores RLIMIT_CPU); as wall time with "
            "--cpus=1 where the cgroup is not found",
            "memory_mb": "RLIMIT_AS set inside by a bootstrap that then execs python3 (docker "
            f"has no --ulimit as); --memory at the limit + {OVERHEAD_MB} MB",
            "pids": "--ulimit nproc inside gVisor; --pids-limit as a backstop",
            "file_size_mb": "--ulimit fsize",
            "output_bytes": "read by the supervisor, docker-killed past the limit",
        }

    def command(self, scratch: Path, limits: Limits, name: str, cidfile: Path) -> list[str]:
        """The ``docker run`` command line for one run."""
        limit = rlimits(limits)
        # docker's --ulimit has no RLIMIT_AS (and gVisor ignores RLIMIT_DATA): a bootstrap
        # sets it inside, then execs the interpreter, so the script runs exactly as elsewhere.
        address_space = limit.pop("as")
        ulimits = [f"--ulimit={key}={soft}:{hard}" for key, (soft, hard) in limit.items()]
        memory = f"{limits.memory_mb + OVERHEAD_MB}m"
        argv = [
            self.docker, "run", "--rm", f"--name={name}", f"--cidfile={cidfile}",
            "--runtime=runsc", "--network=none", "--read-only",
            f"--user={SANDBOX_UID}:{SANDBOX_UID}", "--cap-drop=ALL",
            "--security-opt=no-new-privileges", "--ipc=private", "--hostname=sandbox",
            f"--memory={memory}", f"--memory-swap={memory}", "--cpus=1",
            f"--pids-limit={host_tasks(limits)}",
            *ulimits,
            f"--volume={scratch}:{SCRATCH}:rw", f"--workdir={SCRATCH}",
            *(f"--env={key}={value}" for key, value in SANDBOX_ENV.items()),
            "--log-driver=none",
            self.image, "python3", "-I", "-S", "-c", _SET_AS % address_space, *PYTHON_ARGS,
        ]  # fmt: skip
        return argv

    def run(self, scratch: Path, limits: Limits) -> SandboxResult:
        work = Path(tempfile.mkdtemp(prefix="entropic-docker-"))
        name = f"entropic-{uuid.uuid4().hex[:16]}"
        cidfile = work / "cid"
        started = time.monotonic()
        probe = _CpuProbe(cidfile, started)
        try:
            outcome = supervise(
                self.command(scratch, limits, name, cidfile),
                limits,
                cpu_usage=probe,
                kill=lambda _pid: self._kill(name),
                env=_docker_env(),
            )
        finally:
            self._docker("rm", "--force", name, timeout=30)
            shutil.rmtree(work, ignore_errors=True)
        if outcome.killed_reason is None and outcome.status == 125:
            raise SandboxFailedError(
                "docker could not run the container: "
                + outcome.stderr.decode("utf-8", "replace").strip(),
                runtime=self.name,
            )
        return to_result(outcome, self.name, limits, cpu_known=probe.path is not None)

    def _kill(self, name: str) -> None:
        with contextlib.suppress(Exception):
            self._docker("kill", name, timeout=10)


def _docker_env() -> dict[str, str]:
    """The docker client's environment: which daemon, context and config to use."""
    env = dict(HOST_ENV)
    for key in ("HOME", "DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_CERT_PATH"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


class _CpuProbe:
    """CPU seconds of the container, from its cgroup (the last reading once the container is
    gone); elapsed time while that cgroup is unknown."""

    def __init__(self, cidfile: Path, started: float) -> None:
        self.cidfile = cidfile
        self.started = started
        self.path: Path | None = None
        self.last: float | None = None

    def __call__(self) -> float | None:
        if self.path is None:
            self.path = self._find()
        if self.path is None:
            return time.monotonic() - self.started  # --cpus=1: CPU <= wall
        with contextlib.suppress(OSError, ValueError):  # gone: keep the last reading
            self.last = _cpu_seconds(self.path)
        return self.last

    def _find(self) -> Path | None:
        try:
            cid = self.cidfile.read_text().strip()
        except OSError:
            return None
        for pattern in _CGROUP_CPU_FILES:
            path = Path(pattern.format(id=cid))
            if cid and path.exists():
                return path
        return None


def _cpu_seconds(path: Path) -> float:
    text = path.read_text()
    if path.name == "cpu.stat":  # cgroup v2
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) / 1e6
        raise ValueError(f"no usage_usec in {path}")
    return int(text) / 1e9
