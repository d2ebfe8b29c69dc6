"""The only module that imports zmq: the backend's sockets and the clients' channels.

The backend binds a ROUTER (requests) and a PUB (events). A client connects a DEALER and,
when it wants events, a SUB. Requests are matched to replies by ``parent_id`` with a deadline.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq
from pydantic import BaseModel, ValidationError

from shared_api.commands import Command
from shared_api.connection import ConnectionInfo
from shared_api.envelope import Envelope
from shared_api.errors import ErrorReply, RemoteError, RequestTimeout
from shared_api.events import EVENT_ADAPTER, Event
from shared_api.replies import REPLY_ADAPTER, Reply
from shared_api.wire import Codec, WireError

log = logging.getLogger(__name__)

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def _bind(sock: zmq.Socket[bytes], spec: str) -> str:
    """Bind to ``tcp://IP`` (random port), ``tcp://IP:PORT`` or ``ipc://PATH``."""
    if spec.startswith("tcp://") and spec.count(":") == 1:
        port = sock.bind_to_random_port(spec)
        return f"{spec}:{port}"
    sock.bind(spec)
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


class ServerSockets:
    """ROUTER + PUB, plus a self-pipe so other threads can wake the poll loop."""

    def __init__(self, request_spec: str, event_spec: str, *, max_message_bytes: int) -> None:
        self.context = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.pub = self.context.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 500)
        self.pub.setsockopt(zmq.SNDHWM, 100_000)
        self.request_endpoint = _bind(self.router, request_spec)
        self.event_endpoint = _bind(self.pub, event_spec)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poller = zmq.Poller()
        self._poller.register(self.router, zmq.POLLIN)
        self._poller.register(self._wake_r, zmq.POLLIN)

    def wait(self, timeout_ms: int) -> None:
        """Block until a request arrives, another thread calls ``wake``, or the timeout."""
        for sock, _ in self._poller.poll(timeout_ms):
            if sock == self._wake_r:
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass

    def wake(self) -> None:
        """Thread-safe: interrupt ``wait``."""
        with contextlib.suppress(BlockingIOError):  # pipe full: the loop will wake anyway
            os.write(self._wake_w, b"\0")

    def recv_request(self) -> list[bytes] | None:
        try:
            return self.router.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None

    def send_reply(self, frames: list[bytes]) -> None:
        try:
            self.router.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # peer gone or its queue full: the reply is dropped
            log.warning("could not send reply: %s", exc)

    def publish(self, frames: list[bytes]) -> None:
        try:
            self.pub.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            log.warning("event dropped: subscribers too slow")

    def close(self) -> None:
        self.router.close(linger=1000)  # let a final reply (e.g. to shutdown) go out
        self.pub.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self.context.term()


class Client:
    """A synchronous client: one request at a time per instance (guarded by a lock).

    Use one ``Client`` per thread for concurrency. ``events=True`` also subscribes to events.
    """

    def __init__(
        self, info: ConnectionInfo, *, events: bool = False, timeout: float = 10.0
    ) -> None:
        self.info = info
        self.timeout = timeout
        self.codec = Codec(info.key_bytes)
        self._event_codec = Codec(info.key_bytes)
        self._lock = threading.Lock()
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._dealer = ctx.socket(zmq.DEALER)
        self._dealer.setsockopt(zmq.LINGER, 0)
        self._dealer.connect(info.request_endpoint)
        self._sub: zmq.Socket[bytes] | None = None
        if events:
            self._sub = ctx.socket(zmq.SUB)
            self._sub.setsockopt(zmq.LINGER, 0)
            self._sub.setsockopt(zmq.RCVHWM, 0)
            self._sub.setsockopt(zmq.SUBSCRIBE, b"")
            self._sub.connect(info.event_endpoint)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._dealer.close(0)
        if self._sub is not None:
            self._sub.close(0)

    def request(self, command: Command, timeout: float | None = None) -> Reply:
        """Send a typed command; return the typed reply or raise ``RemoteError``."""
        return self.call(command.kind, command, timeout=timeout)

    def call(
        self, kind: str, body: BaseModel | dict[str, Any], timeout: float | None = None
    ) -> Reply:
        """Send ``kind`` with an (unvalidated) body: the backend validates it."""
        reply = self.call_raw(kind, body, timeout)
        if isinstance(reply, ErrorReply):
            raise RemoteError(reply)
        return reply

    def call_raw(
        self, kind: str, body: BaseModel | dict[str, Any], timeout: float | None = None
    ) -> Reply:
        """Like ``call`` but returns an ``ErrorReply`` instead of raising it."""
        with self._lock:
            header, frames = self.codec.encode(kind, body)
            self._dealer.send_multipart(frames)
            return self._await_reply(header.msg_id, timeout or self.timeout)

    def send_frames(self, frames: list[bytes]) -> None:
        """Send raw frames as they are (for fuzzing and diagnostics)."""
        with self._lock:
            self._dealer.send_multipart(frames)

    def _await_reply(self, msg_id: str, timeout: float) -> Reply:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._dealer.poll(int(remaining * 1000) + 1):
                raise RequestTimeout(
                    f"No reply from the backend at {self.info.request_endpoint} within "
                    f"{timeout:.1f}s. Is it running? Check `main.py call status`.",
                    timeout=timeout,
                )
            envelope = self._decode(self.codec, self._dealer.recv_multipart())
            if envelope is None or envelope.header.parent_id != msg_id:
                continue  # a late reply to an earlier, timed-out request
            return REPLY_ADAPTER.validate_python(envelope.body)

    @staticmethod
    def _decode(codec: Codec, frames: list[bytes]) -> Envelope | None:
        try:
            return codec.decode(frames)[1]
        except WireError as exc:
            log.warning("dropped frame from backend: %s", exc)
            return None

    def next_event(self, timeout: float) -> Event | None:
        """The next event within ``timeout`` seconds, or None. Unknown kinds are skipped."""
        if self._sub is None:
            raise RuntimeError("this client was created without events=True")
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if not self._sub.poll(int(remaining * 1000) + 1):
                return None
            envelope = self._decode(self._event_codec, self._sub.recv_multipart())
            if envelope is None:
                continue
            try:
                return EVENT_ADAPTER.validate_python(envelope.body)
            except ValidationError:
                log.info("skipped event of unknown kind %s", envelope.header.kind)
        return None

    def wait_event(self, predicate: Callable[[Event], bool], timeout: float = 10.0) -> Event:
        """Block until an event satisfying ``predicate`` arrives; ``RequestTimeout`` if not."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            event = self.next_event(remaining)
            if event is not None and predicate(event):
                return event
        raise RequestTimeout(f"no matching event within {timeout:.1f}s")
