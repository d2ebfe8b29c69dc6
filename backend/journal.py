"""The change journal: every acknowledged edit since the last image, durable before the ack.

The analogue of Smalltalk's changes file. Records are appended to segment files
``journal/<first-seq>.log`` as ``[u32 length][32-byte HMAC][msgpack {seq, op}]`` and fsynced.
A torn record at a segment's end (a crash mid-write) is ignored; a complete record whose
HMAC does not verify stops the replay, because nothing after it can be trusted.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.fsio import fsync_dir
from shared_api.errors import ImageError
from shared_api.wire import pack, unpack

log = logging.getLogger(__name__)

_LEN = struct.Struct(">I")
_MAC = 32
MAX_RECORD = 256 * 1024 * 1024


@dataclass
class ReplayReport:
    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    last_seq: int = 0


class Journal:
    def __init__(self, directory: Path, key: bytes) -> None:
        self.directory = directory
        self._key = key
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.seq = 0

    # -- writing ----------------------------------------------------------------------------
    def open(self, last_seq: int) -> None:
        """Start appending after ``last_seq``, in a new segment."""
        self.seq = last_seq
        self._open_segment()

    def _open_segment(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        path = self.directory / f"{self.seq + 1:012d}.log"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fsync_dir(self.directory)

    def append(self, op: dict[str, Any]) -> int:
        """Write one record and fsync it; returns its sequence number."""
        with self._lock:
            if self._fd is None:
                raise ImageError("The journal is closed; the backend is shutting down.")
            seq = self.seq + 1
            payload = pack({"seq": seq, "op": op})
            record = _LEN.pack(len(payload)) + self._sign(payload) + payload
            try:
                os.write(self._fd, record)
                os.fdatasync(self._fd)
            except OSError as exc:
                raise ImageError(
                    f"Could not write the journal in {self.directory}: {exc}. The change is "
                    "live but not durable: free disk space, then save the image.",
                ) from None
            self.seq = seq
            return seq

    def rotate(self) -> int:
        """Start a new segment; returns the last sequence number of the closed one."""
        with self._lock:
            self._open_segment()
            return self.seq

    def prune(self, keep_after: int) -> None:
        """Delete segments whose records are all ``<= keep_after`` (already in every image
        generation that is kept)."""
        with self._lock:
            segments = self._segments()
            for (_start, path), (next_start, _) in itertools.pairwise(segments):
                if next_start - 1 <= keep_after:
                    path.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # -- reading ----------------------------------------------------------------------------
    def _segments(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.directory.glob("*.log"):
            if path.stem.isdigit():
                found.append((int(path.stem), path))
        return sorted(found)

    def replay(self, after_seq: int) -> ReplayReport:
        """All verified records with ``seq > after_seq``, in order."""
        report = ReplayReport(last_seq=after_seq)
        expected = after_seq + 1
        for _start, path in self._segments():
            records, trusted = self._read_segment(path, report)
            for seq, op in records:
                report.last_seq = max(report.last_seq, seq)
                if seq <= after_seq:
                    continue
                if seq != expected:
                    report.warnings.append(
                        f"journal gap: expected record {expected}, found {seq} in {path.name}"
                    )
                report.records.append((seq, op))
                expected = seq + 1
            if not trusted:
                break  # a record failed verification: nothing after it can be trusted
        return report

    def _read_segment(
        self, path: Path, report: ReplayReport
    ) -> tuple[list[tuple[int, dict[str, Any]]], bool]:
        """The segment's verified records, and False if a bad record cut it short."""
        data = path.read_bytes()
        records: list[tuple[int, dict[str, Any]]] = []
        pos = 0
        while pos < len(data):
            body_at = pos + _LEN.size + _MAC
            if body_at > len(data):
                break  # torn tail: the crash came mid-write, before any ack
            (length,) = _LEN.unpack_from(data, pos)
            body = data[body_at : body_at + length]
            if length > MAX_RECORD or len(body) < length:
                break  # torn tail
            if not hmac.compare_digest(data[pos + _LEN.size : body_at], self._sign(body)):
                report.warnings.append(
                    f"journal record at byte {pos} of {path.name} failed verification "
                    "(tampered or corrupted); it and everything after it were NOT replayed"
                )
                return records, False
            record = unpack(body)
            records.append((record["seq"], record["op"]))
            pos = body_at + length
        if pos < len(data):
            log.info("%s: torn tail of %d bytes ignored", path.name, len(data) - pos)
        return records, True

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()
