"""Who started this backend, and whether a workbench is still attached to it.

A backend that a workbench started (``ENTROPIC_STARTED_BY`` in its environment, set by
``backend.launcher``) stops by itself, after saving, once no workbench has pinged it for
``[backend] orphan_exit_s`` seconds (default 10 minutes; 0 never): a workbench killed with
``kill -9`` leaves no backend running forever. A backend started from the command line
(``main.py backend``) runs until it is stopped. ``status`` reports both.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

STARTED_BY_ENV = "ENTROPIC_STARTED_BY"  # the same name as backend.launcher's


class AttachWatch:
    def __init__(
        self,
        started_by: str,
        idle_exit_s: float,
        on_idle: Callable[[], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.started_by = started_by
        self.by_workbench = started_by.startswith("workbench")
        self.idle_exit_s = idle_exit_s
        self._on_idle = on_idle
        self._clock = clock
        self._last = clock()  # the starting workbench counts as attached at first
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_environment(cls, idle_exit_s: float, on_idle: Callable[[], None]) -> AttachWatch:
        started_by = os.environ.get(STARTED_BY_ENV, "").strip()[:80] or "command line"
        return cls(started_by, idle_exit_s, on_idle)

    @property
    def stops_when_idle(self) -> bool:
        return self.by_workbench and self.idle_exit_s > 0

    def seen(self, client: str) -> None:
        """A request from ``client``; a workbench's keeps this backend alive."""
        if client == "workbench":
            self._last = self._clock()

    def idle_s(self) -> float:
        return max(0.0, self._clock() - self._last)

    def status(self) -> dict[str, Any]:
        return {
            "started_by": self.started_by,
            "stops_when_idle": self.stops_when_idle,
            "orphan_exit_s": self.idle_exit_s,
            "no_workbench_for_s": round(self.idle_s(), 1),
        }

    def check(self) -> bool:
        """Stop the backend if it is an orphan; True when it asked to stop."""
        if not self.stops_when_idle or self.idle_s() < self.idle_exit_s:
            return False
        log.info(
            "no workbench attached for %.0fs (started by %s): saving and stopping",
            self.idle_s(),
            self.started_by,
        )
        self._on_idle()
        return True

    def start(self) -> None:
        if not self.stops_when_idle:
            return
        self._thread = threading.Thread(target=self._watch, name="attach-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        interval = min(5.0, max(0.2, self.idle_exit_s / 10))
        while not self._stop.wait(interval):
            if self.check():
                return

    def close(self) -> None:
        self._stop.set()
