"""The event socket of a real backend: private to the user, and safe from huge or unknown
subscriptions.

Events carry everything (method arguments, tokens, replies), so by default they go out on an
ipc socket in the 0700 home. Subscriptions are vetted by the backend: libzmq would store every
subscription prefix (~48 bytes of memory per byte, never freed), so only "everything" is
applied and a long subscription disconnects its sender unread.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import zmq

from backend.launcher import BackendProcess
from shared_api.events import Heartbeat
from shared_api.replies import Pong
from tests.conftest import require_root
from tests.integration.conftest import Spawn
from tests.integration.helpers import zmtp_connect, zmtp_send

NOBODY = 65534
MiB = 1024 * 1024


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def open_path_to(path: Path) -> None:
    """Let other users traverse the directories above ``path`` (pytest's are 0700), so
    only the backend's own permissions stand between them and its sockets."""
    for parent in path.parents:
        if parent == Path(tempfile.gettempdir()):
            break
        parent.chmod(parent.stat().st_mode | 0o055)


def events_seen_as(uid: int, endpoint: str, seconds: float) -> str:
    """In a forked child running as ``uid``: subscribe to ``endpoint`` for ``seconds``, and
    report what came of it."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, listen, report, exit without cleanup
        try:
            os.setgid(uid)
            os.setuid(uid)
            context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
            sub = context.socket(zmq.SUB)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.connect(endpoint)
            received = 0
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                if sub.poll(int(left * 1000) + 1):
                    sub.recv()
                    received += 1
            report = f"received {received}"
            if endpoint.startswith("ipc://"):
                import socket

                try:
                    socket.socket(socket.AF_UNIX).connect(endpoint[len("ipc://") :])
                    report += ", connected"
                except OSError as exc:
                    report += f", connect: {exc.strerror}"
            os.write(w, report.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        report = pipe.read().decode()
    os.waitpid(pid, 0)
    return report


def test_another_user_cannot_read_events(home: Path, spawn: Spawn) -> None:
    require_root("reading events as the user nobody")
    open_path_to(home)
    backend = spawn()
    assert backend.info is not None
    with backend.client(events=True) as client:  # the owner does get them
        assert isinstance(client.wait_event(lambda e: isinstance(e, Heartbeat)), Heartbeat)
    report = events_seen_as(NOBODY, backend.info.event_endpoint, seconds=3.0)
    assert report.startswith("received 0"), report  # heartbeats come every second
    if backend.info.event_endpoint.startswith("ipc://"):
        assert "Permission denied" in report, report


def heartbeat_client(backend: BackendProcess) -> bool:
    with backend.client(events=True) as client:
        return client.next_event(5.0) is not None


def settled_rss_mib(pid: int) -> float:
    """The RSS once it stops moving (services finish starting in the background)."""
    last = rss_mib(pid)
    for _ in range(60):
        time.sleep(0.5)
        now = rss_mib(pid)
        if abs(now - last) < 2:
            return now
        last = now
    return last


def test_huge_subscriptions_do_not_grow_the_backend(home: Path, spawn: Spawn) -> None:
    """A 64 MiB subscription, four times over: the sender is dropped, the backend's memory
    stays within +50 MiB, and ping keeps answering meanwhile."""
    home.mkdir(parents=True)
    (home / "config.toml").write_text("[memory]\nenabled = false\n")  # no model loading
    backend = spawn()
    assert backend.info is not None and backend.proc is not None
    pid = backend.proc.pid
    pings: list[float] = []
    with backend.client(timeout=10) as client:
        for _ in range(5):
            client.call("ping", {})
        before = settled_rss_mib(pid)
        for _ in range(4):
            attacker = zmtp_connect(backend.info.event_endpoint)
            try:
                zmtp_send(attacker, b"\x01" + b"x" * (64 * MiB))
                dropped = attacker.recv(1) == b""
            except OSError:  # reset or broken pipe: dropped mid-send
                dropped = True
            finally:
                attacker.close()
            assert dropped, "the backend kept a peer that sent a 64 MiB subscription"
            for _ in range(5):
                started = time.perf_counter()
                assert isinstance(client.call("ping", {}), Pong)
                pings.append(time.perf_counter() - started)
        after = rss_mib(pid)
    assert after - before <= 50, f"RSS grew from {before:.0f} to {after:.0f} MiB"
    # Load-robust: the median, on a 2-core machine shared with other work.
    assert statistics.median(pings) < 0.1, f"pings took {pings}"
    assert heartbeat_client(backend)  # events still flow to a proper subscriber


def test_only_the_everything_subscription_is_applied(backend: BackendProcess) -> None:
    """Every event starts with the same bytes, so a prefix other than "everything" selects
    nothing our clients need: the backend ignores it (it would only cost memory)."""
    assert backend.info is not None
    context = zmq.Context.instance()
    narrow = context.socket(zmq.SUB)
    narrow.setsockopt(zmq.LINGER, 0)
    narrow.setsockopt(zmq.SUBSCRIBE, b"EMC1")
    narrow.connect(backend.info.event_endpoint)
    try:
        assert heartbeat_client(backend)  # heartbeats are being published...
        assert not narrow.poll(2500), "a narrowed subscription was applied"  # ...but not to it
    finally:
        narrow.close(0)
