"""MessagePack codec and HMAC-SHA256 signing for every frame.

A message is ONE frame (after any ROUTER identity frames)::

    b"EMC1" + HMAC-SHA256(data) + data        where data = msgpack([header, body])

``header`` is ``[msg_id, parent_id, kind, ts, protocol]`` and ``body`` a map. One frame keeps
the per-message cost at that of a raw bytes echo; the signature covers everything after it.
A frame that is unsigned, badly signed, replayed, too old or malformed raises ``WireError``
and is dropped by the receiver: an unauthenticated peer gets no reply.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import ormsgpack
from pydantic import BaseModel

from shared_api.envelope import Envelope, Header

MAGIC = b"EMC1"
SIGNATURE_SCHEME = "hmac-sha256"
_SIG = 32
_DATA_AT = len(MAGIC) + _SIG
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


class ReplayGuard:
    """Rejects a message id seen before, and any message older than ``window`` seconds.

    Ids are remembered for ``window`` seconds; after that the age check alone rejects a
    replay. The window is short because peers share this machine's clock.
    """

    def __init__(self, window: float = 30.0, max_skew: float = 5.0) -> None:
        self.window = window
        self.max_skew = max_skew
        self._seen: OrderedDict[str, float] = OrderedDict()

    def check(self, header: Header) -> None:
        now = time.time()
        if header.ts < now - self.window:
            raise WireError("stale", f"message is {now - header.ts:.1f}s old")
        if header.ts > now + self.max_skew:
            raise WireError("future", f"timestamp {header.ts - now:.1f}s ahead")
        seen = self._seen
        if header.msg_id in seen:
            raise WireError("replay", header.msg_id)
        seen[header.msg_id] = now
        horizon = now - self.window
        while seen:
            oldest_id, seen_at = next(iter(seen.items()))
            if seen_at >= horizon:
                break
            del seen[oldest_id]

    def __len__(self) -> int:
        return len(self._seen)


class Codec:
    """Encodes and signs outgoing messages; verifies and decodes incoming ones.

    ``replay_window=None`` turns replay checks off: right for a client, which only hears
    its own backend and matches replies by ``parent_id``.
    """

    def __init__(self, key: bytes, *, replay_window: float | None = 30.0) -> None:
        if len(key) < 16:
            raise ValueError("HMAC key must be at least 16 bytes")
        self._key = key
        self.replay = ReplayGuard(replay_window) if replay_window else None

    def sign(self, data: bytes) -> bytes:
        return hmac.digest(self._key, data, "sha256")

    def seal(self, data: bytes) -> bytes:
        """Frame already-packed ``data`` (msgpack of ``[header, body]``)."""
        return MAGIC + hmac.digest(self._key, data, "sha256") + data

    def encode(
        self, kind: str, body: BaseModel | dict[str, Any], parent_id: str | None = None
    ) -> tuple[Header, bytes]:
        header = Header.make(kind, parent_id)
        return header, self.seal(pack((tuple(header), body)))

    def encode_with(self, header: Header, body: BaseModel | dict[str, Any]) -> bytes:
        return self.seal(pack((tuple(header), body)))

    def decode(self, frames: Sequence[bytes]) -> tuple[list[bytes], Envelope]:
        """Split off routing identities (all frames but the last), authenticate, decode.

        Raises ``WireError`` for anything to drop. The protocol version is left to the
        receiver, which can answer a signed peer that speaks another version with a typed
        error instead of silence.
        """
        if not frames:
            raise WireError("empty")
        frame = frames[-1]
        if frame[:4] != MAGIC or len(frame) < _DATA_AT:
            raise WireError("not_a_message", f"{len(frame)} bytes without the {MAGIC!r} prefix")
        data = frame[_DATA_AT:]
        if not hmac.compare_digest(frame[len(MAGIC) : _DATA_AT], self.sign(data)):
            raise WireError("bad_signature")
        try:
            raw = ormsgpack.unpackb(data)
            if type(raw) is not list or len(raw) != 2:
                raise ValueError("message must be [header, body]")
            header = Header.from_wire(raw[0])
            body = raw[1]
            if type(body) is not dict:
                raise ValueError("body must be a map")
        except (ormsgpack.MsgpackDecodeError, TypeError, ValueError) as exc:
            raise WireError("malformed", str(exc)[:200]) from None
        if self.replay is not None:
            self.replay.check(header)
        return list(frames[:-1]), Envelope(header, body)
