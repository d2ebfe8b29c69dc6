"""The only module that imports zmq: the backend's sockets and the clients' channels.

The backend binds a ROUTER (requests) and a PUB (events). A client connects a DEALER and,
when it wants events, a SUB. Requests are matched to replies by ``parent_id`` with a deadline.

The request loop blocks in one ``recv`` on the ROUTER, the cheapest wait there is. Other
threads hand it replies and events through the ROUTER itself: each has a private DEALER on
an ``inproc`` endpoint whose routing id is a per-process secret, so the loop can tell its
own mail from a peer's request without a poll over several sockets.
"""

from __future__ import annotations

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

#: First frame of the loop's own mail: forward ``[ident..., payload]`` as a reply...
MAIL_REPLY = b"R"
#: ...or publish ``[payload]`` as an event...
MAIL_EVENT = b"E"
#: ...or just wake up (to notice a stop request).
MAIL_WAKE = b"W"


def _bind(sock: zmq.Socket[bytes], spec: str) -> str:
    """Bind to ``tcp://IP`` (random port), ``tcp://IP:PORT`` or ``ipc://PATH``."""
    if spec.startswith("tcp://") and spec.count(":") == 1:
        port = sock.bind_to_random_port(spec)
        return f"{spec}:{port}"
    sock.bind(spec)
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


class ServerSockets:
    """ROUTER + PUB, owned by the request loop's thread, plus a mailbox for other threads."""

    def __init__(
        self, request_spec: str, event_spec: str, *, max_message_bytes: int, tick_ms: int
    ) -> None:
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 1000)  # let a final reply (e.g. to shutdown) go out
        self.router.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        self.router.setsockopt(zmq.RCVTIMEO, tick_ms)
        self.pub = self.context.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 500)
        self.pub.setsockopt(zmq.SNDHWM, 100_000)
        self.request_endpoint = _bind(self.router, request_spec)
        self.event_endpoint = _bind(self.pub, event_spec)
        self.mail_id = b"mail-" + os.urandom(16)
        self._mail_endpoint = f"inproc://mail-{os.urandom(8).hex()}"
        self.router.bind(self._mail_endpoint)
        self._local = threading.local()
        self._mailboxes: list[zmq.Socket[bytes]] = []
        self._mail_lock = threading.Lock()

    # -- the loop thread --------------------------------------------------------------------
    def recv(self) -> list[bytes] | None:
        """The next message, or None after ``tick_ms`` of silence."""
        try:
            return self.router.recv_multipart()
        except zmq.Again:
            return None

    def recv_nowait(self) -> list[bytes] | None:
        try:
            return self.router.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None

    def send_reply(self, frames: list[bytes]) -> None:
        try:
            self.router.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # peer gone or its queue full: the reply is dropped
            log.warning("could not send reply: %s", exc)

    def publish(self, payload: bytes) -> None:
        try:
            self.pub.send(payload, zmq.NOBLOCK)
        except zmq.Again:
            log.warning("event dropped: subscribers too slow")

    # -- any other thread -------------------------------------------------------------------
    def mail(self, frames: list[bytes], *, block: bool = True) -> bool:
        """Thread-safe: hand ``frames`` to the loop (see ``MAIL_*``). With ``block=False``
        the mail is dropped (False) instead of waiting when the loop is not draining its
        mailbox, e.g. before it runs: an event must never stall its publisher."""
        box: zmq.Socket[bytes] | None = getattr(self._local, "box", None)
        if box is None:
            box = self.context.socket(zmq.DEALER)
            box.setsockopt(zmq.LINGER, 1000)
            box.setsockopt(zmq.ROUTING_ID, self.mail_id + os.urandom(4))
            box.connect(self._mail_endpoint)
            with self._mail_lock:
                self._mailboxes.append(box)
            self._local.box = box
        try:
            box.send_multipart(frames, 0 if block else zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def is_mail(self, frames: list[bytes]) -> bool:
        return frames[0].startswith(self.mail_id)

    def close(self) -> None:
        with self._mail_lock:
            for box in self._mailboxes:
                box.close()
        self.router.close()
        self.pub.close()
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
        self.codec = Codec(info.key_bytes, replay_window=None)
        self._lock = threading.Lock()
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._dealer = ctx.socket(zmq.DEALER)
        self._dealer.setsockopt(zmq.LINGER, 0)
        self._dealer.connect(info.request_endpoint)
        self._rcvtimeo = -1
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
            header, payload = self.codec.encode(kind, body)
            self._dealer.send(payload)
            return self._await_reply(header.msg_id, timeout or self.timeout)

    def send_frames(self, frames: list[bytes]) -> None:
        """Send raw frames as they are (for fuzzing and diagnostics)."""
        with self._lock:
            self._dealer.send_multipart(frames)

    def _await_reply(self, msg_id: str, timeout: float) -> Reply:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            frames = self._recv(self._dealer, remaining) if remaining > 0 else None
            if frames is None:
                raise RequestTimeout(
                    f"No reply from the backend at {self.info.request_endpoint} within "
                    f"{timeout:.1f}s. Is it running? Check `main.py call status`.",
                    timeout=timeout,
                )
            envelope = self._decode(frames)
            if envelope is None or envelope.header.parent_id != msg_id:
                continue  # a late reply to an earlier, timed-out request
            return REPLY_ADAPTER.validate_python(envelope.body)

    def _recv(self, sock: zmq.Socket[bytes], seconds: float) -> list[bytes] | None:
        ms = max(1, int(seconds * 1000))
        if sock is self._dealer:
            if ms != self._rcvtimeo:
                sock.setsockopt(zmq.RCVTIMEO, ms)
                self._rcvtimeo = ms
        else:
            sock.setsockopt(zmq.RCVTIMEO, ms)
        try:
            return sock.recv_multipart()
        except zmq.Again:
            return None

    def _decode(self, frames: list[bytes]) -> Envelope | None:
        try:
            return self.codec.decode(frames)[1]
        except WireError as exc:
            log.warning("dropped frame from backend: %s", exc)
            return None

    def next_event(self, timeout: float) -> Event | None:
        """The next event within ``timeout`` seconds, or None. Unknown kinds are skipped."""
        if self._sub is None:
            raise RuntimeError("this client was created without events=True")
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            frames = self._recv(self._sub, remaining)
            if frames is None:
                return None
            envelope = self._decode(frames)
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
