"""The only module that imports zmq: the backend's sockets and the clients' channels.

The backend binds a ROUTER (requests) and an XPUB (events). A client connects a DEALER and,
when it wants events, a SUB. Requests are matched to replies by ``parent_id`` with a deadline.

The request loop blocks in one ``recv`` on the ROUTER, the cheapest wait there is. Other
threads hand it replies through the ROUTER itself: each has a private DEALER on an
``inproc`` endpoint whose routing id is a per-process secret, so the loop can tell its own
mail from a peer's request without a poll over several sockets.

Events go out from a thread of their own (``EventPublisher``), which also vets every
subscription: libzmq keeps each subscription prefix in the publisher's memory (~48 bytes
per byte, see STACK.md), so only the one our clients use (everything, ``b""``) is applied,
and a subscription message longer than ``MAX_SUBSCRIPTION`` bytes disconnects its sender
before it is even read. Publishing never blocks: an event that finds the queue full is
dropped and counted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from pydantic import BaseModel, ValidationError
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from shared_api.commands import Command
from shared_api.connection import ConnectionInfo
from shared_api.envelope import Envelope
from shared_api.errors import ErrorReply, RemoteError, RequestTimeout, UnavailableError
from shared_api.events import EVENT_ADAPTER, Event
from shared_api.replies import REPLY_ADAPTER, Reply
from shared_api.wire import EVENT, Codec, WireError

log = logging.getLogger(__name__)

#: First frame of the loop's own mail: forward ``[ident..., payload]`` as a reply...
MAIL_REPLY = b"R"
#: ...or just wake up (to notice a stop request).
MAIL_WAKE = b"W"
_MORE = zmq.SNDMORE | zmq.NOBLOCK
#: pyzmq's own ``send``, under the Python layer of ``zmq.Socket.send`` (which only adds
#: routing ids and groups, unused here) and of ``send_multipart`` (which type-checks each
#: part in Python first): request and reply paths send a frame or two per message.
_send = zmq.backend.Socket.send
#: The subscriptions an event socket applies (ZMTP: 1 = subscribe, 0 = cancel, then the
#: prefix): everything, which is what every client of ours asks for. Others are ignored.
ALLOWED_SUBSCRIPTIONS = frozenset({b"\x01", b"\x00"})
#: A subscription message longer than this makes libzmq drop its sender unread.
MAX_SUBSCRIPTION = 64
#: The same bound on an XPUB under CURVE, which must let the key exchange through.
CURVE_MAX_FRAME = 1024


# -- CURVE (a backend on tcp, reachable from other machines) ----------------------------------
@dataclass(frozen=True)
class Curve:
    """CURVE for a backend's sockets: its keypair, and the folder of the public keys of the
    clients it lets in (``*.key`` certificates, read at startup)."""

    public: bytes
    secret: bytes
    authorized: Path


#: A home's folder of CURVE keypairs (``backend.home.Home.keys_dir``).
KEYS_DIR = "keys"


def ensure_keypair(directory: Path, name: str) -> Path:
    """``directory/NAME.key`` (public) and ``NAME.key_secret`` (0600), created if missing;
    returns the secret file."""
    secret = directory / f"{name}.key_secret"
    if not secret.exists():
        zmq.auth.create_certificates(directory, name)
    os.chmod(secret, 0o600)
    return secret


def load_keypair(secret_file: Path) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys from a ``.key_secret`` certificate."""
    public, secret = zmq.auth.load_certificate(secret_file)
    if secret is None:
        raise ValueError(f"{secret_file} holds no secret key")
    return public, secret


def _is_curve_key(key: bytes) -> bool:
    try:
        return len(z85.decode(key)) == 32
    except (ValueError, KeyError):  # KeyError: a character outside Z85's alphabet
        return False


def home_client_keys(home: Path) -> tuple[bytes, bytes] | None:
    """The CURVE client keypair of a home (``HOME/keys/client.key_secret``, made by
    ``main.py keys``), or None when it has none."""
    secret = home / KEYS_DIR / "client.key_secret"
    if not secret.exists():
        return None
    try:
        keys = load_keypair(secret)
    except (OSError, ValueError) as exc:
        raise UnavailableError(
            f"{secret} is unreadable ({exc}). Delete it and client.key, run `main.py keys "
            f"--home {home}`, and authorize the new keys/client.key on the backend.",
        ) from None
    if not all(map(_is_curve_key, keys)):
        raise UnavailableError(
            f"{secret} holds no valid CURVE keypair. Delete it and client.key, run "
            f"`main.py keys --home {home}`, and authorize the new keys/client.key on the backend."
        )
    return keys


def keys_for(home: Path, info: ConnectionInfo) -> tuple[bytes, bytes] | None:
    """The client keys to present to the backend ``info`` names: the home's own when that
    backend wants CURVE, else None."""
    return home_client_keys(home) if info.server_key else None


def is_foreign(home: Path, info: ConnectionInfo) -> bool:
    """True when ``HOME/connection.json`` is a copy of another home's (a remote backend's):
    it names another home, or a CURVE key that is not this home's own server key. A client
    attaches to such a backend but never starts one of its own in its place."""
    if Path(info.home).expanduser().resolve() != home.expanduser().resolve():
        return True
    if not info.server_key:
        return False
    try:
        own, _ = zmq.auth.load_certificate(home / KEYS_DIR / "server.key")
    except (OSError, ValueError):
        return True
    return own.decode() != info.server_key


def authorize(public_file: Path, authorized: Path) -> Path:
    """Copy a client's public certificate into the backend's ``authorized`` folder."""
    public, secret = zmq.auth.load_certificate(public_file)  # raises if it is no certificate
    if secret is not None:
        raise ValueError(f"{public_file} holds a secret key: authorize its public .key file")
    authorized.mkdir(mode=0o700, exist_ok=True)
    target = authorized / f"{public.decode()[:20].replace('/', '_')}.key"
    shutil.copyfile(public_file, target)
    return target


def _curve_server(sock: zmq.Socket[bytes], curve: Curve | None) -> None:
    if curve is not None:  # before bind
        sock.setsockopt(zmq.CURVE_SECRETKEY, curve.secret)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, curve.public)
        sock.setsockopt(zmq.CURVE_SERVER, 1)


def _require_keys(server_key: str, keys: tuple[bytes, bytes] | None) -> None:
    if server_key and not _is_curve_key(server_key.encode()):
        raise UnavailableError(
            "The server key in this home's connection.json is not a CURVE public key (it was "
            "edited or damaged). Copy the backend's connection.json again."
        )
    if server_key and keys is None:
        raise UnavailableError(
            "This backend lets in only authorized CURVE keys and this home has none. Run "
            "`main.py keys --home HOME`, then authorize its keys/client.key on the backend."
        )


def _curve_client(
    sock: zmq.Socket[bytes], server_key: str, keys: tuple[bytes, bytes] | None
) -> None:
    if not server_key or keys is None:
        return
    sock.setsockopt(zmq.CURVE_SERVERKEY, server_key.encode())
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys[0])
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys[1])


def _bind(sock: zmq.Socket[bytes], spec: str) -> str:
    """Bind to ``tcp://IP`` (random port), ``tcp://IP:PORT`` or ``ipc://PATH``."""
    if spec.startswith("tcp://") and spec.count(":") == 1:
        port = sock.bind_to_random_port(spec)
        return f"{spec}:{port}"
    sock.bind(spec)
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


class EventPublisher:
    """An XPUB served by its own thread: events in through ``publish`` (any thread, never
    blocks), out to subscribers; subscriptions vetted (see the module docstring)."""

    def __init__(
        self, context: zmq.Context[zmq.Socket[bytes]], spec: str, curve: Curve | None = None
    ) -> None:
        self._context = context
        self.xpub = context.socket(zmq.XPUB)
        _curve_server(self.xpub, curve)
        self.xpub.setsockopt(zmq.LINGER, 500)
        self.xpub.setsockopt(zmq.SNDHWM, 100_000)
        self.xpub.setsockopt(zmq.XPUB_MANUAL, 1)
        # Under CURVE the limit also meets the handshake's commands (HELLO is 200 bytes,
        # INITIATE more), and only authorized keys get that far.
        bound = MAX_SUBSCRIPTION if curve is None else CURVE_MAX_FRAME
        self.xpub.setsockopt(zmq.MAXMSGSIZE, bound)
        self.endpoint = _bind(self.xpub, spec)
        self._inbox = context.socket(zmq.PULL)
        self._inbox_endpoint = f"inproc://events-{os.urandom(8).hex()}"
        self._inbox.bind(self._inbox_endpoint)
        self._stop = b"stop-" + os.urandom(16)
        self._local = threading.local()
        self._senders: list[zmq.Socket[bytes]] = []
        self._lock = threading.Lock()
        #: Counters: events dropped on a full queue, subscriptions refused.
        self.dropped = 0
        self.refused = 0
        self._thread = threading.Thread(target=self._serve, name="events", daemon=True)
        self._thread.start()

    def publish(self, payload: bytes) -> bool:
        """Thread-safe; False (and the event dropped) when the queue is full."""
        sender: zmq.Socket[bytes] | None = getattr(self._local, "sender", None)
        if sender is None:
            sender = self._context.socket(zmq.PUSH)
            sender.setsockopt(zmq.LINGER, 0)
            sender.setsockopt(zmq.SNDHWM, 10_000)
            sender.connect(self._inbox_endpoint)
            with self._lock:
                self._senders.append(sender)
            self._local.sender = sender
        try:
            sender.send(payload, zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return False
        return True

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._inbox, zmq.POLLIN)
        poller.register(self.xpub, zmq.POLLIN)
        while True:
            for sock, _ in poller.poll():
                if sock is self.xpub:
                    self._vet_subscriptions()
                elif not self._forward():
                    return

    def _forward(self) -> bool:
        """Send every queued event; False once asked to stop."""
        while True:
            try:
                payload = self._inbox.recv(zmq.NOBLOCK)
            except zmq.Again:
                return True
            if payload == self._stop:
                return False
            try:
                self.xpub.send(payload, zmq.NOBLOCK)
            except zmq.Again:
                self.dropped += 1  # subscribers too slow

    def _vet_subscriptions(self) -> None:
        while True:
            try:
                message = self.xpub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if message not in ALLOWED_SUBSCRIPTIONS:
                self.refused += 1
                continue
            # In manual mode this applies to the subscriber whose message was just read.
            option = zmq.SUBSCRIBE if message[:1] == b"\x01" else zmq.UNSUBSCRIBE
            self.xpub.setsockopt(option, message[1:])

    def close(self) -> None:
        """Send what is queued, stop the thread, close the sockets."""
        if self._thread.is_alive():
            self.publish(self._stop)
            self._thread.join(timeout=5)
        with self._lock:
            for sender in self._senders:
                sender.close()
        self._inbox.close()
        self.xpub.close()


class ServerSockets:
    """The ROUTER, owned by the request loop's thread, a mailbox for other threads, and the
    event publisher."""

    def __init__(
        self,
        request_spec: str,
        event_spec: str,
        *,
        max_message_bytes: int,
        tick_ms: int,
        curve: Curve | None = None,
    ) -> None:
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.auth: ThreadAuthenticator | None = None
        if curve is not None:  # the authenticator runs before anything is bound
            self.auth = ThreadAuthenticator(self.context, log=logging.getLogger("zap"))
            self.auth.start()
            self.auth.configure_curve(domain="*", location=str(curve.authorized))
        self.router = self.context.socket(zmq.ROUTER)
        _curve_server(self.router, curve)
        self.router.setsockopt(zmq.LINGER, 1000)  # let a final reply (e.g. to shutdown) go out
        self.router.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        self.router.setsockopt(zmq.RCVTIMEO, tick_ms)
        self.request_endpoint = _bind(self.router, request_spec)
        self.events = EventPublisher(self.context, event_spec, curve)
        self.event_endpoint = self.events.endpoint
        self.mail_id = b"mail-" + os.urandom(16)
        self._mail_endpoint = f"inproc://mail-{os.urandom(8).hex()}"
        self.router.bind(self._mail_endpoint)
        self._local = threading.local()
        self._mailboxes: list[zmq.Socket[bytes]] = []
        self._mail_lock = threading.Lock()

    # -- the loop thread --------------------------------------------------------------------
    def recv(self) -> list[bytes] | None:
        """The next message, or None after ``tick_ms`` of silence."""
        router = self.router
        try:
            frames = [router.recv()]  # (``recv_multipart`` adds a Python layer per frame)
        except zmq.Again:
            return None
        while router.get(zmq.RCVMORE):  # the rest of a message is there at once
            frames.append(router.recv())
        return frames

    def recv_nowait(self) -> list[bytes] | None:
        try:
            return self.router.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None

    def send_reply(self, identities: list[bytes], payload: bytes) -> None:
        """Send ``payload`` to the peer that ``identities`` route to."""
        send = _send
        router = self.router
        try:
            for identity in identities:
                send(router, identity, _MORE)
            send(router, payload, zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # peer gone or its queue full: the reply is dropped
            log.warning("could not send reply: %s", exc)

    # -- any thread -------------------------------------------------------------------------
    def publish(self, payload: bytes) -> bool:
        """Never blocks; False when the event was dropped (the queue is full)."""
        return self.events.publish(payload)

    def mail(self, frames: list[bytes]) -> None:
        """Thread-safe: hand ``frames`` to the loop (see ``MAIL_*``)."""
        box: zmq.Socket[bytes] | None = getattr(self._local, "box", None)
        if box is None:
            box = self.context.socket(zmq.DEALER)
            box.setsockopt(zmq.LINGER, 1000)
            box.setsockopt(zmq.ROUTING_ID, self.mail_id + os.urandom(4))
            box.connect(self._mail_endpoint)
            with self._mail_lock:
                self._mailboxes.append(box)
            self._local.box = box
        box.send_multipart(frames)

    def is_mail(self, frames: list[bytes]) -> bool:
        return frames[0].startswith(self.mail_id)

    def close(self) -> None:
        self.events.close()
        with self._mail_lock:
            for box in self._mailboxes:
                box.close()
        self.router.close()
        if self.auth is not None:
            self.auth.stop()
        self.context.term()
        for endpoint in (self.request_endpoint, self.event_endpoint):
            if endpoint.startswith("ipc://"):  # libzmq unlinks them late or, at exit, never
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(endpoint.removeprefix("ipc://"))


#: How often a CURVE client waiting for a reply looks at its handshake's outcome.
HANDSHAKE_CHECK_S = 0.1
#: Failed key exchanges (libzmq retries every 100 ms) before the server key is called wrong.
HANDSHAKE_FAILURES = 3


class _HandshakeWatch:
    """The CURVE handshake events of a client socket (its monitor), for ``check``."""

    EVENTS = (
        zmq.EVENT_HANDSHAKE_SUCCEEDED
        | zmq.EVENT_HANDSHAKE_FAILED_AUTH
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL  # what a wrong server key gives
    )

    def __init__(
        self, sock: zmq.Socket[bytes], info: ConnectionInfo, keys: tuple[bytes, bytes] | None
    ) -> None:
        self._sock = sock
        self._info = info
        self._public = keys[0].decode() if keys else ""
        self._monitor = sock.get_monitor_socket(self.EVENTS)
        self.succeeded = False
        self.failures = 0

    def check(self) -> None:
        """Raise ``UnavailableError`` if the backend refused this client's key, or the key
        exchange failed before ever succeeding (a server key that is not the backend's)."""
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.succeeded = True
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                raise UnavailableError(
                    f"The backend at {self._info.request_endpoint} refused this home's CURVE "
                    "key. Authorize keys/client.key there (`main.py keys --authorize FILE`) "
                    "and restart it.",
                    endpoint=self._info.request_endpoint,
                    public_key=self._public,
                )
            elif not self.succeeded:
                # a wrong server key, or (once) a connection dropped mid-handshake
                self.failures += 1
                if self.failures >= HANDSHAKE_FAILURES:
                    raise UnavailableError(
                        f"The CURVE handshake with {self._info.request_endpoint} failed "
                        f"{self.failures} times: this home's connection.json holds another "
                        "server key. Copy the backend's connection.json again.",
                        endpoint=self._info.request_endpoint,
                    )

    def close(self) -> None:
        self._sock.disable_monitor()
        self._monitor.close(0)


#: The reply union's validator itself (``TypeAdapter.validate_python`` adds a Python layer).
_validate_reply: Callable[[Any], Reply] = REPLY_ADAPTER.validator.validate_python


class Client:
    """A synchronous client: one request at a time per instance (guarded by a lock).

    Use one ``Client`` per thread for concurrency. ``events=True`` also subscribes to events.
    """

    def __init__(
        self,
        info: ConnectionInfo,
        *,
        events: bool = False,
        timeout: float = 10.0,
        curve_keys: tuple[bytes, bytes] | None = None,
    ) -> None:
        _require_keys(info.server_key, curve_keys)  # before any socket is made
        self.info = info
        self.timeout = timeout
        self.codec = Codec(info.key_bytes, replay_window=None)
        self._lock = threading.Lock()
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._dealer = ctx.socket(zmq.DEALER)
        self._dealer.setsockopt(zmq.LINGER, 0)
        _curve_client(self._dealer, info.server_key, curve_keys)
        # Under CURVE a refused key gets no reply at all: the handshake's outcome, read from
        # the socket's monitor, turns a silent wait into a clear refusal.
        self._handshake = (
            _HandshakeWatch(self._dealer, info, curve_keys) if info.server_key else None
        )
        self._dealer.connect(info.request_endpoint)
        self._rcvtimeo = -1
        self._sub: zmq.Socket[bytes] | None = None
        if events:
            self._sub = ctx.socket(zmq.SUB)
            self._sub.setsockopt(zmq.LINGER, 0)
            self._sub.setsockopt(zmq.RCVHWM, 0)
            self._sub.setsockopt(zmq.SUBSCRIBE, b"")
            _curve_client(self._sub, info.server_key, curve_keys)
            self._sub.connect(info.event_endpoint)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._handshake is not None:
            self._handshake.close()
        self._dealer.close(0)
        if self._sub is not None:
            self._sub.close(0)

    def request(self, command: Command, timeout: float | None = None) -> Reply:
        """Send a typed command; return the typed reply or raise ``RemoteError``."""
        reply = self._exchange(command.kind, command, timeout or self.timeout)
        if isinstance(reply, ErrorReply):
            raise RemoteError(reply)
        return reply

    def call(
        self, kind: str, body: BaseModel | dict[str, Any], timeout: float | None = None
    ) -> Reply:
        """Send ``kind`` with an (unvalidated) body: the backend validates it."""
        reply = self._exchange(kind, body, timeout or self.timeout)
        if isinstance(reply, ErrorReply):
            raise RemoteError(reply)
        return reply

    def call_raw(
        self, kind: str, body: BaseModel | dict[str, Any], timeout: float | None = None
    ) -> Reply:
        """Like ``call`` but returns an ``ErrorReply`` instead of raising it."""
        return self._exchange(kind, body, timeout or self.timeout)

    def _send_curve(self, payload: bytes, timeout: float) -> None:
        """Send under CURVE: a refused key leaves the DEALER without a peer, where a plain
        ``send`` would block for ever."""
        assert self._handshake is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._dealer.send(payload, zmq.NOBLOCK)
                return
            except zmq.Again:
                self._handshake.check()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RequestTimeout(
                        f"The backend at {self.info.request_endpoint} took no request within "
                        f"{timeout:.1f}s. Is it running? Check `main.py call status`.",
                        timeout=timeout,
                    ) from None
                self._dealer.poll(int(min(remaining, HANDSHAKE_CHECK_S) * 1000) + 1, zmq.POLLOUT)

    def send_frames(self, frames: list[bytes]) -> None:
        """Send raw frames as they are (for fuzzing and diagnostics)."""
        with self._lock:
            self._dealer.send_multipart(frames)

    def _exchange(self, kind: str, body: BaseModel | dict[str, Any], timeout: float) -> Reply:
        """Send, then wait on this thread in one blocking ``recv`` (no poller, no hand-over
        to another thread) for the reply whose parent is the request; one decode and one
        validation. Replies to earlier, timed-out requests are skipped."""
        with self._lock:
            header, payload = self.codec.encode(kind, body)
            dealer = self._dealer
            if self._handshake is None:
                _send(dealer, payload)
            else:
                self._send_curve(payload, timeout)
            deadline = time.monotonic() + timeout
            remaining = timeout
            # Without CURVE one wait; with it, slices, to notice a refused handshake quickly.
            piece = timeout if self._handshake is None else HANDSHAKE_CHECK_S
            while True:
                ms = max(1, int(min(remaining, piece) * 1000))
                if ms != self._rcvtimeo:
                    dealer.setsockopt(zmq.RCVTIMEO, ms)
                    self._rcvtimeo = ms
                try:
                    frame = dealer.recv()
                    if dealer.get(zmq.RCVMORE):  # a reply is one frame: drop the message
                        raise WireError("too_many_frames", f"{len(self._drain())} more frames")
                    parent_id, body = self.codec.decode_reply(frame)
                except zmq.Again:
                    if self._handshake is not None:
                        self._handshake.check()  # raises when the backend refused this client
                    if deadline - time.monotonic() <= 0:
                        raise self._timed_out(timeout) from None
                except WireError as exc:
                    log.warning("dropped frame from backend: %s", exc)
                else:
                    if parent_id == header.msg_id:
                        return _validate_reply(body)
                remaining = deadline - time.monotonic()  # a reply to an earlier request
                if remaining <= 0:
                    raise self._timed_out(timeout)

    def _drain(self) -> list[bytes]:
        """The rest of a multipart message on the request socket."""
        frames = [self._dealer.recv()]
        while self._dealer.get(zmq.RCVMORE):
            frames.append(self._dealer.recv())
        return frames

    def _timed_out(self, timeout: float) -> RequestTimeout:
        return RequestTimeout(
            f"No reply from the backend at {self.info.request_endpoint} within "
            f"{timeout:.1f}s. Is it running? Check `main.py call status`.",
            timeout=timeout,
        )

    def _recv(self, sock: zmq.Socket[bytes], seconds: float) -> list[bytes] | None:
        sock.setsockopt(zmq.RCVTIMEO, max(1, int(seconds * 1000)))
        try:
            return sock.recv_multipart()
        except zmq.Again:
            return None

    def _decode(self, frames: list[bytes], channel: bytes) -> Envelope | None:
        try:
            return self.codec.decode(frames, channel)[1]
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
            envelope = self._decode(frames, EVENT)
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
