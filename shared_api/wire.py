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

import hmac
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import ormsgpack
from pydantic import BaseModel

from shared_api.envelope import Envelope, Header

MAGIC = b"EMC2"
SIGNATURE_SCHEME = "hmac-sha256"
_SIG = 32
#: The channel a message is signed for: client -> backend, backend -> client, and events.
REQUEST, REPLY, EVENT = b"\x01", b"\x02", b"\x03"
#: At most this many frames in a message: ROUTER identities (one per hop) plus the payload.
MAX_FRAMES = 8
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

    Ids are remembered for ``window`` + ``max_skew`` seconds: a message stamped up to
    ``max_skew`` in the future stays fresh that much longer, and its id must outlive it;
    after that the age check alone rejects a replay. The window is short because peers
    share this machine's clock.
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
        horizon = now - self.window - self.max_skew
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
        self.replay = ReplayGuard(replay_window) if replay_window else None
        self.max_message_bytes = max_message_bytes

    def sign(self, data: bytes, channel: bytes = REQUEST) -> bytes:
        if len(data) < 65536:
            return hmac.digest(self._key, channel + data, "sha256")
        mac = hmac.new(self._key, channel, "sha256")  # no copy of a large payload
        mac.update(data)
        return mac.digest()

    def seal(self, data: bytes, channel: bytes = REQUEST) -> bytes:
        """Frame already-packed ``data`` (msgpack of ``[header, body]``) for ``channel``."""
        return MAGIC + self.sign(data, channel) + data

    def encode(
        self,
        kind: str,
        body: BaseModel | dict[str, Any],
        parent_id: str | None = None,
        channel: bytes = REQUEST,
    ) -> tuple[Header, bytes]:
        header = Header.make(kind, parent_id)
        return header, self.seal(pack((tuple(header), body)), channel)

    def encode_with(
        self, header: Header, body: BaseModel | dict[str, Any], channel: bytes = REQUEST
    ) -> bytes:
        return self.seal(pack((tuple(header), body)), channel)

    def decode(
        self, frames: Sequence[bytes], channel: bytes = REQUEST
    ) -> tuple[list[bytes], Envelope]:
        """Split off routing identities (all frames but the last), authenticate for
        ``channel``, decode.

        Raises ``WireError`` for anything to drop. The protocol version is left to the
        receiver, which can answer a signed peer that speaks another version with a typed
        error instead of silence.
        """
        if not frames:
            raise WireError("empty")
        if len(frames) > MAX_FRAMES:
            raise WireError("too_many_frames", f"{len(frames)} frames")
        limit = self.max_message_bytes
        if limit is not None and sum(len(f) for f in frames) > limit:
            raise WireError("too_large", f"over {limit} bytes")
        frame = frames[-1]
        if frame[:4] != MAGIC or len(frame) < _DATA_AT:
            raise WireError("not_a_message", f"{len(frame)} bytes without the {MAGIC!r} prefix")
        data = frame[_DATA_AT:]
        if not hmac.compare_digest(frame[len(MAGIC) : _DATA_AT], self.sign(data, channel)):
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
