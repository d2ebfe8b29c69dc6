"""The envelope: a header apart from the body, as in the Jupyter messaging protocol.

A reply carries its request's ``msg_id`` as ``parent_id``; events carry the ``msg_id`` of the
request that caused them, when there is one.
"""

from __future__ import annotations

import os
import time
from typing import Any

from pydantic import BaseModel, Field

from shared_api.version import PROTOCOL_VERSION


def new_msg_id() -> str:
    """A unique, unguessable message id (128 random bits, hex)."""
    return os.urandom(16).hex()


class Header(BaseModel):
    msg_id: str = Field(min_length=1, max_length=64)
    parent_id: str | None = Field(default=None, max_length=64)
    kind: str = Field(min_length=1, max_length=64)
    ts: float
    protocol: str = Field(min_length=1, max_length=16)

    @classmethod
    def make(cls, kind: str, parent_id: str | None = None) -> Header:
        """A fresh header; skips validation because every field is produced here."""
        return cls.model_construct(
            msg_id=new_msg_id(),
            parent_id=parent_id,
            kind=kind,
            ts=time.time(),
            protocol=PROTOCOL_VERSION,
        )


class Envelope(BaseModel):
    """A decoded, authenticated message: the header and the still-untyped body."""

    header: Header
    body: dict[str, Any]
