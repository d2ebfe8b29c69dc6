"""Signed dill images of the object graph, kept in generations.

File layout: ``MAGIC + HMAC-SHA256(payload) + payload``, where payload is dill. The signature
is checked with ``compare_digest`` *before* anything is unpickled; a tampered, truncated or
unsigned image is refused and the previous generation is tried. Writes go to a temp file,
are fsynced, then renamed into place, so a crash mid-save never leaves a half image.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dill

from backend.fsio import fsync_dir
from shared_api.errors import ImageError, ImageTamperedError

log = logging.getLogger(__name__)

MAGIC = b"ENTROPIC-IMAGE/1\n"
_NAME = re.compile(r"^(\d{8,})-(\d{12,})\.image$")
Progress = Callable[[float, str], None]


@dataclass
class LoadResult:
    payload: dict[str, Any] | None
    path: Path | None = None
    generation: int = 0
    journal_seq: int = 0
    warnings: list[str] = field(default_factory=list)


class ImageStore:
    def __init__(self, directory: Path, key: bytes, generations: int = 5) -> None:
        self.directory = directory
        self._key = key
        self.generations = generations

    def _sign(self, data: bytes) -> bytes:
        return hmac.new(self._key, data, hashlib.sha256).digest()

    def list_generations(self) -> list[tuple[int, int, Path]]:
        """``(generation, journal_seq, path)`` for every image file, oldest first."""
        found = []
        for path in self.directory.iterdir():
            m = _NAME.match(path.name)
            if m:
                found.append((int(m.group(1)), int(m.group(2)), path))
        return sorted(found)

    def oldest_journal_seq(self) -> int:
        """The journal position of the oldest kept generation: records after it are needed."""
        gens = self.list_generations()
        return gens[0][1] if gens else 0

    def save(
        self, payload: dict[str, Any], journal_seq: int, progress: Progress | None = None
    ) -> tuple[Path, int, int]:
        """Serialize and write a new generation holding the journal up to ``journal_seq``.

        Returns (path, generation, bytes).
        """
        report = progress or (lambda _f, _m: None)
        report(0.1, "serializing")
        data = dill.dumps(payload, protocol=5)
        report(0.6, f"writing {len(data)} bytes")
        existing = self.list_generations()
        generation = (existing[-1][0] + 1) if existing else 1
        final = self.directory / f"{generation:08d}-{journal_seq:012d}.image"
        tmp = self.directory / f".{generation:08d}.image.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, MAGIC + self._sign(data))
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        fsync_dir(self.directory)
        report(0.9, "pruning old generations")
        for _gen, _seq, old in self.list_generations()[: -self.generations]:
            old.unlink(missing_ok=True)
        for stray in self.directory.glob(".*.image.tmp"):
            if stray != tmp:
                stray.unlink(missing_ok=True)
        return final, generation, len(MAGIC) + 32 + len(data)

    def read_verified(self, path: Path) -> dict[str, Any]:
        """Verify, then unpickle. Raises ``ImageTamperedError`` / ``ImageError``."""
        raw = path.read_bytes()
        if not raw.startswith(MAGIC) or len(raw) < len(MAGIC) + 32:
            raise ImageTamperedError(f"{path.name} is not a signed Entropic image.")
        signature = raw[len(MAGIC) : len(MAGIC) + 32]
        data = raw[len(MAGIC) + 32 :]
        if not hmac.compare_digest(signature, self._sign(data)):
            raise ImageTamperedError(
                f"{path.name} failed signature verification (tampered, corrupted, or signed "
                "with another key); it was not unpickled."
            )
        try:
            payload = dill.loads(data)  # noqa: S301 - verified above
        except Exception as exc:
            raise ImageError(f"{path.name} is signed but could not be loaded: {exc}") from None
        if not isinstance(payload, dict) or payload.get("format") != 1:
            raise ImageError(f"{path.name} has an unknown image format.")
        return payload

    def load_latest(self) -> LoadResult:
        """The newest generation that verifies and loads; older ones are fallbacks."""
        result = LoadResult(payload=None)
        for generation, seq, path in reversed(self.list_generations()):
            started = time.perf_counter()
            try:
                result.payload = self.read_verified(path)
            except ImageError as exc:
                message = f"image {path.name} refused: {exc.message}"
                log.error(message)
                result.warnings.append(message)
                continue
            signed_seq = result.payload.get("journal_seq", seq)  # the runtime always sets it
            if type(signed_seq) is not int or signed_seq < 0:
                message = f"image {path.name} refused: it holds no journal position"
                log.error(message)
                result.warnings.append(message)
                result.payload = None
                continue
            if signed_seq != seq:  # the name is not signed: the payload's position is
                result.warnings.append(
                    f"image {path.name} is named for journal position {seq} but holds "
                    f"{signed_seq} (renamed?); replaying the journal after {signed_seq}"
                )
            result.path, result.generation, result.journal_seq = path, generation, signed_seq
            log.info("loaded image %s in %.2fs", path.name, time.perf_counter() - started)
            return result
        return result
