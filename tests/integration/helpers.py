"""Helpers for the integration tests: a raw ZeroMQ peer and a backend health check."""

from __future__ import annotations

import itertools
import socket
import struct
import time
from typing import Any

import zmq
from pydantic import BaseModel

from backend.launcher import BackendProcess
from shared_api.connection import ConnectionInfo
from shared_api.envelope import Envelope, Header
from shared_api.replies import Pong, ProtoUpdated, StateReply
from shared_api.wire import MAGIC, REPLY, Codec, WireError

_health_counter = itertools.count()


#: A sealed message is ``MAGIC + HMAC-SHA256(data) + data``: where ``data`` starts.
SIG_LEN = 32
DATA_AT = len(MAGIC) + SIG_LEN


def unseal(payload: bytes) -> tuple[bytes, bytes]:
    """Split a sealed payload frame into (signature, data) without checking the signature."""
    assert payload[: len(MAGIC)] == MAGIC, payload[:16]
    return payload[len(MAGIC) : DATA_AT], payload[DATA_AT:]


class RawPeer:
    """A bare DEALER that sends frames exactly as given and decodes whatever comes back.

    A well-formed request is a single payload frame (``encode``); frames sent before it
    travel as routing identities and come back, in front of the reply, unchanged.

    ``exchange`` sends frames, then a signed sentinel ``ping``. The backend authenticates and
    decodes one peer's frames in order on its loop thread and answers ``ping`` inline, so once
    the sentinel's reply is in, every frame sent before it has been dropped or dispatched, and
    every reply given inline has arrived. A reply from the worker pool (invoke, set_state,
    swap_proto, ...) can come later: wait for it by its ``msg_id`` (``expect_reply_to``).
    """

    def __init__(self, info: ConnectionInfo) -> None:
        self.info = info
        self.codec = Codec(info.key_bytes)
        self.sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(info.request_endpoint)

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close(0)

    def encode(self, kind: str, body: BaseModel | dict[str, Any]) -> tuple[Header, bytes]:
        """A signed request: its header and the single payload frame to send."""
        return self.codec.encode(kind, body)

    def send(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def recv(self, timeout: float) -> tuple[list[bytes], Envelope] | None:
        """The next message within ``timeout`` s as (raw frames, envelope), or None.

        A message from the backend that does not authenticate is a test failure.
        """
        if not self.sock.poll(int(timeout * 1000) + 1):
            return None
        frames = self.sock.recv_multipart()
        try:
            return frames, self.codec.decode(frames, REPLY)[1]
        except WireError as exc:  # pragma: no cover - would be a backend bug
            raise AssertionError(f"the backend sent a message that does not verify: {exc}") from exc

    def exchange(
        self, frames: list[bytes], expect_reply_to: str | None = None, timeout: float = 15.0
    ) -> list[Envelope]:
        """Send ``frames``, then a sentinel ping; return every message other than the
        sentinel's reply that arrived before it (and before ``expect_reply_to``'s reply)."""
        self.send(frames)
        sentinel, ping = self.encode("ping", {})
        self.send([ping])
        waiting = {sentinel.msg_id} | ({expect_reply_to} if expect_reply_to else set())
        received: list[Envelope] = []
        deadline = time.monotonic() + timeout
        while waiting:
            remaining = deadline - time.monotonic()
            got = self.recv(remaining) if remaining > 0 else None
            if got is None:
                raise AssertionError(
                    f"no reply to {sorted(waiting)} within {timeout}s; received so far: "
                    f"{[e.body for e in received]}"
                )
            envelope = got[1]
            waiting.discard(envelope.header.parent_id or "")
            if envelope.header.parent_id == sentinel.msg_id:
                assert envelope.body["kind"] == "pong", envelope.body
            else:
                received.append(envelope)
        return received


def assert_healthy(backend: BackendProcess) -> None:
    """The process is alive and a fresh client can ping, write and read back state."""
    assert backend.alive, f"the backend died:\n{backend.log_tail(60)}"
    n = next(_health_counter)
    with backend.client(timeout=15.0) as client:
        assert isinstance(client.call("ping", {}), Pong)
        value = {"n": n, "t": time.time()}
        updated = client.call(
            "set_state", {"proto": "BRICK", "path": f"health.c{n}", "value": value}
        )
        assert isinstance(updated, ProtoUpdated)
        got = client.call("get_state", {"proto": "BRICK", "path": f"health.c{n}"})
        assert isinstance(got, StateReply)
        assert got.value == value
        assert got.version == updated.version


def zmtp_connect(endpoint: str, socket_type: bytes = b"SUB") -> socket.socket:
    """A bare ZMTP 3.0 peer (NULL security) on ``endpoint``: what an attacker writes to send
    frames a libzmq socket would never send, e.g. a 64 MB subscription that no local
    subscription trie had to store first."""
    if endpoint.startswith("ipc://"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(endpoint[len("ipc://") :])
    else:
        host, port = endpoint[len("tcp://") :].rsplit(":", 1)
        sock = socket.create_connection((host.strip("[]"), int(port)))
    sock.settimeout(10)
    mechanism = b"NULL".ljust(20, b"\x00")
    sock.sendall(b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + mechanism + b"\x00" * 32)
    greeting = b""
    while len(greeting) < 64:
        chunk = sock.recv(64 - len(greeting))
        if not chunk:
            raise ConnectionError("closed during the ZMTP greeting")
        greeting += chunk
    ready = b"\x05READY\x0bSocket-Type" + struct.pack(">I", len(socket_type)) + socket_type
    sock.sendall(b"\x04" + bytes([len(ready)]) + ready)
    return sock


def zmtp_send(sock: socket.socket, data: bytes) -> None:
    """Send one single-frame message on a ``zmtp_connect`` socket."""
    if len(data) < 256:
        sock.sendall(b"\x00" + bytes([len(data)]) + data)
    else:
        sock.sendall(b"\x02" + struct.pack(">Q", len(data)) + data)
