"""ModelManager: one interface over the model backends, and the VRAM-sequential scheduler.

At most one local model is loaded at any time, across all personas and callers: calls wait
their turn, and switching models unloads the resident one first. Waiting calls are served
round-robin by caller (the least recently served caller goes next, FIFO within a caller), so
one chatty persona cannot starve the others. A model larger than the VRAM budget is refused
before anything is loaded.

A remote backend (``remote = True``: an OpenAI-compatible server) manages its own memory, so
the one-model rule and the VRAM budget do not apply to it: each such backend has its own lane
of up to ``concurrency`` calls at once, served round-robin by caller like the local lane.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from backend.llm.base import ChatMessage, Completion, GenerationParams, ModelBackend, OnToken
from shared_api.errors import CancelledError, ModelTooLargeError, NotFoundError
from shared_api.events import ModelMetrics

log = logging.getLogger(__name__)

GIB = 1024**3


LOCAL = ""  # the lane of the local backends: one call, one resident model at a time


@dataclass
class _Ticket:
    caller: str
    serial: int
    cancel: threading.Event
    lane: str = LOCAL
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class _Lane:
    """Calls waiting for, and holding, one of ``limit`` slots."""

    limit: int = 1
    waiting: list[_Ticket] = field(default_factory=list)
    active: list[_Ticket] = field(default_factory=list)
    last_served: dict[str, int] = field(default_factory=dict)

    def next(self) -> _Ticket:
        """The least recently served caller's oldest ticket."""
        return min(self.waiting, key=lambda t: (self.last_served.get(t.caller, -1), t.serial))

    def may_start(self, ticket: _Ticket) -> bool:
        return len(self.active) < self.limit and self.next() is ticket


StatusHook = Callable[[str, str, str], None]  # (caller, status, detail)
MetricsHook = Callable[[ModelMetrics], None]


class ModelManager:
    def __init__(
        self,
        backends: dict[str, ModelBackend],
        *,
        vram_budget_bytes: int = 8 * GIB,
        on_status: StatusHook | None = None,
        on_metrics: MetricsHook | None = None,
    ) -> None:
        self.backends = backends
        self.vram_budget_bytes = vram_budget_bytes
        self._on_status = on_status or (lambda *_: None)
        self._on_metrics = on_metrics or (lambda _m: None)
        self._cond = threading.Condition()
        self._lanes: dict[str, _Lane] = {LOCAL: _Lane()}
        self._serial = itertools.count()
        self._resident: tuple[str, str] | None = None
        self.last_metrics: ModelMetrics | None = None
        self._closing = False

    # -- inspection -------------------------------------------------------------------------
    @property
    def resident(self) -> tuple[str, str] | None:
        """(backend, model) currently loaded, if any."""
        return self._resident

    def queue(self) -> list[str]:
        with self._cond:
            return [t.caller for lane in self._lanes.values() for t in lane.waiting]

    def backend(self, name: str) -> ModelBackend:
        try:
            return self.backends[name]
        except KeyError:
            raise NotFoundError(
                f"No model backend {name!r}; known: {sorted(self.backends)}"
            ) from None

    # -- the one entry point ----------------------------------------------------------------
    def generate(
        self,
        *,
        backend: str,
        model: str,
        messages: list[ChatMessage],
        system: str | None = None,
        params: GenerationParams | None = None,
        caller: str = "anonymous",
        request_id: str = "",
        on_token: OnToken | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        """Queue, load if needed, generate, record metrics.

        ``system`` (if given) is sent as the system prompt before ``messages``. With
        ``on_token`` the answer streams to it piece by piece; without, it is generated in one
        piece (Ollama's non-streamed ``/api/chat``).

        Raises ``ModelTooLargeError`` before queueing, ``CancelledError`` if cancelled while
        queued; a cancel during generation returns the partial text with stop reason
        ``cancelled``.
        """
        source = self.backend(backend)
        remote = getattr(source, "remote", False)
        if not remote:
            self._check_budget(source, model)
        cancel = cancel or threading.Event()
        if system is not None:
            messages = [ChatMessage("system", system), *messages]
        if remote:  # a remote server: its own lane, no residency, no VRAM budget
            limit = max(1, int(getattr(source, "concurrency", 1)))
            ticket = self._enter(caller, cancel, lane=backend, limit=limit)
        else:
            ticket = self._enter(caller, cancel)
        queue_wait_ms = (time.perf_counter() - ticket.queued_at) * 1000
        try:
            # A remote "load" only checks that the model is served.
            load_ms = source.load(model) if remote else self._resident_for(backend, model, caller)
            self._on_status(caller, "streaming", model)
            completion = source.generate(
                model, messages, params or GenerationParams(), on_token, cancel
            )
        except BaseException:
            self._on_status(caller, "error", model)
            raise
        finally:
            self._leave(ticket)
        completion.load_ms += load_ms
        self._record(request_id, caller, backend, model, queue_wait_ms, completion)
        self._on_status(caller, "idle", model)
        return completion

    def _check_budget(self, source: ModelBackend, model: str) -> None:
        size = source.model_size(model)
        if size > self.vram_budget_bytes:
            raise ModelTooLargeError(
                f"{model} needs about {size / GIB:.1f} GB but the VRAM budget is "
                f"{self.vram_budget_bytes / GIB:.1f} GB. Pick a smaller or more quantized model, "
                "or raise models.vram_budget_gb in config.toml.",
                model=model,
                size_bytes=size,
            )

    def _resident_for(self, backend: str, model: str, caller: str) -> float:
        """Make ``model`` the one resident model (unloading the other first); returns the
        load time in ms, 0 when it was resident already. Call holding the local lane."""
        if self._resident == (backend, model):
            return 0.0
        self._on_status(caller, "loading", model)
        if self._resident is not None:
            self.backends[self._resident[0]].unload()
            self._resident = None
        load_ms = self.backends[backend].load(model)
        self._resident = (backend, model)
        return load_ms

    def cancel_all(self) -> None:
        """Shutting down: cancel the calls generating now and every queued one, and refuse
        new ones, so that a quit never waits for background model work (a judge, a dialogue
        turn). A cancelled generation ends at its next token."""
        with self._cond:
            self._closing = True
            for lane in self._lanes.values():
                for ticket in [*lane.waiting, *lane.active]:
                    ticket.cancel.set()
            self._cond.notify_all()

    def unload(self) -> None:
        """Release the resident model (e.g. before a fine-tune needs the memory)."""
        ticket = self._enter("unload", threading.Event())
        try:
            if self._resident is not None:
                self.backends[self._resident[0]].unload()
                self._resident = None
        finally:
            self._leave(ticket)

    @contextmanager
    def exclusive(self, caller: str, cancel: threading.Event | None = None) -> Iterator[None]:
        """Hold the one model slot with nothing resident, e.g. while a fine-tune's trainer
        holds a model in memory: calls queue meanwhile."""
        ticket = self._enter(caller, cancel or threading.Event())
        try:
            if self._resident is not None:
                self.backends[self._resident[0]].unload()
                self._resident = None
            self._on_status(caller, "loading", "held for training")
            yield
        finally:
            self._leave(ticket)
            self._on_status(caller, "idle", "")

    # -- scheduling -------------------------------------------------------------------------
    def _enter(
        self, caller: str, cancel: threading.Event, lane: str = LOCAL, limit: int = 1
    ) -> _Ticket:
        ticket = _Ticket(caller, next(self._serial), cancel, lane)
        if self._closing and caller != "unload":
            cancel.set()
        with self._cond:
            queue = self._lanes.setdefault(lane, _Lane(limit))
            queue.limit = limit
            queue.waiting.append(ticket)
            if not queue.may_start(ticket):
                self._on_status(caller, "queued", f"{len(queue.waiting)} waiting")
            # A cancel wins over a free slot: cancel_all may free the slot it cancels for.
            while cancel.is_set() or not queue.may_start(ticket):
                if cancel.is_set():
                    queue.waiting.remove(ticket)
                    self._cond.notify_all()
                    raise CancelledError("The request was cancelled while it waited for the model.")
                self._cond.wait(0.05)
            queue.waiting.remove(ticket)
            queue.active.append(ticket)
            queue.last_served[caller] = ticket.serial
        return ticket

    def _leave(self, ticket: _Ticket) -> None:
        with self._cond:
            active = self._lanes[ticket.lane].active
            if ticket in active:
                active.remove(ticket)
            self._cond.notify_all()

    def _record(
        self,
        request_id: str,
        caller: str,
        backend: str,
        model: str,
        queue_wait_ms: float,
        c: Completion,
    ) -> None:
        metrics = ModelMetrics(
            request_id=request_id,
            proto=caller,
            backend=backend,
            model=model,
            queue_wait_ms=queue_wait_ms,
            load_ms=c.load_ms,
            ttft_ms=c.ttft_ms,
            tokens_per_s=c.tokens_per_s,
            total_ms=queue_wait_ms + c.load_ms + c.ttft_ms + c.generation_ms,
            completion_tokens=c.completion_tokens,
            stop_reason=c.stop_reason,
            resident=f"{backend}:{model}",
        )
        self.last_metrics = metrics
        try:
            self._on_metrics(metrics)
        except Exception:
            log.exception("metrics hook failed")
