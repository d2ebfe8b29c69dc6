"""How dialogue checkpoints are written and read back: signed, and never turned into code.

LangGraph's default serializer imports and calls whatever module and function a stored
msgpack extension names, so anyone who can write the checkpoint store could run code in the
backend. The dialogue state is plain data (text, numbers, lists, dicts), so here:

- every blob is signed with HMAC-SHA256 under a key derived from the home's image key, and a
  blob whose signature does not verify (or that carries none) is refused before it is parsed;
- a verified blob is walked once before it is unpacked, and any extension that names a
  constructor outside ``ALLOWED`` (LangGraph's own interrupt and command records) is refused.

Both refusals raise ``CheckpointTamperedError``: the dialogue is marked damaged, nothing runs.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import ormsgpack
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from shared_api.errors import CheckpointTamperedError

SUFFIX = "+hmac"
MAC_BYTES = 32
#: What LangGraph itself writes into our threads (interrupts for approvals, resume commands).
ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        ("langgraph.types", "Interrupt"),
        ("langgraph.types", "Send"),
        ("langgraph.types", "Command"),
    }
)
_CONSTRUCTORS = (0, 1, 2, 3, 4, 5)  # constructor, args, kwargs, method, pydantic v1/v2
_DELTA = 7
_MAX_DEPTH = 64


def checkpoint_key(image_key: bytes) -> bytes:
    """A key for checkpoints only, derived from the home's key (never the key itself)."""
    return hmac.new(image_key, b"entropic dialogue checkpoints v1", hashlib.sha256).digest()


class SignedSerializer(SerializerProtocol):
    """LangGraph's msgpack encoding, signed on the way out, verified and allow-listed on
    the way in."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("a checkpoint key needs at least 32 bytes")
        self._key = key
        self._inner = JsonPlusSerializer(allowed_msgpack_modules=tuple(ALLOWED))

    def _mac(self, type_: str, data: bytes) -> bytes:
        return hmac.new(self._key, type_.encode() + b"\0" + data, hashlib.sha256).digest()

    def seal(self, type_: str, data: bytes) -> bytes:
        """``data`` with its signature in front, as stored under ``type_ + SUFFIX``."""
        return self._mac(type_, data) + data

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        type_, data = self._inner.dumps_typed(obj)
        return type_ + SUFFIX, self.seal(type_, data)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        stored_type, blob = data
        if not stored_type.endswith(SUFFIX) or len(blob) < MAC_BYTES:
            raise _tampered(f"an unsigned {stored_type!r} record")
        type_ = stored_type[: -len(SUFFIX)]
        mac, payload = bytes(blob[:MAC_BYTES]), bytes(blob[MAC_BYTES:])
        if not hmac.compare_digest(mac, self._mac(type_, payload)):
            raise _tampered("a record whose signature does not match")
        if type_ == "msgpack":
            check_plain(payload)
        elif type_ not in ("null", "bytes", "bytearray"):
            raise _tampered(f"a record of type {type_!r}")
        return self._inner.loads_typed((type_, payload))


def check_plain(payload: bytes) -> None:
    """Refuse msgpack that names any constructor outside ``ALLOWED``, at any depth, without
    importing or calling anything."""

    def hook(code: int, data: bytes, depth: int = 0) -> None:
        if depth > _MAX_DEPTH:
            raise _tampered("extensions nested too deep")
        inner = ormsgpack.unpackb(
            data,
            ext_hook=lambda c, d: hook(c, d, depth + 1),
            option=ormsgpack.OPT_NON_STR_KEYS,
        )
        if code == _DELTA:
            return None
        if code not in _CONSTRUCTORS:
            raise _tampered(f"extension type {code}")
        if not isinstance(inner, (list, tuple)) or len(inner) < 3:
            raise _tampered("a malformed extension")
        name = (str(inner[0]), str(inner[1]))
        if name not in ALLOWED or code == 3:
            raise _tampered(f"a reference to {name[0]}.{name[1]}")
        return None

    try:
        ormsgpack.unpackb(payload, ext_hook=hook, option=ormsgpack.OPT_NON_STR_KEYS)
    except CheckpointTamperedError:
        raise
    except (ormsgpack.MsgpackDecodeError, ValueError, TypeError, RecursionError) as exc:
        raise _tampered(f"undecodable data ({type(exc).__name__})") from None


def _tampered(what: str) -> CheckpointTamperedError:
    return CheckpointTamperedError(
        f"A stored dialogue checkpoint holds {what}; it was refused and nothing in it was "
        "run. The dialogue is marked damaged: delete it, or restore the checkpoint store "
        "from a backup.",
        reason=what,
    )
