"""Warm sandboxes: a few started ones, waiting for their program, so that a call does not
pay a sandbox's start-up.

Each warm sandbox is an ordinary ``Warm`` (the same command line, limits, cgroup and
scratch space as a cold run): it serves exactly one run and is then destroyed; it is never
reused. The pool keeps up to ``size`` of them for the (runtime, limits) last asked for,
refilled by one background thread; sandboxes for other limits are destroyed when the wanted
ones change. A run whose limits or runtime the pool does not hold starts cold.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from backend.sandbox.base import Runtime, Warm
from shared_api.sandbox import Limits

log = logging.getLogger(__name__)

Key = tuple[str, Limits]

RETRY_S = 5.0
"""After a start failed, how long the pool waits before trying again."""


class WarmPool:
    """Up to ``size`` started sandboxes for one (runtime, limits) at a time."""

    def __init__(self, size: int, root: Path | None = None) -> None:
        if size < 0:
            raise ValueError("pool size must be >= 0")
        self.size = size
        self.root = root
        self._ready: deque[Warm] = deque()
        self._wanted: tuple[Runtime, Limits] | None = None
        self._starting = 0
        self._serving = 0  # runs served and not yet cleaned up: refilled after, not during
        self._cond = threading.Condition()
        self._closed = False
        self._failed_at = 0.0
        self._thread: threading.Thread | None = None
        self._cleaner = ThreadPoolExecutor(1, thread_name_prefix="sandbox-cleanup")
        self.served = 0
        """Runs served by a warm sandbox."""
        self.missed = 0
        """Runs that found none and started cold."""
        _live.add(self)

    def take(self, runtime: Runtime, limits: Limits) -> Warm | None:
        """A warm sandbox for exactly this runtime and these limits, or None; the pool
        then keeps (or starts keeping) sandboxes for them."""
        if self.size == 0:
            return None
        stale: list[Warm] = []
        found: Warm | None = None
        with self._cond:
            if self._closed:
                return None
            if self._wanted is None or self._key(*self._wanted) != self._key(runtime, limits):
                self._wanted = (runtime, limits)
                stale = list(self._ready)
                self._ready.clear()
            while self._ready and found is None:
                warm = self._ready.popleft()
                if warm.alive():
                    found = warm
                else:
                    stale.append(warm)
            if found is not None:
                self.served += 1
                self._serving += 1
                found.defer = self._defer
            else:
                self.missed += 1
            self._ensure_thread()
            self._cond.notify_all()
        self._discard_later(stale)
        return found

    def fill(self, runtime: Runtime, limits: Limits, timeout: float = 60.0) -> bool:
        """Keep sandboxes for this runtime and these limits, and wait until one is ready
        (True), or ``timeout`` passes (False)."""
        if self.size == 0:
            return False
        stale: list[Warm] = []
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._wanted is None or self._key(*self._wanted) != self._key(runtime, limits):
                self._wanted = (runtime, limits)
                stale = list(self._ready)
                self._ready.clear()
            self._failed_at = 0.0
            self._ensure_thread()
            self._cond.notify_all()
        self._discard_later(stale)
        with self._cond:
            while not self._ready and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return bool(self._ready)

    def ready(self) -> int:
        with self._cond:
            return len(self._ready)

    def close(self) -> None:
        """Destroy every warm sandbox and stop refilling (waits for starts in progress)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=120)
        with self._cond:
            left = list(self._ready)
            self._ready.clear()
        for warm in left:
            warm.discard()
        self._cleaner.shutdown(wait=True)  # what served runs left is removed by now
        _live.discard(self)

    def _discard_later(self, stale: list[Warm]) -> None:
        """Destroy sandboxes no longer wanted, off the caller's path (``close`` waits)."""
        for warm in stale:
            try:
                self._cleaner.submit(_logged, warm.discard)
            except RuntimeError:  # closed meanwhile
                _logged(warm.discard)

    def _defer(self, cleanup: Callable[[], None]) -> None:
        try:
            self._cleaner.submit(self._clean, cleanup)
        except RuntimeError:  # closed meanwhile
            self._clean(cleanup)

    def _clean(self, cleanup: Callable[[], None]) -> None:
        try:
            cleanup()
        except Exception:
            log.exception("sandbox pool: cleaning up after a run failed")
        with self._cond:
            self._serving -= 1
            self._cond.notify_all()

    @staticmethod
    def _key(runtime: Runtime, limits: Limits) -> Key:
        return (runtime.name, limits)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._refill, name="sandbox-pool", daemon=True)
            self._thread.start()

    def _refill(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (pause := self._pause()) != 0:
                    self._cond.wait(pause)
                if self._closed:
                    return
                assert self._wanted is not None
                runtime, limits = self._wanted
                self._starting += 1
            warm = self._start(runtime, limits)
            discard: Warm | None = None
            with self._cond:
                self._starting -= 1
                if warm is None:
                    pass
                elif (
                    self._closed
                    or self._wanted is None
                    or (self._key(*self._wanted) != self._key(runtime, limits))
                ):
                    discard = warm
                else:
                    self._ready.append(warm)
                self._cond.notify_all()
            if discard is not None:
                discard.discard()

    def _pause(self) -> float | None:
        """0 when a sandbox should be started now; else how long to wait (None: until told)."""
        if self._wanted is None or len(self._ready) + self._starting + self._serving >= self.size:
            return None
        since = time.monotonic() - self._failed_at
        return RETRY_S - since if self._failed_at and since < RETRY_S else 0

    def _start(self, runtime: Runtime, limits: Limits) -> Warm | None:
        try:
            return runtime.start(limits, self.root)
        except Exception as exc:
            log.warning("sandbox pool: could not start a %s sandbox: %s", runtime.name, exc)
            with self._cond:
                self._failed_at = time.monotonic()
            return None


def _logged(action: Callable[[], None]) -> None:
    try:
        action()
    except Exception:
        log.exception("sandbox pool: destroying an unused sandbox failed")


_live: weakref.WeakSet[WarmPool] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Destroy the warm sandboxes of every pool still open when the process exits."""
    for pool in list(_live):
        pool.close()
