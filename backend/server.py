"""The request loop: ROUTER in, dispatch table, replies out; events out; heartbeat.

One thread owns the sockets and blocks in a single ``recv``. Quick handlers run inline;
blocking ones run on a worker pool and mail their replies back to the loop through the
ROUTER (see ``shared_api.transport``). Frames that are unsigned, badly signed, replayed or
malformed are dropped and logged; a signed request that is wrong in any other way gets a
typed ``ErrorReply``, and the loop carries on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from backend import handlers as _core_routes  # noqa: F401 - registers its routes
from backend.bus import EventBus, current_request
from backend.config import BackendConfig
from backend.dialogue import routes as _dialogue_routes  # noqa: F401 - registers its routes
from backend.learning import routes as _learning_routes  # noqa: F401 - registers its routes
from backend.llm.service import PersonaLLM
from backend.routing import ROUTES, Context, Route
from backend.runtime import Runtime
from shared_api.commands import COMMAND_ADAPTER
from shared_api.envelope import Header
from shared_api.errors import EntropicError, ErrorCode, ErrorReply
from shared_api.events import BackendStopping, Event, Heartbeat
from shared_api.transport import MAIL_REPLY, MAIL_WAKE, Curve, ServerSockets
from shared_api.version import PROTOCOL_VERSION, compatible
from shared_api.wire import EVENT, REPLY, Codec, WireError

log = logging.getLogger(__name__)


class Server:
    def __init__(
        self,
        runtime: Runtime,
        llm: PersonaLLM,
        config: BackendConfig,
        bus: EventBus,
        key: bytes,
        run_dir: Path,
        socket_prefix: str = "",
        curve: Curve | None = None,
    ) -> None:
        self.config = config
        self.codec = Codec(
            key,
            replay_window=config.replay_window_s,
            max_message_bytes=config.max_message_bytes,
        )
        request_spec, event_spec = config.endpoint_specs(run_dir, socket_prefix)
        self.sockets = ServerSockets(
            request_spec,
            event_spec,
            max_message_bytes=config.max_message_bytes,
            tick_ms=max(1, int(config.heartbeat_interval_s * 1000)),
            curve=curve,
        )
        self.endpoints = {
            "requests": self.sockets.request_endpoint,
            "events": self.sockets.event_endpoint,
        }
        self.ctx = Context(
            runtime=runtime, llm=llm, endpoints=self.endpoints, request_stop=self.request_stop
        )
        self.ctx.stats.update(requests=0, dropped={})
        self.save_on_exit = True
        self._pool = ThreadPoolExecutor(config.workers, thread_name_prefix="handler")
        self._stopping = threading.Event()
        bus.subscribe(self._publish)

    # -- lifecycle --------------------------------------------------------------------------
    def request_stop(self, save: bool = True) -> None:
        """Thread-safe (also from a signal handler): finish in-flight work, then return."""
        self.save_on_exit = save
        self._stopping.set()
        self.sockets.mail([MAIL_WAKE])

    def serve_forever(self) -> None:
        started = time.monotonic()
        interval = self.config.heartbeat_interval_s
        next_beat = started
        sockets = self.sockets
        recv, mail_id, handle = sockets.recv, sockets.mail_id, self._handle
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= next_beat:
                beat = Heartbeat(pid=os.getpid(), uptime_s=now - started, interval_s=interval)
                self._publish(beat, None)
                next_beat = now + interval
            frames = recv()  # returns after one heartbeat interval at most
            if frames is None:
                continue
            if frames[0].startswith(mail_id):
                self._deliver(frames[1:])
                continue
            try:
                handle(frames)
            except Exception:  # no frame, however odd, ever stops the loop
                log.exception("request loop: a message could not be handled")
                self._drop("unhandled", f"{len(frames)} frames")
        self._pool.shutdown(wait=True)
        self._publish(BackendStopping(reason="shutdown requested"), None)
        while (frames := sockets.recv_nowait()) is not None:  # replies of finished work
            if sockets.is_mail(frames):
                self._deliver(frames[1:])

    def _deliver(self, mail: list[bytes]) -> None:
        """Carry out what another thread mailed to the loop."""
        if mail[0] == MAIL_REPLY:
            self.sockets.send_reply(mail[1:-1], mail[-1])

    def close(self) -> None:
        self.sockets.close()

    # -- requests ---------------------------------------------------------------------------
    def _handle(self, frames: list[bytes]) -> None:
        self.ctx.stats["requests"] += 1
        try:
            identities, envelope = self.codec.decode(frames)
        except WireError as exc:
            self._drop(exc.reason, str(exc))
            return
        header = envelope.header
        if not identities:
            self._drop("no_identity", header.kind)
            return
        if header.protocol != PROTOCOL_VERSION and not compatible(header.protocol):
            self._reply_error(
                identities,
                header,
                ErrorCode.PROTOCOL_MISMATCH,
                f"This backend speaks protocol {PROTOCOL_VERSION}, the client "
                f"{header.protocol}. Update the client and backend together.",
            )
            return
        route = ROUTES.get(header.kind)
        if route is None:
            self._reply_error(
                identities,
                header,
                ErrorCode.UNKNOWN_KIND,
                f"Unknown command {header.kind!r}. Known: {', '.join(sorted(ROUTES))}.",
            )
            return
        body = envelope.body
        body["kind"] = header.kind  # the header's kind is the one dispatched on
        if route.fast is not None and (answer := route.fast(self.ctx, body)) is not None:
            payload = self.codec.encode_payload(answer["kind"], answer, header.msg_id, REPLY)
            self.sockets.send_reply(identities, payload)
            return
        try:
            command = COMMAND_ADAPTER.validate_python(body)
        except ValidationError as exc:
            problems = [
                {"field": ".".join(str(p) for p in e["loc"][1:]) or "(body)", "problem": e["msg"]}
                for e in exc.errors()
            ]
            summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:5])
            self._reply_error(
                identities,
                header,
                ErrorCode.INVALID_BODY,
                f"Invalid body for {header.kind}: {summary}. "
                f"See `main.py call --help` for the body of each command.",
                detail={"errors": problems[:20]},
            )
            return
        if route.blocking:
            self._pool.submit(self._run_blocking, route, command, identities, header.msg_id)
        else:
            self._send_reply(
                identities, header.msg_id, self._execute(route, command, header.msg_id)
            )

    def _execute(self, route: Route, command: Any, msg_id: str) -> BaseModel:
        token = current_request.set(msg_id)
        try:
            return route.handler(self.ctx, command)
        except EntropicError as exc:
            tb = exc.detail.pop("traceback", None)
            return exc.to_reply(traceback=tb if isinstance(tb, str) else None)
        except RecursionError:  # e.g. a forged tool's result nested 50,000 levels deep
            return ErrorReply(
                code=ErrorCode.INVALID_VALUE,
                message=f"{command.kind}: a value is nested too deeply to process. Keep data "
                "within 64 levels of lists and maps.",
            )
        except Exception as exc:
            log.exception("handler for %s failed", command.kind)
            return ErrorReply(
                code=ErrorCode.INTERNAL,
                message=f"Internal error in {command.kind}: {exc.__class__.__name__}: {exc}. "
                "The backend is still running; please report this with the traceback.",
                traceback=traceback.format_exc(),
            )
        finally:
            current_request.reset(token)

    def _run_blocking(
        self, route: Route, command: Any, identities: list[bytes], msg_id: str
    ) -> None:
        reply = self._execute(route, command, msg_id)
        payload = self.codec.encode_payload(reply.kind, reply, msg_id, REPLY)  # type: ignore[attr-defined]
        self.sockets.mail([MAIL_REPLY, *identities, payload])

    def _reply_error(
        self,
        identities: list[bytes],
        header: Header,
        code: ErrorCode,
        message: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        log.info("error reply to %s: %s", header.kind, message)
        reply = ErrorReply(code=code, message=message, detail=detail or {})
        self._send_reply(identities, header.msg_id, reply)

    def _send_reply(self, identities: list[bytes], parent_id: str, reply: BaseModel) -> None:
        payload = self.codec.encode_payload(reply.kind, reply, parent_id, REPLY)  # type: ignore[attr-defined]
        self.sockets.send_reply(identities, payload)

    def _drop(self, reason: str, detail: str) -> None:
        dropped: dict[str, int] = self.ctx.stats["dropped"]
        count = dropped[reason] = dropped.get(reason, 0) + 1
        if count & (count - 1) == 0:  # log the 1st, 2nd, 4th, 8th, ... of each reason
            log.warning("dropped frame (%s, %d so far): %s", reason, count, detail[:200])

    # -- events -----------------------------------------------------------------------------
    def _publish(self, event: Event, parent_id: str | None) -> None:
        payload = self.codec.encode_payload(event.kind, event, parent_id, EVENT)
        if not self.sockets.publish(payload):  # never blocks the publisher
            self._drop("event_backlog", event.kind)
