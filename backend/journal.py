"""The change journal: every acknowledged edit since the last image, durable before the ack.

The analogue of Smalltalk's changes file. Records are appended to segment files
``journal/<first-seq>.log`` and fsynced::

    [u32 length][u32 crc32(length)][HMAC-SHA256(length + payload)][payload = msgpack {seq, op}]

A record cut short at a segment's end (a crash mid-write, before any ack) is ignored. A
length whose CRC fails, a record whose HMAC fails, or a gap in the sequence marks the journal
untrusted: replay stops there, because nothing after it can be trusted.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.fsio import fsync_dir
from shared_api.errors import ImageError
from shared_api.wire import pack, unpack

log = logging.getLogger(__name__)

_HEAD = struct.Struct(">II")  # length, crc32 of the length bytes
_MAC = 32
MAX_RECORD = 256 * 1024 * 1024


@dataclass
class ReplayReport:
    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    last_seq: int = 0
    untrusted: bool = False


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
        return self.append_many([op])

    def append_many(self, ops: list[dict[str, Any]]) -> int:
        """Write records for ``ops`` in order with one fsync (a group commit); returns the
        sequence number of the last one. Nothing is acknowledged before the fsync."""
        with self._lock:
            if self._fd is None:
                raise ImageError("The journal is closed; the backend is shutting down.")
            seq = self.seq
            records = []
            for op in ops:
                seq += 1
                payload = pack({"seq": seq, "op": op})
                length = len(payload).to_bytes(4, "big")
                head = _HEAD.pack(len(payload), zlib.crc32(length))
                records.append(head + self._sign(length + payload) + payload)
            try:
                view = memoryview(b"".join(records))
                while view:
                    view = view[os.write(self._fd, view) :]
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
        segments = self._segments()
        for index, (_start, path) in enumerate(segments):
            following = segments[index + 1][0] if index + 1 < len(segments) else None
            if following is not None and following - 1 <= after_seq:
                continue  # every record in it is already in the image: do not even read it
            for seq, op in self._read_segment(path, report):
                report.last_seq = max(report.last_seq, seq)
                if seq <= after_seq:
                    continue
                if seq != expected:
                    report.warnings.append(
                        f"journal gap: expected record {expected}, found {seq} in {path.name}; "
                        "it and everything after it were NOT replayed"
                    )
                    report.untrusted = True
                    break
                report.records.append((seq, op))
                expected = seq + 1
            if report.untrusted:
                break  # nothing after a bad record or a gap can be trusted
        return report

    def _read_segment(self, path: Path, report: ReplayReport) -> list[tuple[int, dict[str, Any]]]:
        """The segment's verified records; sets ``report.untrusted`` at a bad one."""
        data = path.read_bytes()
        records: list[tuple[int, dict[str, Any]]] = []
        pos = 0
        while pos < len(data):
            body_at = pos + _HEAD.size + _MAC
            if pos + _HEAD.size > len(data):
                break  # torn tail: the crash came mid-write, before any ack
            length, crc = _HEAD.unpack_from(data, pos)
            length_bytes = data[pos : pos + 4]
            if zlib.crc32(length_bytes) != crc or length > MAX_RECORD:
                self._distrust(report, path, pos, "its length field is corrupted")
                break
            body = data[body_at : body_at + length]
            if body_at + length > len(data):
                break  # torn tail
            if not hmac.compare_digest(
                data[pos + _HEAD.size : body_at], self._sign(length_bytes + body)
            ):
                self._distrust(report, path, pos, "it failed verification")
                break
            record = unpack(body)
            records.append((record["seq"], record["op"]))
            pos = body_at + length
        if pos < len(data) and not report.untrusted:
            log.info("%s: torn tail of %d bytes ignored", path.name, len(data) - pos)
        return records

    @staticmethod
    def _distrust(report: ReplayReport, path: Path, pos: int, why: str) -> None:
        report.untrusted = True
        report.warnings.append(
            f"journal record at byte {pos} of {path.name} is untrusted ({why}: tampered or "
            "corrupted); it and everything after it were NOT replayed"
        )

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()
