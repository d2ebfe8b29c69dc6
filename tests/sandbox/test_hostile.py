"""Hostile code, run on every available runtime: each case must be contained, and the host
verifiably untouched afterwards (no files, processes, cgroups or scratch left; nothing the
script was not allowed to see in its output)."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.sandbox import Limits, SecureCodeExecutor
from backend.sandbox.base import SANDBOX_UID
from tests.sandbox.conftest import HostState

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("untouched")


def run(sandbox: SecureCodeExecutor, source: str, **limits: float) -> dict[str, object]:
    """Run ``source`` and return the JSON object it printed last (plus the result)."""
    result = sandbox.run_python(source, Limits(**limits))
    assert result.exit_code == 0, result
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert isinstance(report, dict)
    return report


class _Listener:
    """A TCP server on the host that counts the connections it accepts."""

    def __init__(self, host: str) -> None:
        self.sock = socket.create_server((host, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listeners() -> Iterator[list[_Listener]]:
    """A loopback server, and one on every host address (to try the host's own IP)."""
    found = [_Listener("127.0.0.1"), _Listener("0.0.0.0")]  # the test's own servers
    yield found
    for listener in found:
        listener.close()


def _host_ip() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # no packet is sent; picks the outgoing address
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


NETWORK = """
import json, socket
out = {}
for name, addr in %s:
    try:
        s = socket.create_connection(addr, timeout=1)
        s.close()
        out[name] = "connected"
    except OSError as exc:
        out[name] = type(exc).__name__
try:
    socket.getaddrinfo("example.com", 80)
    out["dns"] = "resolved"
except OSError as exc:
    out["dns"] = type(exc).__name__
try:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"x", ("1.1.1.1", 53))
    out["udp"] = "sent"
except OSError as exc:
    out["udp"] = type(exc).__name__
print(json.dumps(out))
"""


def test_no_network(sandbox: SecureCodeExecutor, listeners: list[_Listener]) -> None:
    loopback, anywhere = listeners
    targets = [
        ("loopback", ("127.0.0.1", loopback.port)),
        ("host_ip", (_host_ip(), anywhere.port)),
        ("public", ("1.1.1.1", 443)),
    ]
    report = run(sandbox, NETWORK % repr(targets), wall_s=20)
    assert "connected" not in report.values(), report
    assert report["dns"] != "resolved" and report["udp"] != "sent", report
    time.sleep(0.3)  # let the listeners notice a late connection, were there one
    assert loopback.accepted == 0 and anywhere.accepted == 0


WRITES = """
import json, os
out = {}
for path in %s:
    try:
        with open(path, "w") as f:
            f.write("pwned")
        out[path] = "written"
    except OSError as exc:
        out[path] = type(exc).__name__
with open("/scratch/inside.txt", "w") as f:
    f.write("fine")
out["scratch"] = open("/scratch/inside.txt").read()
print(json.dumps(out))
"""


def test_writes_outside_scratch_never_reach_the_host(
    sandbox: SecureCodeExecutor, tmp_path: Path
) -> None:
    tmp_path.chmod(0o777)  # even a world-writable host directory must stay untouched
    marker = f"entropic-hostile-{time.monotonic_ns()}"
    targets = [
        f"/tmp/{marker}",
        str(REPO / marker),
        str(tmp_path / marker),
        f"/{marker}",
        f"/usr/{marker}",
        f"/etc/{marker}",
        f"/root/{marker}",
        f"/dev/shm/{marker}",
        "/usr/bin/python3",
    ]
    python_before = Path("/usr/bin/python3").read_bytes()
    report = run(sandbox, WRITES % repr(targets))
    assert report["scratch"] == "fine"
    for target in targets[:-1]:
        assert not Path(target).exists(), f"{target} reached the host"
    for target in (f"/usr/{marker}", "/usr/bin/python3"):
        assert report[target] != "written", report
    assert Path("/usr/bin/python3").read_bytes() == python_before
    assert list(tmp_path.iterdir()) == []


READS = """
import json, os
out = {}
for path in %s:
    try:
        out[path] = open(path, errors="replace").read()[:2000]
    except OSError as exc:
        out[path] = type(exc).__name__
for path in ("/root", "/home", "/tmp", "/work", "/etc"):
    try:
        out["ls " + path] = sorted(os.listdir(path))
    except OSError as exc:
        out["ls " + path] = type(exc).__name__
out["uid"] = [os.getuid(), os.geteuid(), os.getgid(), os.getgroups()]
status = open("/proc/self/status").read().splitlines()
out["caps"] = [line.split()[1] for line in status if line.startswith(("CapEff", "CapPrm"))]
print(json.dumps(out))
"""


def test_reads_of_root_and_shadow_fail(sandbox: SecureCodeExecutor, tmp_path: Path) -> None:
    secret = f"entropic-secret-{time.monotonic_ns()}"
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "key").write_text(secret)
    public = tmp_path / "public.txt"  # world-readable: the sandbox must not even see it
    public.write_text(secret)
    public.chmod(0o644)
    tmp_path.chmod(0o755)
    targets = ["/etc/shadow", "/etc/passwd", "/root/.bash_history", "/proc/1/root/etc/shadow",
               "/proc/1/environ", str(private / "key"), str(public)]  # fmt: skip
    result = sandbox.run_python(READS % repr(targets))
    assert result.exit_code == 0, result
    report = json.loads(result.stdout)
    assert secret not in result.stdout + result.stderr
    shadow = Path("/etc/shadow").read_text()
    assert shadow.splitlines()[0] not in result.stdout
    assert report["/etc/shadow"] in ("FileNotFoundError", "PermissionError")
    assert report["ls /root"] in ("FileNotFoundError", "PermissionError", [])
    host_root = {p.name for p in Path("/root").iterdir()}
    if isinstance(report["ls /root"], list):
        assert not host_root & set(report["ls /root"])
    if os.geteuid() == 0:
        uid, euid, gid, groups = report["uid"]
        assert (uid, euid, gid) == (SANDBOX_UID,) * 3, report["uid"]
        assert set(groups) <= {SANDBOX_UID}, groups  # docker lists the primary gid again
    else:
        assert report["uid"][0] == os.getuid() != 0
    assert report["caps"] == ["0000000000000000", "0000000000000000"], report["caps"]


def test_cpu_loop_is_killed(sandbox: SecureCodeExecutor) -> None:
    result = sandbox.run_python("while True:\n    pass\n", Limits(cpu_s=1, wall_s=20))
    assert result.killed_reason == "cpu_time", result
    assert result.exit_code is None and not result.timed_out
    assert result.duration_s < 6, result


def test_4gib_allocation_is_refused(sandbox: SecureCodeExecutor) -> None:
    source = (
        "import sys\n"
        "try:\n"
        "    block = bytearray(4 << 30)\n"
        "    print('allocated 4 GiB at once')\n"
        "except MemoryError:\n"
        "    print('refused at once', flush=True)\n"
        "chunks = []\n"
        "for _ in range(256):\n"
        "    chunks.append(b'x' * (16 << 20))  # written, so really resident\n"
        "print('allocated 4 GiB in chunks')\n"
    )
    result = sandbox.run_python(source, Limits(memory_mb=256, wall_s=30))
    assert "allocated" not in result.stdout, result
    assert "refused at once" in result.stdout
    assert result.killed_reason == "memory" or "MemoryError" in result.stderr, result


PIDS_PROBE = """
import json, os, time
started, error = 0, None
children = []
for _ in range(%d):
    try:
        pid = os.fork()
    except OSError as exc:
        error = exc.errno
        break
    if pid == 0:
        time.sleep(3)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
print(json.dumps({"started": len(children), "errno": error}))
"""

FORK_BOMB = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""


def test_fork_bomb_inside_a_verified_pids_limit(sandbox: SecureCodeExecutor) -> None:
    limits = {"pids": 16, "wall_s": 20}
    report = run(sandbox, PIDS_PROBE % 64, **limits)
    assert report["errno"] == 11, report  # EAGAIN: the limit, not some other failure
    assert 0 < int(report["started"]) < 16, report  # verified: the bomb cannot pass 16
    started = time.monotonic()
    result = sandbox.run_python(FORK_BOMB, Limits(pids=16, wall_s=3, cpu_s=3))
    assert result.killed_reason in ("wall_time", "cpu_time"), result
    assert time.monotonic() - started < 15
    # `untouched` then checks that no process of the bomb survives on the host


def test_output_flood_is_cut_off(sandbox: SecureCodeExecutor) -> None:
    source = (
        "import sys\n"
        "chunk = 'x' * (1 << 20)\n"
        "for _ in range(100):\n"
        "    sys.stdout.write(chunk)\n"
        "    sys.stderr.write(chunk)\n"
    )
    started = time.monotonic()
    result = sandbox.run_python(source, Limits(wall_s=30))
    assert result.killed_reason == "output_limit", result.model_dump(exclude={"stdout", "stderr"})
    assert len(result.stdout) + len(result.stderr) == Limits().output_bytes
    assert result.stdout_truncated or result.stderr_truncated
    assert time.monotonic() - started < 10


def test_wall_time_is_enforced(sandbox: SecureCodeExecutor) -> None:
    result = sandbox.run_python("import time\ntime.sleep(60)\n", Limits(wall_s=1.5))
    assert result.timed_out and result.killed_reason == "wall_time", result
    assert result.exit_code is None
    assert 1.5 <= result.duration_s < 4, result


def test_file_size_is_enforced(sandbox: SecureCodeExecutor) -> None:
    source = "open('big', 'wb').write(b'x' * (8 << 20))\nprint('wrote')\n"
    result = sandbox.run_python(source, Limits(file_size_mb=4))
    assert "File too large" in result.stderr and "wrote" not in result.stdout, result


DISK = """
import errno, json, os
block = b"x" * (1 << 20)
written, error = 0, None
try:
    for i in range(2048):  # 2 GB, in 8 MB files (each under the file size limit)
        with open(f"part{i // 8}", "ab") as f:
            f.write(block)
            f.flush()
        written += len(block)
except OSError as exc:
    error = errno.errorcode.get(exc.errno, str(exc.errno))
print(json.dumps({"written": written, "error": error}))
"""


def _free(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def test_disk_is_capped_for_the_whole_run(sandbox: SecureCodeExecutor, sandbox_root: Path) -> None:
    # The file size limit is per file; the cap is on everything written together.
    watched = [sandbox_root, Path(tempfile.gettempdir()), REPO]
    before = [_free(path) for path in watched]
    lowest = list(before)
    done = threading.Event()

    def watch() -> None:  # while it writes: nothing may fill a host disk, even briefly
        while not done.is_set():
            for i, path in enumerate(watched):
                lowest[i] = min(lowest[i], _free(path))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = sandbox.run_python(DISK, Limits(disk_mb=24, file_size_mb=16, wall_s=30))
    finally:
        done.set()
        watcher.join()
    assert result.exit_code == 0, result
    report = json.loads(result.stdout)
    assert report["error"] == "ENOSPC", report  # stopped by the cap, not by anything else
    assert 16 << 20 <= report["written"] <= 24 << 20, report
    assert result.disk_full is (True if os.geteuid() == 0 else None), result
    for path, was, low in zip(watched, before, lowest, strict=True):
        assert was - low < 256 << 20, f"{path} lost {(was - low) >> 20} MB during the run"


def test_default_disk_cap_is_64_mb(sandbox: SecureCodeExecutor) -> None:
    result = sandbox.run_python(DISK, Limits(wall_s=30))
    report = json.loads(result.stdout)
    assert report["error"] == "ENOSPC" and 48 << 20 <= report["written"] <= 64 << 20, report
    small = sandbox.run_python("open('a', 'wb').write(b'x' * 1000)\nprint('ok')\n")
    assert small.stdout == "ok\n" and small.disk_full in (False, None), small


def test_file_count_is_capped(sandbox: SecureCodeExecutor) -> None:
    if os.geteuid() != 0:
        pytest.skip("the file count is capped on the host's scratch tmpfs, which needs root")
    source = (
        "import errno, os\n"
        "made, error = 0, None\n"
        "try:\n"
        "    for i in range(200000):\n"
        "        os.close(os.open(f'e{i}', os.O_CREAT | os.O_WRONLY))\n"
        "        made += 1\n"
        "except OSError as exc:\n"
        "    error = errno.errorcode.get(exc.errno)\n"
        "print(made, error)\n"
    )
    result = sandbox.run_python(source, Limits(disk_mb=4, wall_s=60, cpu_s=30))
    made, error = result.stdout.split()
    assert error == "ENOSPC" and int(made) < 1024, result  # 4 MB: at most 1,024 files


def test_scratch_is_private_and_removed(sandbox: SecureCodeExecutor, untouched: HostState) -> None:
    source = (
        "import os, json\n"
        "st = os.stat('/scratch')\n"
        "print(json.dumps({'cwd': os.getcwd(), 'files': sorted(os.listdir('.')),"
        " 'mode': oct(st.st_mode & 0o777)}))\n"
    )
    report = run(sandbox, source)
    assert report == {"cwd": "/scratch", "files": ["main.py"], "mode": "0o700"}


def test_host_environment_is_invisible(
    sandbox: SecureCodeExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"entropic-env-secret-{time.monotonic_ns()}"
    monkeypatch.setenv("ENTROPIC_TEST_SECRET", secret)
    source = (
        "import os\n"
        "print(dict(os.environ))\n"
        "for pid in os.listdir('/proc'):\n"
        "    if pid.isdigit():\n"
        "        try:\n"
        "            print(pid, open(f'/proc/{pid}/environ').read(), open(f'/proc/{pid}/cmdline').read())\n"
        "        except OSError as exc:\n"
        "            print(pid, type(exc).__name__)\n"
    )
    result = sandbox.run_python(source)
    assert result.exit_code == 0, result
    assert secret not in result.stdout
    assert "/root" not in result.stdout and str(REPO) not in result.stdout


FORGED_END = """
import os, sys, time
mark = sys._getframe(1).f_locals["mark"]  # the host's mark for this run, from BOOT's frame
print("before", flush=True)
os.write(1, b"\\0" + mark + b" 0\\n")  # claims the run is over...
print("after", flush=True)
while True:  # ...and spins on
    pass
"""


def test_a_forged_end_line_only_ends_its_own_run(sandbox: SecureCodeExecutor) -> None:
    """A pooled run returns at its END line (``supervise``), before the sandbox is torn
    down; a program that forges the line gets its own run cut short, and its tree is still
    destroyed (the ``untouched`` check after the test). A cold run waits for its exit: the
    spinning program is killed at its wall time. Nothing after the line is its output."""
    started = time.monotonic()
    result = sandbox.run_python(FORGED_END, Limits(wall_s=3, cpu_s=20))
    assert result.stdout == "before\n", result
    if sandbox.pool.size:
        assert result.exit_code == 0 and time.monotonic() - started < 3, result
    else:
        assert result.killed_reason == "wall_time", result


EXITS = """
import atexit, sys, threading, time
atexit.register(lambda: print("atexit ran"))
def late():
    time.sleep(0.2)
    print("thread done", flush=True)
threading.Thread(target=late).start()
sys.stdout.write("nul \\0 and a near miss \\0" + "0" * 16 + " 0\\n")
out, sys.stdout = sys.stdout, sys.stderr  # as a forged tool's call does: flushed all the same
out.write("to the old stdout\\n")
sys.exit("bye")
"""


def test_the_exit_is_the_interpreters(sandbox: SecureCodeExecutor) -> None:
    """A run ends as ``python3 main.py`` would: non-daemon threads joined, atexit handlers
    run, every standard stream flushed, ``sys.exit``'s status; NULs in output kept."""
    result = sandbox.run_python(EXITS, Limits(wall_s=20))
    assert result.exit_code == 1, result
    assert result.stdout == "nul \0 and a near miss \0" + "0" * 16 + " 0\nto the old stdout\n"
    assert result.stderr.splitlines() == ["bye", "thread done", "atexit ran"], result  # as python3
    assert sandbox.run_python("import sys\nsys.exit(3)\n").exit_code == 3
