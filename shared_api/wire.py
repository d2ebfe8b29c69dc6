"""MessagePack codec and HMAC-SHA256 signing for every frame.

A message is ONE frame (after any ROUTER identity frames)::

    b"EMC2" + HMAC-SHA256(channel + data) + data        where data = msgpack([header, body])

``header`` is ``[msg_id, parent_id, kind, ts, protocol]`` and ``body`` a map. One frame keeps
the per-message cost at that of a raw bytes echo; the signature covers everything after it,
and the channel the message travels on (``REQUEST``, ``REPLY`` or ``EVENT``), so nothing
signed for one direction is accepted in another (a reply or an event sent back to the
backend is not a request). A message that is unsigned, badly signed, replayed, too old,
malformed, or has more frames or bytes than allowed raises ``WireError`` and is dropped by
the receiver: an unauthenticated peer gets no reply. Counts and sizes are checked before
the signature is computed.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import ormsgpack
from pydantic import BaseModel

from shared_api.envelope import Envelope, Header, new_msg_id
from shared_api.version import PROTOCOL_VERSION

MAGIC = b"EMC2"
SIGNATURE_SCHEME = "hmac-sha256"
_SIG = 32
#: The channel a message is signed for: client -> backend, backend -> client, and events.
REQUEST, REPLY, EVENT = b"\x01", b"\x02", b"\x03"
#: At most this many frames in a message: ROUTER identities (one per hop) plus the payload.
MAX_FRAMES = 8
_DATA_AT = len(MAGIC) + _SIG
_new_tuple = tuple.__new__  # a NamedTuple built in C (its ``__new__`` is Python)
# Bound once: every message goes through them.
_compare_digest = hmac.compare_digest
_unpackb = ormsgpack.unpackb
_header_from_wire = Header.from_wire
_PACK_OPTS = ormsgpack.OPT_SERIALIZE_PYDANTIC | ormsgpack.OPT_NON_STR_KEYS


class WireError(Exception):
    """A frame that must be dropped. ``reason`` is a short tag for the log."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def pack(obj: Any) -> bytes:
    """MessagePack-encode plain data or pydantic models."""
    return ormsgpack.packb(obj, option=_PACK_OPTS)


def unpack(data: bytes) -> Any:
    return ormsgpack.unpackb(data)


class _Signer:
    """HMAC-SHA256 (RFC 2104) of ``channel + data`` for one key and channel, with the keyed
    pads (and the channel byte) hashed once: each message then costs two hash copies and
    its own bytes, not a key schedule (half the time of ``hmac.digest`` for 1 KB here)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes, channel: bytes) -> None:
        if len(key) > 64:  # the block size: longer keys are hashed first (RFC 2104)
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key) + channel)
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def __call__(self, data: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class ReplayGuard:
    """Rejects a message id seen before, and any message older than ``window`` seconds.

    Ids are remembered for at least ``window`` + ``max_skew`` seconds (and at most twice
    that): a message stamped up to ``max_skew`` in the future stays fresh that much longer,
    and its id must outlive it; after that the age check alone rejects a replay. The window
    is short because peers share this machine's clock.

    Two generations of plain sets, the older dropped whole every ``window + max_skew``
    seconds: no per-message bookkeeping of when each id was seen.
    """

    def __init__(self, window: float = 30.0, max_skew: float = 5.0) -> None:
        self.window = window
        self.max_skew = max_skew
        self._keep = window + max_skew
        self._current: set[str] = set()
        self._previous: set[str] = set()
        self._rotate_at = time.time() + self._keep

    def check(self, header: Header) -> None:
        now = time.time()
        ts = header.ts
        if ts < now - self.window:
            raise WireError("stale", f"message is {now - ts:.1f}s old")
        if ts > now + self.max_skew:
            raise WireError("future", f"timestamp {ts - now:.1f}s ahead")
        if now >= self._rotate_at:
            self._rotate(now)
        msg_id = header.msg_id
        if msg_id in self._current or msg_id in self._previous:
            raise WireError("replay", msg_id)
        self._current.add(msg_id)

    def _rotate(self, now: float) -> None:
        """Ids seen before the last rotation have been kept ``window + max_skew`` by now."""
        idle = now >= self._rotate_at + self._keep  # nothing came for a whole generation
        self._previous = set() if idle else self._current
        self._current = set()
        self._rotate_at = now + self._keep

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)


class Codec:
    """Encodes and signs outgoing messages; verifies and decodes incoming ones.

    ``replay_window=None`` turns replay checks off: right for a client, which only hears
    its own backend and matches replies by ``parent_id``.
    """

    def __init__(
        self,
        key: bytes,
        *,
        replay_window: float | None = 30.0,
        max_message_bytes: int | None = None,
    ) -> None:
        if len(key) < 16:
            raise ValueError("HMAC key must be at least 16 bytes")
        self._key = key
        self._signers = {ch: _Signer(key, ch) for ch in (REQUEST, REPLY, EVENT)}
        self.replay = ReplayGuard(replay_window) if replay_window else None
        self.max_message_bytes = max_message_bytes

    def sign(self, data: bytes, channel: bytes = REQUEST) -> bytes:
        signer = self._signers.get(channel)
        if signer is None:  # not one of ours: still a correct signature, made the slow way
            return hmac.digest(self._key, channel + data, "sha256")
        return signer(data)

    def seal(self, data: bytes, channel: bytes = REQUEST) -> bytes:
        """Frame already-packed ``data`` (msgpack of ``[header, body]``) for ``channel``."""
        return b"".join((MAGIC, self.sign(data, channel), data))

    def encode(
        self,
        kind: str,
        body: BaseModel | dict[str, Any],
        parent_id: str | None = None,
        channel: bytes = REQUEST,
    ) -> tuple[Header, bytes]:
        header = _new_tuple(Header, (new_msg_id(), parent_id, kind, time.time(), PROTOCOL_VERSION))
        data = ormsgpack.packb((tuple(header), body), option=_PACK_OPTS)
        return header, b"".join((MAGIC, self._signers[channel](data), data))

    def encode_with(
        self, header: Header, body: BaseModel | dict[str, Any], channel: bytes = REQUEST
    ) -> bytes:
        return self.seal(pack((tuple(header), body)), channel)

    def encode_payload(
        self, kind: str, body: BaseModel | dict[str, Any], parent_id: str | None, channel: bytes
    ) -> bytes:
        """``encode`` without building a ``Header``: only the payload (replies, events)."""
        header = (new_msg_id(), parent_id, kind, time.time(), PROTOCOL_VERSION)
        data = ormsgpack.packb((header, body), option=_PACK_OPTS)
        return b"".join((MAGIC, self._signers[channel](data), data))

    def decode(self, frames: list[bytes], channel: bytes = REQUEST) -> tuple[list[bytes], Envelope]:
        """Split off routing identities (all frames but the last), authenticate for
        ``channel``, decode.

        Raises ``WireError`` for anything to drop. The protocol version is left to the
        receiver, which can answer a signed peer that speaks another version with a typed
        error instead of silence.
        """
        count = len(frames)
        if not count:
            raise WireError("empty")
        if count > MAX_FRAMES:
            raise WireError("too_many_frames", f"{count} frames")
        frame = frames[-1]
        limit = self.max_message_bytes
        if limit is not None and sum(map(len, frames)) > limit:
            raise WireError("too_large", f"over {limit} bytes")
        if len(frame) < _DATA_AT or frame[:4] != MAGIC:
            raise WireError("not_a_message", f"{len(frame)} bytes without the {MAGIC!r} prefix")
        data = frame[_DATA_AT:]
        signer = self._signers.get(channel)
        signature = signer(data) if signer is not None else self.sign(data, channel)
        if not _compare_digest(frame[4:_DATA_AT], signature):
            raise WireError("bad_signature")
        try:
            raw = _unpackb(data)
            if type(raw) is not list or len(raw) != 2:
                raise ValueError("message must be [header, body]")
            header = _header_from_wire(raw[0])
            body = raw[1]
            if type(body) is not dict:
                raise ValueError("body must be a map")
        except (ormsgpack.MsgpackDecodeError, TypeError, ValueError) as exc:
            raise WireError("malformed", str(exc)[:200]) from None
        if self.replay is not None:
            self.replay.check(header)
        return frames[:-1], _new_tuple(Envelope, (header, body))

    def decode_reply(self, frame: bytes, channel: bytes = REPLY) -> tuple[Any, dict[str, Any]]:
        """A client's ``decode`` of a one-frame reply: ``(parent_id, body)``.

        Authenticated for ``channel`` exactly like ``decode``; of the header only the shape
        and ``parent_id`` are checked, the one field a client reads (it matches replies to
        requests by it and keeps no replay guard). Raises ``WireError``.
        """
        if len(frame) < _DATA_AT or frame[:4] != MAGIC:
            raise WireError("not_a_message", f"{len(frame)} bytes without the {MAGIC!r} prefix")
        data = frame[_DATA_AT:]
        if not _compare_digest(frame[4:_DATA_AT], self._signers[channel](data)):
            raise WireError("bad_signature")
        try:
            raw = _unpackb(data)
        except ormsgpack.MsgpackDecodeError as exc:
            raise WireError("malformed", str(exc)[:200]) from None
        if (
            type(raw) is not list
            or len(raw) != 2
            or type(header := raw[0]) is not list
            or len(header) != 5
            or type(body := raw[1]) is not dict
        ):
            raise WireError("malformed", "message must be [header of 5 fields, body map]")
        return header[1], body
