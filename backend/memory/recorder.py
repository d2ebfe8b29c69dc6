"""Recording every persona interaction in the memory, in batches, on its own thread.

``queue`` returns at once (an answer never waits for the memory). The writer embeds and
writes what is queued as one LanceDB commit per batch, not per answer, and puts a batch back
when the memory cannot take it yet (still opening, or re-embedding without the old
embedder). What is still queued when the backend stops, or was made while the memory was
down, is in the personas' journaled histories: ``backfill`` records it on the next open.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from shared_api.errors import EntropicError
from shared_api.events import Citation

log = logging.getLogger(__name__)

WRITE_BATCH = 256
FLUSH_S = 0.5
#: Interactions kept waiting while the memory cannot take them; then the oldest go (the
#: histories still hold them, and the next open records them).
MAX_PENDING = 10_000


#: Writes a batch of interaction rows; False when the memory cannot take them now.
WriteBatch = Callable[[list[dict[str, Any]]], bool]
#: Told after a batch is written: how many rows, in how many milliseconds.
Written = Callable[[int, float], None]


class Recorder:
    def __init__(
        self, state: Callable[[], str], write: WriteBatch, written: Written, stop: threading.Event
    ) -> None:
        """``state`` is the memory's state; ``write`` embeds and stores a batch."""
        self._state = state
        self._write = write
        self._written = written
        self._stop = stop
        self._wake = threading.Event()
        self._pending: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="memory-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Write one last batch, then stop (``stop`` must be set)."""
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def queue(self, proto: str, interaction: dict[str, Any], citations: list[Citation]) -> None:
        self._add([interaction_row(proto, interaction, citations)])

    def backfill(self, histories: Iterable[tuple[str, list[Any]]], known: set[str]) -> int:
        """Queue the interactions of ``histories`` whose ids are neither ``known`` nor queued."""
        with self._lock:
            known = known | {r["id"] for r in self._pending}
        missing = [
            interaction_row(name, item, [])
            for name, history in histories
            for item in history
            if isinstance(item, dict) and item.get("id") and item["id"] not in known
        ]
        if missing:
            log.info("memory: recording %d interactions from the personas' histories", len(missing))
            self._add(missing)
        return len(missing)

    def _add(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            self._pending.extend(rows)
            while len(self._pending) > MAX_PENDING:
                self._pending.popleft()
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait(FLUSH_S)
            self._wake.clear()
            if self._state() not in ("ready", "reembedding"):
                if self._stop.is_set() or self._state() in ("failed", "closed"):
                    return
                continue
            while self.pending:
                if not self._write_batch() or self._stop.is_set():
                    break  # stopping: one last batch (the histories keep the rest)
            if self._stop.is_set():
                return

    def _write_batch(self) -> bool:
        with self._lock:
            batch = [self._pending.popleft() for _ in range(min(WRITE_BATCH, len(self._pending)))]
        started = time.perf_counter()
        written = False
        try:
            written = self._write(batch)
        except EntropicError as exc:
            log.info("memory: %d interactions wait: %s", len(batch), exc.message)
        except Exception:
            log.exception("memory: recording %d interactions failed", len(batch))
        if not written:  # put them back, in order, and retry on a later wake-up
            with self._lock:
                self._pending.extendleft(reversed(batch))
            self._stop.wait(1.0)
            return False
        self._written(len(batch), (time.perf_counter() - started) * 1000)
        return True


def interaction_row(proto: str, item: dict[str, Any], citations: list[Citation]) -> dict[str, Any]:
    """An interaction (as ``PersonaLLM`` records it in a history) as an ``interactions`` row."""
    usage: dict[str, Any] = item["usage"] if isinstance(item.get("usage"), dict) else {}
    timings: dict[str, Any] = item["timings"] if isinstance(item.get("timings"), dict) else {}
    return {
        "id": str(item.get("id", "")),
        "proto": proto,
        "prompt": str(item.get("prompt", "")),
        "reply": str(item.get("reply", "")),
        "backend": str(item.get("backend", "")),
        "model": str(item.get("model", "")),
        "ts": float(item.get("ts") or time.time()),
        "stop_reason": str(item.get("stop_reason", "")),
        "prompt_tokens": int(usage.get("prompt_tokens", 0) or 0),
        "completion_tokens": int(usage.get("completion_tokens", 0) or 0),
        "tokens_per_s": float(timings.get("tokens_per_s", 0.0) or 0.0),
        "cited": json.dumps([c.id for c in citations]),
        "score": None,
    }
