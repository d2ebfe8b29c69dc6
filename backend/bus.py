"""The backend's in-process event bus: services publish typed events; the server forwards
them to the PUB socket, and in-process observers (e.g. the motivator) subscribe too."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextvars import ContextVar

from shared_api.events import Event

log = logging.getLogger(__name__)

Sink = Callable[[Event, str | None], None]

#: The msg_id of the request being handled, so its events carry it as parent_id.
current_request: ContextVar[str | None] = ContextVar("current_request", default=None)


class EventBus:
    def __init__(self) -> None:
        self._sinks: list[Sink] = []
        self._lock = threading.Lock()

    def subscribe(self, sink: Sink) -> None:
        with self._lock:
            self._sinks.append(sink)

    def publish(self, event: Event) -> None:
        """Thread-safe. A failing observer is logged and never breaks the publisher."""
        parent = current_request.get()
        with self._lock:
            sinks = list(self._sinks)
        for sink in sinks:
            try:
                sink(event, parent)
            except Exception:
                log.exception("event observer %r failed on %s", sink, event.kind)
