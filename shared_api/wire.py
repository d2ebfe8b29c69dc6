"""MessagePack codec and HMAC-SHA256 signing for every frame.

Wire layout of one message (after any ROUTER identity frames)::

    [b"<EMC>", signature, header, body]

``signature`` is HMAC-SHA256 (32 raw bytes) over ``header + body``; ``header`` and ``body``
are MessagePack maps. A frame that is unsigned, badly signed, replayed, too old or malformed
raises ``WireError`` and is dropped by the receiver: an unauthenticated peer gets no reply.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import ormsgpack
from pydantic import BaseModel, ValidationError

from shared_api.envelope import Envelope, Header

DELIMITER = b"<EMC>"
SIGNATURE_SCHEME = "hmac-sha256"
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

    Ids are remembered for ``window`` seconds; after that the age check alone rejects a replay.
    """

    def __init__(self, window: float = 120.0, max_skew: float = 30.0) -> None:
        self.window = window
        self.max_skew = max_skew
        self._seen: OrderedDict[str, float] = OrderedDict()

    def check(self, header: Header) -> None:
        now = time.time()
        if header.ts < now - self.window:
            raise WireError("stale", f"message is {now - header.ts:.1f}s old")
        if header.ts > now + self.max_skew:
            raise WireError("future", f"timestamp {header.ts - now:.1f}s ahead")
        if header.msg_id in self._seen:
            raise WireError("replay", header.msg_id)
        self._seen[header.msg_id] = now
        horizon = now - self.window
        while self._seen:
            oldest_id, seen_at = next(iter(self._seen.items()))
            if seen_at >= horizon:
                break
            del self._seen[oldest_id]


class Codec:
    """Encodes and signs outgoing messages; verifies and decodes incoming ones."""

    def __init__(self, key: bytes, *, replay_window: float = 120.0) -> None:
        if len(key) < 16:
            raise ValueError("HMAC key must be at least 16 bytes")
        self._mac = hmac.new(key, digestmod=hashlib.sha256)
        self.replay = ReplayGuard(replay_window)

    def sign(self, header: bytes, body: bytes) -> bytes:
        mac = self._mac.copy()
        mac.update(header)
        mac.update(body)
        return mac.digest()

    def encode(
        self, kind: str, body: BaseModel | dict[str, Any], parent_id: str | None = None
    ) -> tuple[Header, list[bytes]]:
        header = Header.make(kind, parent_id)
        return header, self.encode_with(header, body)

    def encode_with(self, header: Header, body: BaseModel | dict[str, Any]) -> list[bytes]:
        h = pack(header)
        b = pack(body)
        return [DELIMITER, self.sign(h, b), h, b]

    def decode(self, frames: Sequence[bytes]) -> tuple[list[bytes], Envelope]:
        """Split off routing identities, then authenticate and decode.

        Returns ``(identities, envelope)``; raises ``WireError`` for anything to drop. The
        protocol version is left to the receiver, which can answer a signed peer that speaks
        another version with a typed error instead of silence.
        """
        try:
            split = list(frames).index(DELIMITER)
        except ValueError:
            raise WireError("no_delimiter") from None
        identities = list(frames[:split])
        rest = frames[split + 1 :]
        if len(rest) != 3:
            raise WireError("frame_count", f"expected 3 frames after delimiter, got {len(rest)}")
        signature, raw_header, raw_body = (bytes(f) for f in rest)
        if not hmac.compare_digest(signature, self.sign(raw_header, raw_body)):
            raise WireError("bad_signature")
        try:
            header = Header.model_validate(unpack(raw_header))
            body = unpack(raw_body)
        except (ValidationError, ormsgpack.MsgpackDecodeError, TypeError, ValueError) as exc:
            raise WireError("malformed", str(exc)[:200]) from None
        if not isinstance(body, dict):
            raise WireError("malformed", "body is not a map")
        self.replay.check(header)
        return identities, Envelope(header=header, body=body)
