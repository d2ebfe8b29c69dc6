"""Start a backend process for a home, or attach to the one already running there.

Used by the workbench, the tests and the benchmarks: a real ``main.py backend`` subprocess,
reached through its connection file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from backend.home import Home
from shared_api.connection import CONNECTION_FILE, ConnectionInfo, read_connection_file
from shared_api.errors import RequestTimeout, UnavailableError
from shared_api.transport import Client

MAIN = Path(__file__).resolve().parent.parent / "main.py"


#: Who started a backend (e.g. "workbench pid 123"), passed down in its environment: a
#: backend started by a workbench stops by itself once no workbench is attached.
STARTED_BY_ENV = "ENTROPIC_STARTED_BY"  # read by backend.attach


def starter(home: Path, started_by: str) -> Callable[[], BackendProcess]:
    """The function the workbench's link calls to start a backend for ``home`` (spawned, not
    waited for: the link waits), so that the UI never imports the backend."""

    def start() -> BackendProcess:
        process = BackendProcess(home, started_by=started_by)
        process.spawn()
        return process

    return start


class BackendProcess:
    def __init__(self, home: Path, *, log_path: Path | None = None, started_by: str = "") -> None:
        self.home = home.expanduser().resolve()
        self.log_path = log_path or self.home / "backend.log"
        self.started_by = started_by
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: ConnectionInfo | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = 60.0) -> ConnectionInfo:
        """Spawn ``main.py backend`` and wait until it answers a ping."""
        self.spawn()
        return self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start ``main.py backend`` without waiting for it (see ``wait_ready``)."""
        self.home.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept for the process lifetime
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop(STARTED_BY_ENV, None)
        if self.started_by:
            env[STARTED_BY_ENV] = self.started_by
        self.proc = subprocess.Popen(  # noqa: S603 - our own entry point
            [sys.executable, str(MAIN), "backend", "--home", str(self.home)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def wait_ready(self, timeout: float = 60.0) -> ConnectionInfo:
        """Wait until the spawned backend answers a ping."""
        assert self.proc is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise UnavailableError(
                    f"The backend exited with status {self.proc.returncode} during startup; "
                    f"see {self.log_path}:\n{self.log_tail()}"
                )
            info = self._ready_info()
            if info is not None:
                self.info = info
                return info
            time.sleep(0.05)
        self.kill()
        raise UnavailableError(
            f"The backend did not start within {timeout:.0f}s; see {self.log_path}"
        )

    def _ready_info(self) -> ConnectionInfo | None:
        assert self.proc is not None
        if not (self.home / CONNECTION_FILE).exists():
            return None
        try:
            info = read_connection_file(self.home)
        except UnavailableError:
            return None
        if info.pid != self.proc.pid:
            return None  # a stale file from a backend that was killed
        try:
            with Client(info, timeout=2.0, curve_keys=self._curve_keys(info)) as client:
                client.call("ping", {})
        except RequestTimeout:
            return None
        return info

    def client(self, *, events: bool = False, timeout: float = 30.0) -> Client:
        if self.info is None:
            raise UnavailableError("the backend is not started")
        return Client(
            self.info, events=events, timeout=timeout, curve_keys=self._curve_keys(self.info)
        )

    def _curve_keys(self, info: ConnectionInfo) -> tuple[bytes, bytes] | None:
        """The home's own CURVE client keys, when the backend asks for CURVE."""
        return Home(self.home).client_keys() if info.server_key else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=60)
        self._close_log()
        return code

    def stop(self, timeout: float = 60.0) -> int | None:
        """Graceful: SIGTERM (the backend saves its image), SIGKILL if it hangs."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_log()
        return self.proc.returncode

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""
