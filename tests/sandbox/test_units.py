"""The sandbox's parts on their own: limits and results, the supervisor (on trusted host
commands), the seccomp program (through a BPF interpreter), Docker's command line, cgroups,
and the executor's choice of runtime."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import struct
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from backend.sandbox import INSTALL_HINT, SecureCodeExecutor
from backend.sandbox import cgroups as sandbox_cgroups
from backend.sandbox import image as sandbox_image
from backend.sandbox.base import BOOT
from backend.sandbox.bubblewrap import BubblewrapRuntime
from backend.sandbox.docker import IMAGE_ENV, DockerGvisorRuntime, pinned, runtimes_from_info
from backend.sandbox.gvisor import GvisorRuntime
from backend.sandbox.scratch import Scratch
from backend.sandbox.seccomp import DENIED, build_filter
from backend.sandbox.supervise import Outcome, Spawned, supervise, to_result
from shared_api.errors import ErrorCode, InvalidValueError, SandboxUnavailableError
from shared_api.sandbox import Limits, SandboxResult
from tests.conftest import require_cgroups

# --- limits and results -------------------------------------------------------------------


def test_limit_defaults_and_validation() -> None:
    limits = Limits()
    assert (limits.wall_s, limits.cpu_s, limits.memory_mb, limits.pids) == (10, 5, 256, 32)
    assert (limits.file_size_mb, limits.output_bytes, limits.disk_mb) == (16, 1 << 20, 64)
    for bad in ({"wall_s": 0}, {"memory_mb": 1}, {"pids": 1}, {"output_bytes": 10}, {"x": 1},
                {"disk_mb": 0}):  # fmt: skip
        with pytest.raises(ValidationError):
            Limits(**bad)  # type: ignore[arg-type]


def test_result_round_trips_as_json() -> None:
    result = SandboxResult(runtime="bubblewrap", exit_code=None, killed_reason="cpu_time",
                           duration_s=1.5, cpu_s=1.0)  # fmt: skip
    again = SandboxResult.model_validate_json(result.model_dump_json())
    assert again == result and again.kind == "sandbox_result"
    assert ErrorCode("sandbox_unavailable") is ErrorCode.SANDBOX_UNAVAILABLE


def _outcome(returncode: int, reason: str | None = None, cpu: float = 0.1) -> Outcome:
    return Outcome(returncode, b"out\xff", b"err", (False, False), reason,  # type: ignore[arg-type]
                   duration_s=1.0, rusage_cpu_s=cpu)  # fmt: skip


def test_result_classification() -> None:
    limits = Limits(cpu_s=2)
    plain = to_result(_outcome(3), "x", limits)
    assert (plain.exit_code, plain.killed_reason, plain.stdout) == (3, None, "out\ufffd")
    xcpu = to_result(_outcome(128 + signal.SIGXCPU, cpu=2.0), "x", limits)
    assert (xcpu.exit_code, xcpu.killed_reason) == (None, "cpu_time")
    early_kill = to_result(_outcome(128 + signal.SIGKILL, cpu=0.1), "x", limits)
    assert (early_kill.exit_code, early_kill.killed_reason) == (137, None)
    oom = to_result(_outcome(137), "x", limits, oom_killed=True)
    assert (oom.exit_code, oom.killed_reason) == (None, "memory")
    wall = to_result(_outcome(-9, "wall_time"), "x", limits)
    assert (wall.exit_code, wall.timed_out) == (None, True)


# --- the supervisor, on trusted host commands ----------------------------------------------


def test_supervise_collects_output_and_status() -> None:
    out = supervise(["/bin/sh", "-c", "echo out; echo err >&2; exit 7"], Limits())
    assert (out.stdout, out.stderr, out.status, out.killed_reason) == (b"out\n", b"err\n", 7, None)


def test_supervise_delivers_the_program_and_times_from_then() -> None:
    program = b"x" * (1 << 20)  # larger than a pipe: written while the output is read
    started = Spawned(["/bin/sh", "-c", "wc -c; sleep 0.3"])
    time.sleep(0.5)  # waiting for its program does not count against its wall time
    out = started.finish(program, Limits(wall_s=2))
    assert (out.stdout.strip(), out.status, out.killed_reason) == (b"1048576", 0, None)
    assert out.duration_s < 1.5
    with pytest.raises(RuntimeError, match="one program only"):
        started.finish(b"", Limits())


ENDS_EARLY = """
import os, sys, time
mark = sys.stdin.buffer.readline().rstrip(b"\\n")
os.write(1, b"out \\0 not the end " + b"\\0" + mark[:5])  # near misses, held back a moment
time.sleep(0.1)
os.write(2, b"err\\n")
os.write(1, b"\\0" + mark[:6])  # the END line in two writes
time.sleep(0.1)
os.write(1, mark[6:] + b" 7\\n" + b"not part of the run")
time.sleep(30)  # its processes outlive its END line: abort() ends them
"""


def test_a_marked_run_ends_at_its_end_line() -> None:
    """``marked``: the outcome comes at the END line (split across writes, after near
    misses), with its status; what follows is dropped; ``abort`` then reaps the rest."""
    started = Spawned(["/usr/bin/python3", "-c", ENDS_EARLY])
    out = started.finish(b"", Limits(wall_s=20), marked=True, early=True)
    assert out.status == 7 and out.killed_reason is None
    assert out.stdout.startswith(b"out \0 not the end \0") and b"not part" not in out.stdout
    assert len(out.stdout) == len(b"out \0 not the end \0") + 5  # the first near miss
    assert out.stderr == b"err\n"
    assert out.duration_s < 5
    assert started.proc.poll() is None  # still there, until:
    started.abort()
    assert started.proc.returncode is not None


def test_supervise_caps_output_and_kills() -> None:
    started = time.monotonic()
    out = supervise(["/usr/bin/yes"], Limits(output_bytes=4096))
    assert out.killed_reason == "output_limit" and len(out.stdout) == 4096
    assert out.truncated == (True, False)
    assert time.monotonic() - started < 3


def test_supervise_enforces_wall_time_on_the_whole_group() -> None:
    out = supervise(["/bin/sh", "-c", "sleep 60 & sleep 60"], Limits(wall_s=0.5))
    assert out.killed_reason == "wall_time" and 0.5 <= out.duration_s < 3


def test_supervise_does_not_wait_for_leftover_pipe_holders() -> None:
    # The command exits at once but leaves a child holding stdout open.
    started = time.monotonic()
    out = supervise(["/bin/sh", "-c", "sleep 60 & echo done"], Limits(wall_s=30))
    assert out.stdout == b"done\n" and out.status == 0 and out.killed_reason is None
    assert time.monotonic() - started < 5


def test_supervise_kills_on_cpu_probe() -> None:
    used = iter([0.1, 0.2, 5.0] + [5.0] * 100)
    out = supervise(["/bin/sleep", "30"], Limits(cpu_s=1), cpu_usage=lambda: next(used))
    assert out.killed_reason == "cpu_time" and out.duration_s < 5


# --- the seccomp program -------------------------------------------------------------------

AUDIT_X86_64, AUDIT_AARCH64 = 0xC000003E, 0xC00000B7
ALLOW, KILL = 0x7FFF0000, 0x80000000


def _bpf(program: bytes, nr: int, arch: int = AUDIT_X86_64, args: tuple[int, ...] = ()) -> int:
    """A classic-BPF interpreter for the instructions the filter uses."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, *(list(args) + [0] * 6)[:6])
    code = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    acc, pc = 0, 0
    while True:
        op, jt, jf, k = code[pc]
        pc += 1
        if op == 0x20:
            acc = struct.unpack_from("<I", data, k)[0]
        elif op == 0x06:
            return k
        else:
            taken = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[op]
            pc += jt if taken else jf


def test_seccomp_program_semantics() -> None:
    prog = build_filter("x86_64")
    eperm = 0x00050000 | errno.EPERM
    assert _bpf(prog, 0) == ALLOW  # read
    assert _bpf(prog, 101) == eperm  # ptrace
    assert _bpf(prog, 272) == eperm  # unshare
    assert _bpf(prog, 435) == 0x00050000 | errno.ENOSYS  # clone3
    assert _bpf(prog, 56, args=(17,)) == ALLOW  # fork-like clone
    assert _bpf(prog, 56, args=(0x10000000 | 17,)) == eperm  # clone(CLONE_NEWUSER)
    assert _bpf(prog, 16, args=(0, 0x5401)) == ALLOW  # ioctl TCGETS
    assert _bpf(prog, 16, args=(0, 0x5412)) == eperm  # ioctl TIOCSTI
    assert _bpf(prog, 0x40000000 | 39) == KILL  # x32 ABI
    assert _bpf(prog, 39, arch=AUDIT_AARCH64) == KILL  # another architecture
    arm = build_filter("aarch64")
    assert _bpf(arm, 117, arch=AUDIT_AARCH64) == eperm  # ptrace on arm64
    assert _bpf(arm, 63, arch=AUDIT_AARCH64) == ALLOW  # read on arm64
    assert len(DENIED) > 40


# --- docker's command line -------------------------------------------------------------------


IMAGE = "sha256:" + "ab" * 32


def test_docker_command_line(tmp_path: Path) -> None:
    runtime = DockerGvisorRuntime(image=IMAGE)
    limits = Limits(memory_mb=128, pids=16, cpu_s=3, disk_mb=32)
    argv = runtime.command(Scratch(tmp_path, 32), limits, "c1", tmp_path / "cid")
    for flag in ("--runtime=runsc", "--network=none", "--read-only", "--user=65534:65534",
                 "--cap-drop=ALL", "--security-opt=no-new-privileges", "--memory=416m",
                 "--memory-swap=416m", "--ulimit=nproc=16:16", "--ulimit=cpu=3:4",
                 "--ulimit=fsize=16777216:16777216", f"--volume={tmp_path}:/scratch:rw",
                 "--workdir=/scratch", "--rm", "--name=c1", f"--cidfile={tmp_path / 'cid'}",
                 "--pull=never", "--interactive"):  # fmt: skip
        assert flag in argv, flag
    # docker has no --ulimit as: a bootstrap sets RLIMIT_AS, then execs the interpreter
    image = argv.index(IMAGE)
    assert argv[image + 1 : image + 5] == ["python3", "-I", "-S", "-c"]
    assert "RLIMIT_AS, (134217728, 134217728)" in argv[image + 5]
    assert argv[image + 6 :] == ["-B", "-E", "-s", "-c", BOOT]
    assert not any(a.startswith(("--privileged", "--cap-add", "--network=host")) for a in argv)
    assert not any(a.startswith("--ulimit=as") for a in argv)
    # without a host tmpfs (not root), Docker makes one of the same size
    tmpfs = runtime.command(Scratch(None, 32), limits, "c1", tmp_path / "cid")
    assert (
        "--tmpfs=/scratch:rw,nosuid,nodev,size=32m,nr_inodes=8192,mode=0700,uid=65534,gid=65534"
        in tmpfs
    )


def test_docker_image_must_be_pinned_by_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pinned(IMAGE) and pinned("python@sha256:" + "0" * 64)
    assert not pinned("python:3.11-slim") and not pinned("sha256:abc") and not pinned("")
    monkeypatch.setenv(IMAGE_ENV, IMAGE)
    assert DockerGvisorRuntime().image == IMAGE
    if shutil.which("docker"):
        why = DockerGvisorRuntime(image="python:3.11-slim")._check()
        assert why is not None and ("pinned by digest" in why or "daemon" in why), why


def test_docker_runtime_detection() -> None:
    assert runtimes_from_info('{"io.containerd.runc.v2":{},"runc":{},"runsc":{}}') == {
        "io.containerd.runc.v2", "runc", "runsc"}  # fmt: skip
    assert runtimes_from_info("not json") == set()


# --- cgroups ---------------------------------------------------------------------------------


def test_run_cgroup_limits_membership_and_removal() -> None:
    require_cgroups()
    group = sandbox_cgroups.RunCgroup.create("unit-test", memory_bytes=64 << 20, pids=10)
    try:
        dirs = list(group.dirs.values())
        out = supervise(group.wrap(["/bin/cat", "/proc/self/cgroup"]), Limits())
        assert all(str(d).endswith("/unit-test") for d in dirs)
        assert "unit-test" in out.stdout.decode()
        assert group.cpu_s() is not None
        assert not group.oom_killed()
    finally:
        group.close()
    assert not any(d.exists() for d in dirs)


# --- the executor --------------------------------------------------------------------------


def test_no_runtime_means_no_run_and_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap, runsc or docker to be found
    executor = SecureCodeExecutor([DockerGvisorRuntime(), GvisorRuntime(), BubblewrapRuntime()])
    assert executor.runtime_name is None
    status = executor.status()
    assert status["runtime"] is None and status["install_hint"] == INSTALL_HINT
    assert "bwrap not found" in status["runtimes"]["bubblewrap"]["reason"]
    with pytest.raises(SandboxUnavailableError) as caught:
        executor.run_python("print('never runs')")
    assert "apt-get install bubblewrap runsc" in caught.value.message
    assert set(caught.value.detail["reasons"]) == {"docker-gvisor", "runsc", "bubblewrap"}
    with pytest.raises(SandboxUnavailableError, match="runsc not found"):
        executor.run_python("print(1)", runtime="runsc")


def test_unknown_runtime_is_refused() -> None:
    with pytest.raises(InvalidValueError, match="known: bubblewrap"):
        SecureCodeExecutor([BubblewrapRuntime()]).run_python("", runtime="nsjail")


# --- the Docker image archive ------------------------------------------------------------------


def test_image_archive_is_reproducible_and_pinned_by_its_config(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "usr" / "bin").mkdir(parents=True)
    (rootfs / "usr" / "bin" / "python3.11").write_bytes(b"\x7fELF not really")
    (rootfs / "usr" / "bin" / "python3").symlink_to("python3.11")
    versions = {"python3-minimal": "3.11.2-1+b1"}
    first = sandbox_image._write_archive(rootfs, tmp_path / "a.tar", versions)
    os.utime(rootfs / "usr" / "bin" / "python3.11", (1, 1))  # times do not matter
    second = sandbox_image._write_archive(rootfs, tmp_path / "b.tar", versions)
    assert first == second == sandbox_image._archive_digest(tmp_path / "a.tar")
    assert pinned(first)
    (rootfs / "usr" / "bin" / "python3.11").write_bytes(b"\x7fELF tampered")
    assert sandbox_image._write_archive(rootfs, tmp_path / "c.tar", versions) != first
