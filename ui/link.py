"""The workbench's connection to the backend, kept off the UI thread.

Two background threads, each with its own ``Client``: one listens for events, one sends the
requests the UI queues. Results are handed to the Kivy thread through ``deliver`` (by default
``Clock.schedule_once``), so only the UI thread ever touches widgets. The link attaches to
the backend already running for the home, or starts one; if the backend dies it says so,
restarts it from its image and reconnects. Starting a backend is the launcher's work:
``main.py`` hands the link a ``StartBackend`` function, so the UI never imports the backend.

A home may instead hold a copy of a remote backend's connection file (its endpoint and
CURVE public key, see README "Scaling out"): the link then attaches with the home's client
keypair (``main.py keys``), never starts a backend in its place, and says plainly why it
cannot attach (no keypair, a key the backend refused, a stale server key).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from shared_api.commands import Command, Ping
from shared_api.connection import ConnectionInfo, read_connection_file
from shared_api.errors import EntropicError, ErrorCode, ErrorReply, UnavailableError
from shared_api.events import Event
from shared_api.replies import Reply
from shared_api.transport import Client, is_foreign, keys_for

log = logging.getLogger(__name__)

OnReply = Callable[[Reply], None]
Deliver = Callable[[Callable[[], None]], None]

#: Connection states shown in the status bar.
#: How often the link tells its backend that a workbench is attached (a backend this
#: workbench started stops by itself some minutes after the last of these).
ATTACHED_PING_S = 30.0

CONNECTING, CONNECTED, LOST, RESTARTING, STOPPED = (
    "connecting",
    "connected",
    "lost",
    "restarting",
    "stopped",
)


class StartedBackend(Protocol):
    """What the link needs of a backend it started (``backend.launcher.BackendProcess``)."""

    def wait_ready(self, timeout: float = ...) -> ConnectionInfo: ...

    def stop(self, timeout: float = ...) -> int | None: ...


#: Starts a backend for the link's home without waiting for it; None: attach only.
StartBackend = Callable[[], StartedBackend]


class _Mailbox:
    """Calls handed over from other threads, run in order on the Kivy thread by ONE clock
    callback per frame: a burst of events (hundreds a frame with many personas streaming)
    then costs one clock event, not one each. A frame runs calls for at most
    ``FRAME_BUDGET_S``; the rest wait, in order, for the next frame, so a burst spreads over
    a few frames instead of stalling one."""

    def __init__(self) -> None:
        self._calls: deque[Callable[[], None]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def post(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._calls.append(fn)
            if self._scheduled:
                return
            self._scheduled = True
        from kivy.clock import Clock

        Clock.schedule_once(self._drain, 0)

    def _drain(self, _dt: float) -> None:
        with self._lock:
            calls, self._calls = self._calls, deque()
        deadline = time.perf_counter() + FRAME_BUDGET_S
        try:
            while calls:
                calls.popleft()()
                if time.perf_counter() > deadline:
                    break
        finally:
            with self._lock:
                calls.extend(self._calls)  # what is left first, then what came meanwhile
                self._calls = calls
                self._scheduled = bool(calls)
            if calls:  # the next frame (a positive timeout: not again in this one)
                from kivy.clock import Clock

                Clock.schedule_once(self._drain, 0.001)


#: Longest a frame spends running delivered calls (events, replies). 200 streaming morphs'
#: 600-event bursts then take 2-3 frames. Measured (``ui_frames``) against 3 ms: the frame's
#: Python p95 1.2 ms lower, the event-to-UI latency the same (p50 10 ms, p95 17 ms).
FRAME_BUDGET_S = 0.002
_MAILBOX = _Mailbox()


def kivy_deliver(fn: Callable[[], None]) -> None:
    """Run ``fn`` on the Kivy thread, after the calls delivered before it."""
    _MAILBOX.post(fn)


class BackendLink:
    def __init__(
        self,
        home: Path,
        on_event: Callable[[Event], None],
        on_state: Callable[[str, str], None],
        *,
        deliver: Deliver = kivy_deliver,
        heartbeat_grace_s: float = 4.0,
        start_backend: StartBackend | None = None,
        spawned: StartedBackend | None = None,
    ) -> None:
        self.home = home
        self._on_event = on_event
        self._on_state = on_state
        self._deliver = deliver
        self._grace = heartbeat_grace_s
        self._requests: queue.Queue[tuple[Command, OnReply | None] | None] = queue.Queue()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._info: ConnectionInfo | None = None
        self._start_backend = start_backend
        self.process: StartedBackend | None = None  # set when this link started the backend
        self._spawned = spawned  # a backend started before the UI, still starting up
        self.state = STOPPED
        self.detail = ""  # why, when not connected
        self._threads: list[threading.Thread] = []

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        for target, name in (
            (self._event_loop, "link-events"),
            (self._request_loop, "link-requests"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, *, stop_backend: bool = False) -> None:
        self._stop.set()
        self._requests.put(None)
        for thread in self._threads:  # daemons: one stuck in a long request is left behind
            thread.join(timeout=0.5)
        if stop_backend and self.process is not None:
            self.process.stop()
        self._set_state(STOPPED, "")

    def send(self, command: Command, on_reply: OnReply | None = None) -> None:
        """Queue a command; ``on_reply`` gets the reply (or ``ErrorReply``) on the UI thread."""
        self._requests.put((command, on_reply))

    # -- connection -------------------------------------------------------------------------
    def _set_state(self, state: str, detail: str) -> None:
        self.state = state
        self.detail = detail
        self._deliver(lambda: self._on_state(state, detail))

    def _connect(self) -> ConnectionInfo:
        """Attach to the running backend for the home, else start one."""
        if self._spawned is not None:  # started in parallel with the UI's imports
            self.process, self._spawned = self._spawned, None
            return self.process.wait_ready()
        try:
            info: ConnectionInfo | None = read_connection_file(self.home)
        except EntropicError:
            info = None
        if info is not None:
            try:
                with self._client(info, timeout=2.0) as probe:
                    probe.request(Ping())
                return info
            except EntropicError:
                if is_foreign(self.home, info):  # a remote backend's: never replace it
                    raise  # its message names the endpoint and what to do
        if self._start_backend is None:
            raise UnavailableError(
                f"No backend answers for {self.home}. Start one with "
                f"`main.py backend --home {self.home}`; the workbench attaches when it runs."
            )
        self._set_state(RESTARTING if self._info else CONNECTING, "starting the backend")
        self.process = self._start_backend()
        return self.process.wait_ready()

    def _client(self, info: ConnectionInfo, *, timeout: float, events: bool = False) -> Client:
        """A client of ``info``'s backend, with the home's CURVE keys when it wants them."""
        return Client(info, timeout=timeout, events=events, curve_keys=keys_for(self.home, info))

    def _event_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._info = info = self._connect()
                self._listen(info)
            except EntropicError as exc:
                self._connected.clear()
                self._set_state(LOST, exc.message)
                self._stop.wait(2.0)

    def _listen(self, info: ConnectionInfo) -> None:
        with self._client(info, timeout=10.0, events=True) as client:
            self._set_state(CONNECTED, info.request_endpoint)
            self._connected.set()
            last = time.monotonic()
            pinged = 0.0
            while not self._stop.is_set():
                if time.monotonic() - pinged > ATTACHED_PING_S:
                    pinged = time.monotonic()
                    self.send(Ping(client="workbench"))
                event = client.next_event(0.25)
                if event is not None:
                    last = time.monotonic()
                    self._deliver(lambda e=event: self._on_event(e))  # type: ignore[misc]
                elif time.monotonic() - last > self._grace:
                    self._connected.clear()
                    self._set_state(LOST, f"no heartbeat for {self._grace:.0f}s")
                    return

    def _request_loop(self) -> None:
        client: Client | None = None
        while True:
            item = self._requests.get()
            if item is None:
                if client is not None:
                    client.close()
                break
            command, on_reply = item
            if not self._connected.wait(timeout=30) or self._info is None:
                reply: Any = ErrorReply(
                    code=ErrorCode.UNAVAILABLE,
                    message=f"Not sent: the backend is not connected ({self.detail}).",
                )
            else:
                try:
                    if client is None or client.info is not self._info:
                        if client is not None:
                            client.close()
                        client = self._client(self._info, timeout=30)
                    reply = client.call_raw(command.kind, command)
                except EntropicError as exc:
                    reply = exc.to_reply()
                    client = None
            if on_reply is not None:
                self._deliver(lambda cb=on_reply, r=reply: cb(r))  # type: ignore[misc]
