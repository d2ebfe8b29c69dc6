"""Where the memory's tables and manifest live: ``HOME/memory`` (the default), or S3-compatible
object storage (``[memory] uri = "s3://bucket/prefix"``: AWS S3, MinIO, SeaweedFS, ...).

On S3 the LanceDB tables go under ``PREFIX/lance`` and the manifest is the object
``PREFIX/manifest.json`` (an S3 PUT replaces an object atomically, as the local rename does),
so any backend pointed at the same URI finds everything. Credentials come only from the
standard ``AWS_*`` environment variables, which LanceDB and pyarrow read themselves: they are
never in config.toml, the image, ``status`` or a log line.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from shared_api.errors import MemoryUnavailableError

MANIFEST = "manifest.json"


class Location(Protocol):
    #: For ``status`` and messages: the place, never a credential.
    where: str
    lance_uri: str
    storage_options: dict[str, str]

    def read_manifest(self) -> dict[str, Any] | None: ...

    def write_manifest(self, data: dict[str, Any]) -> None: ...

    def size_bytes(self) -> int: ...


@dataclass
class LocalLocation:
    root: Path
    storage_options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.where = f"local:{self.root}"
        self.lance_uri = str(self.root / "lance")
        self.path = self.root / MANIFEST

    def read_manifest(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise _unreadable(str(self.path), exc) from None

    def write_manifest(self, data: dict[str, Any]) -> None:
        """Atomically: write a temporary file, fsync, rename, fsync the directory."""
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def size_bytes(self) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                with contextlib.suppress(OSError):  # removed meanwhile
                    total += os.path.getsize(os.path.join(dirpath, name))
        return total


class S3Location:
    def __init__(self, uri: str, storage_options: dict[str, str]) -> None:
        parts = urlsplit(uri)
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        base = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        self.storage_options = dict(storage_options)
        self.lance_uri = f"s3://{base}/lance"
        self.key = f"{base}/{MANIFEST}"
        endpoint = storage_options.get("aws_endpoint", "")
        self.where = f"s3://{base}" + (f" at {endpoint}" if endpoint else "")
        self._fs = _filesystem(storage_options)
        self._base = base

    def read_manifest(self) -> dict[str, Any] | None:
        try:
            with self._fs.open_input_stream(self.key) as f:
                return dict(json.loads(f.read()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise _unreadable(f"s3://{self.key}", exc) from None

    def write_manifest(self, data: dict[str, Any]) -> None:
        with self._fs.open_output_stream(self.key) as f:  # one PUT: all or nothing
            f.write(json.dumps(data, indent=2).encode())

    def size_bytes(self) -> int:
        import pyarrow.fs as pafs  # type: ignore[import-untyped]

        infos = self._fs.get_file_info(pafs.FileSelector(self._base, recursive=True))
        return sum(i.size or 0 for i in infos if i.type == pafs.FileType.File)


def _filesystem(options: dict[str, str]) -> Any:
    import pyarrow.fs as pafs

    endpoint = options.get("aws_endpoint", "")
    kwargs: dict[str, Any] = {"region": options.get("aws_region") or "us-east-1"}
    if endpoint:
        parts = urlsplit(endpoint)
        kwargs["endpoint_override"] = parts.netloc or endpoint
        kwargs["scheme"] = parts.scheme or "https"
    return pafs.S3FileSystem(**kwargs)  # keys: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY


def _unreadable(where: str, exc: Exception) -> MemoryUnavailableError:
    return MemoryUnavailableError(
        f"The memory manifest {where} is unreadable ({type(exc).__name__}: {exc}). Move it "
        "aside to start an empty memory (documents can be ingested again)."
    )


def open_location(root: Path, uri: str, storage_options: dict[str, str]) -> Location:
    if not uri:
        return LocalLocation(root)
    return S3Location(uri, storage_options)
