"""The Docker + gVisor runtime: ``docker run --runtime=runsc`` against a local image.

Chosen first when a Docker daemon answers, has the ``runsc`` runtime registered and holds the
image, pinned by digest (``$ENTROPIC_SANDBOX_IMAGE``, or the one ``backend.sandbox.image``
built from Debian packages and loaded); it is never pulled (``--pull=never``). The container
has no network, a read-only root, uid 65534, no capabilities, no_new_privs, and only the
scratch space mounted (a tmpfs of ``Limits.disk_mb``, read-write at /scratch). Killing the
``docker run`` client does not stop the container, so every kill is a ``docker kill``; the
container is removed afterwards.

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
import re
import subprocess
import time
import uuid
from pathlib import Path

from backend.sandbox.base import (
    PYTHON_ARGS,
    SANDBOX_ENV,
    SANDBOX_UID,
    SCRATCH,
    ProbedRuntime,
    Warm,
    find_tool,
    rlimits,
    start_or_clean,
)
from backend.sandbox.gvisor import OVERHEAD_MB, host_tasks
from backend.sandbox.scratch import Scratch, inodes, make_dir, owner_tag, remove
from backend.sandbox.supervise import HOST_ENV, Outcome, Spawned, to_result
from shared_api.errors import SandboxFailedError
from shared_api.sandbox import Limits, SandboxResult

IMAGE_ENV = "ENTROPIC_SANDBOX_IMAGE"
"""Names the image to run, pinned by digest: ``sha256:<id>`` (an image loaded locally, e.g.
by ``python -m backend.sandbox.image load``) or ``NAME@sha256:<digest>``."""

_PINNED = re.compile(r"^(?:sha256:[0-9a-f]{64}|[^@\s]+@sha256:[0-9a-f]{64})$")


def default_image() -> str:
    """The image from ``$ENTROPIC_SANDBOX_IMAGE``, else the one ``backend.sandbox.image``
    built and loaded last (its digest, recorded in the user's cache); "" when neither."""
    from backend.sandbox.image import recorded_image

    return os.environ.get(IMAGE_ENV, "").strip() or recorded_image() or ""


def pinned(image: str) -> bool:
    """Whether ``image`` names one immutable image (by digest), not a movable tag."""
    return bool(_PINNED.match(image))


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

    def __init__(self, *, image: str | None = None, docker: str = "docker") -> None:
        self.image = image if image is not None else default_image()
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
        if not pinned(self.image):
            return (
                f"no sandbox image pinned by digest (got {self.image!r}): build and load one "
                f"with `python -m backend.sandbox.image load`, or set {IMAGE_ENV}=sha256:..."
            )
        if self._docker("image", "inspect", self.image, timeout=10).returncode != 0:
            return (
                f"image {self.image} is not present locally (it is never pulled): "
                "python -m backend.sandbox.image load"
            )
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
            "disk_mb": "/scratch is a tmpfs of that size (the only writable place)",
            "output_bytes": "read by the supervisor, docker-killed past the limit",
        }

    def command(self, scratch: Scratch, limits: Limits, name: str, cidfile: Path) -> list[str]:
        """The ``docker run`` command line for one run (its program comes on stdin)."""
        limit = rlimits(limits)
        # docker's --ulimit has no RLIMIT_AS (and gVisor ignores RLIMIT_DATA): a bootstrap
        # sets it inside, then execs the interpreter, so the script runs exactly as elsewhere.
        address_space = limit.pop("as")
        ulimits = [f"--ulimit={key}={soft}:{hard}" for key, (soft, hard) in limit.items()]
        memory = f"{limits.memory_mb + limits.disk_mb + OVERHEAD_MB}m"
        if scratch.path is not None:
            mount = f"--volume={scratch.path}:{SCRATCH}:rw"
        else:
            mount = (f"--tmpfs={SCRATCH}:rw,nosuid,nodev,size={scratch.size_mb}m,"
                     f"nr_inodes={inodes(scratch.size_mb)},mode=0700,"
                     f"uid={SANDBOX_UID},gid={SANDBOX_UID}")  # fmt: skip
        argv = [
            self.docker, "run", "--rm", "--interactive", "--pull=never", f"--name={name}",
            f"--cidfile={cidfile}",
            "--runtime=runsc", "--network=none", "--read-only",
            f"--user={SANDBOX_UID}:{SANDBOX_UID}", "--cap-drop=ALL",
            "--security-opt=no-new-privileges", "--ipc=private", "--hostname=sandbox",
            f"--memory={memory}", f"--memory-swap={memory}", "--cpus=1",
            f"--pids-limit={host_tasks(limits)}",
            *ulimits,
            mount, f"--workdir={SCRATCH}",
            *(f"--env={key}={value}" for key, value in SANDBOX_ENV.items()),
            "--log-driver=none",
            self.image, "python3", "-I", "-S", "-c", _SET_AS % address_space, *PYTHON_ARGS,
        ]  # fmt: skip
        return argv

    def start(self, limits: Limits, root: Path | None = None) -> Warm:
        scratch = Scratch.create(limits.disk_mb, root)
        work: Path | None = None
        name = f"entropic-{owner_tag()}-{uuid.uuid4().hex[:12]}"

        def cleanup() -> None:
            self._docker("rm", "--force", name, timeout=30)
            if work is not None:
                remove(work)

        def build() -> Warm:
            nonlocal work
            work = make_dir("docker", root)
            cidfile = work / "cid"
            probe = _CpuProbe(cidfile)
            argv = self.command(scratch, limits, name, cidfile)
            return Warm(
                self.name,
                limits,
                Spawned(argv, env=_docker_env()),
                scratch=scratch,
                interpret=lambda outcome: self._interpret(outcome, limits, probe),
                cleanup=cleanup,
                cpu_usage=probe,
                kill=lambda _pid: self._kill(name),
            )

        return start_or_clean(build, cleanup, scratch.remove)

    def _interpret(self, outcome: Outcome, limits: Limits, probe: _CpuProbe) -> SandboxResult:
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

    def __init__(self, cidfile: Path) -> None:
        self.cidfile = cidfile
        self.started = time.monotonic()
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
