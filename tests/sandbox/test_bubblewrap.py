"""What only the bubblewrap runtime relies on: its seccomp filter, the memory cgroup around
the whole process tree, and the per-run RLIMIT_NPROC (runs do not share one count)."""

from __future__ import annotations

import json
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from backend.sandbox import Limits, SecureCodeExecutor
from tests.conftest import require_cgroups, require_x86_64

pytestmark = pytest.mark.usefixtures("untouched")

SYSCALLS = """
import ctypes, errno, json
libc = ctypes.CDLL(None, use_errno=True)
out = {}
for name, nr, args in %s:
    result = libc.syscall(nr, *args)
    out[name] = errno.errorcode.get(ctypes.get_errno()) if result == -1 else "allowed"
out["getpid"] = "allowed" if libc.syscall(39) > 0 else "denied"
out["status"] = [line for line in open("/proc/self/status").read().splitlines()
                 if line.startswith(("Seccomp:", "NoNewPrivs:"))]
print(json.dumps(out))
"""

CALLS = [
    ("ptrace", 101, (16, 1, 0, 0)),  # PTRACE_ATTACH to pid 1
    ("unshare", 272, (0x10000000,)),  # CLONE_NEWUSER
    ("clone_newuser", 56, (0x10000000 | 17, 0, 0, 0, 0)),
    ("setns", 308, (0, 0)),
    ("mount", 165, (b"none", b"/scratch", b"tmpfs", 0, 0)),
    ("keyctl", 250, (0, 0, 0, 0)),
    ("bpf", 321, (0, 0, 0)),
    ("perf_event_open", 298, (0, 0, -1, -1, 0)),
    ("userfaultfd", 323, (0,)),
    ("io_uring_setup", 425, (1, 0)),
    ("init_module", 175, (0, 0, 0)),
    ("kexec_load", 246, (0, 0, 0, 0)),
    ("ioctl_tiocsti", 16, (1, 0x5412, 0)),
    ("clone3", 435, (0, 0)),
]


def test_seccomp_denies_kernel_attack_surface(bubblewrap: SecureCodeExecutor) -> None:
    require_x86_64()
    result = bubblewrap.run_python(SYSCALLS % repr(CALLS))
    assert result.exit_code == 0, result
    report = json.loads(result.stdout)
    assert report.pop("status") == ["NoNewPrivs:\t1", "Seccomp:\t2"]
    assert report.pop("getpid") == "allowed"
    assert report.pop("clone3") == "ENOSYS"  # so that libc falls back to clone
    assert set(report.values()) == {"EPERM"}, report


def test_seccomp_kills_foreign_abi(bubblewrap: SecureCodeExecutor) -> None:
    require_x86_64()
    source = "import ctypes\nprint('before', flush=True)\nctypes.CDLL(None).syscall(0x40000000 | 39)\nprint('after')\n"
    result = bubblewrap.run_python(source)
    assert result.stdout == "before\n"
    assert result.exit_code == 128 + signal.SIGSYS


def test_fork_and_threads_still_work(bubblewrap: SecureCodeExecutor) -> None:
    source = (
        "import subprocess, threading, multiprocessing\n"
        "t = threading.Thread(target=print, args=('thread',)); t.start(); t.join()\n"
        "print(subprocess.run(['echo', 'child'], capture_output=True, text=True).stdout, end='')\n"
    )
    result = bubblewrap.run_python(source)
    assert (result.exit_code, result.stdout) == (0, "thread\nchild\n"), result


def test_memory_limit_covers_the_whole_process_tree(bubblewrap: SecureCodeExecutor) -> None:
    require_cgroups()
    # Each process stays under RLIMIT_AS; together they exceed the run's memory cgroup.
    source = (
        "import os, time\n"
        "pid = os.fork()\n"
        "block = b'x' * (180 << 20)  # written, so really resident\n"
        "time.sleep(1)\n"
        "if pid == 0:\n"
        "    os._exit(0)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print('child', os.waitstatus_to_exitcode(status))\n"
    )
    result = bubblewrap.run_python(source, Limits(memory_mb=256, wall_s=20))
    assert result.killed_reason == "memory", result
    assert "child 0" not in result.stdout  # one of the two was OOM-killed


def test_process_limit_is_per_run(bubblewrap: SecureCodeExecutor) -> None:
    # RLIMIT_NPROC is set inside each run's user namespace, so concurrent runs as the same
    # host uid do not eat into each other's count.
    source = (
        "import os, time\n"
        "kids = []\n"
        "for _ in range(10):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        time.sleep(1.5)\n"
        "        os._exit(0)\n"
        "    kids.append(pid)\n"
        "for pid in kids:\n"
        "    os.waitpid(pid, 0)\n"
        "print('ok')\n"
    )
    limits = Limits(pids=16, wall_s=30)
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: bubblewrap.run_python(source, limits), range(3)))
    assert [(r.exit_code, r.stdout) for r in results] == [(0, "ok\n")] * 3, results


PROGRAMS = {
    "plain": "print('a')",
    "status": "import sys\nprint('x')\nsys.exit(3)",
    "message": "import sys\nsys.exit('bye')",
    "bare_exit": "raise SystemExit",
    "traceback": "def f():\n    1/0\nf()",
    "syntax": "def (:",
    "atexit": "import atexit\natexit.register(lambda: print('atexit ran'))\nprint('main')",
    "thread": "import threading, time\n"
    "threading.Thread(target=lambda: (time.sleep(0.2), print('thread'))).start()\nprint('main')",
    "rebound_stdout": "import sys\nout, sys.stdout = sys.stdout, sys.stderr\nout.write('kept')",
    "argv_and_file": "import sys\nprint(sys.argv, __file__, __name__, sys.path[0])",
    "wrapped_status": "import sys\nsys.exit(256 + 7)",
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_a_program_runs_as_python3_main_py_would(
    name: str, bubblewrap: SecureCodeExecutor, tmp_path: Path
) -> None:
    """The started interpreter receives the program on stdin and runs it in-process: the
    outcome must be what ``python3 main.py`` in /scratch gives (same status and output)."""
    source = PROGRAMS[name]
    (tmp_path / "main.py").write_text(source)
    host = subprocess.run(
        ["/usr/bin/python3", "-B", "-E", "-s", "main.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    result = bubblewrap.run_python(source)
    here = str(tmp_path)
    expected_out = host.stdout.replace(here, "/scratch")
    assert (result.exit_code, result.stdout) == (host.returncode, expected_out), result
    assert result.stderr == host.stderr.replace(here, "/scratch"), result
