"""The connection file: where a running backend listens, and the key to talk to it.

Written atomically with mode 0600, because the key grants full control of the backend.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from shared_api.errors import UnavailableError
from shared_api.version import PROTOCOL_VERSION

CONNECTION_FILE = "connection.json"


class ConnectionInfo(BaseModel):
    request_endpoint: str
    event_endpoint: str
    key: str
    signature_scheme: Literal["hmac-sha256"] = "hmac-sha256"
    protocol: str = PROTOCOL_VERSION
    pid: int
    home: str
    #: The backend's CURVE public key (Z85) when it only lets in authorized keys (tcp with
    #: ``curve = true``); never its secret. Empty: no CURVE.
    server_key: str = ""

    @property
    def key_bytes(self) -> bytes:
        return bytes.fromhex(self.key)


def write_private(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, readable by the owner only (0600)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_connection_file(home: Path, info: ConnectionInfo) -> Path:
    path = home / CONNECTION_FILE
    write_private(path, info.model_dump_json(indent=2).encode())
    return path


def read_connection_file(home: Path) -> ConnectionInfo:
    path = home / CONNECTION_FILE
    try:
        return ConnectionInfo.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise UnavailableError(
            f"No backend is running for home {home} (no {path}). "
            f"Start one with: python main.py backend --home {home}",
            home=str(home),
        ) from None
    except (ValidationError, ValueError) as exc:
        raise UnavailableError(
            f"The connection file {path} is unreadable ({exc.__class__.__name__}). "
            "Restart the backend to rewrite it.",
            home=str(home),
        ) from None
