"""The envelope: a header apart from the body, as in the Jupyter messaging protocol.

A reply carries its request's ``msg_id`` as ``parent_id``; events carry the ``msg_id`` of the
request that caused them, when there is one. The header travels as a 5-element MessagePack
array; it is a ``NamedTuple`` because it is built and checked on every message, and a tuple
costs a fraction of a validated model.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from typing import Any, NamedTuple

from shared_api.version import PROTOCOL_VERSION

_MAX_ID = 64
#: Builds a NamedTuple in C: its own ``__new__`` is a Python function, on every message.
_new_tuple = tuple.__new__


def _fresh_id_source() -> tuple[str, itertools.count[int]]:
    return os.urandom(8).hex(), itertools.count(1)


_prefix, _counter = _fresh_id_source()


def _reseed() -> None:  # a forked child must not reuse its parent's ids
    global _prefix, _counter
    _prefix, _counter = _fresh_id_source()


os.register_at_fork(after_in_child=_reseed)


def new_msg_id() -> str:
    """A process-unique message id: a random per-process prefix and a counter.

    Ids need to be unique, not secret: every frame is authenticated by its HMAC.
    """
    return f"{_prefix}-{next(_counter):x}"


class Header(NamedTuple):
    msg_id: str
    parent_id: str | None
    kind: str
    ts: float
    protocol: str

    @classmethod
    def make(cls, kind: str, parent_id: str | None = None) -> Header:
        return cls(new_msg_id(), parent_id, kind, time.time(), PROTOCOL_VERSION)

    @classmethod
    def from_wire(cls, raw: Any) -> Header:
        """Check the decoded array field by field; raises ``ValueError``."""
        if type(raw) is not list or len(raw) != 5:
            raise ValueError("header must be an array of 5 fields")
        msg_id, parent_id, kind, ts, protocol = raw
        if type(msg_id) is not str or not 0 < len(msg_id) <= _MAX_ID:
            raise ValueError("header.msg_id must be a non-empty string")
        if parent_id is not None and (type(parent_id) is not str or len(parent_id) > _MAX_ID):
            raise ValueError("header.parent_id must be a string or null")
        if type(kind) is not str or not 0 < len(kind) <= _MAX_ID:
            raise ValueError("header.kind must be a non-empty string")
        if (type(ts) is not float and type(ts) is not int) or not math.isfinite(ts):
            raise ValueError("header.ts must be a finite number")
        if type(protocol) is not str or not 0 < len(protocol) <= 16:
            raise ValueError("header.protocol must be a non-empty string")
        return _new_tuple(cls, (msg_id, parent_id, kind, float(ts), protocol))


class Envelope(NamedTuple):
    """A decoded, authenticated message: the header and the still-untyped body."""

    header: Header
    body: dict[str, Any]
