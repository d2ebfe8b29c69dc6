"""The workbench's state: what the backend has told us, as Kivy properties morphs bind to.

Only the UI thread calls ``apply`` (the link delivers events there). Morphs render from these
properties and never hold state of their own.
"""

from __future__ import annotations

import time
from typing import Any

from kivy.event import EventDispatcher
from kivy.properties import (
    BooleanProperty,
    DictProperty,
    ListProperty,
    NumericProperty,
    StringProperty,
)

from shared_api.events import Event

MAX_CONVERSATION = 20_000  # characters kept per persona in the view
METRICS_KEPT = 200


class PersonaModel(EventDispatcher):
    """One persona as the UI sees it."""

    name = StringProperty("")
    role = StringProperty("")
    #: "embedded:smollm2-135m-instruct" or "ollama:phi3:mini" once known.
    model = StringProperty("")
    #: idle, queued, loading, streaming or error.
    status = StringProperty("idle")
    #: 0 (calm) .. 1 (in conflict): drives the colour gradient.
    dissonance = NumericProperty(0.0)
    #: True while its model is loaded for it or generating: drives the pulsing glow.
    busy = BooleanProperty(False)
    conversation = StringProperty("")
    version = NumericProperty(0)
    #: the request whose tokens are streaming into the conversation, if any.
    streaming_request = StringProperty("")

    def say(self, text: str) -> None:
        self.conversation = (self.conversation + text)[-MAX_CONVERSATION:]


class WorkbenchStore(EventDispatcher):
    __events__ = ("on_change",)

    connection = StringProperty("connecting")
    connection_detail = StringProperty("")
    last_heartbeat = NumericProperty(0.0)
    personas = DictProperty({})
    #: metric name -> recent values (for the plots).
    metrics = DictProperty({})
    toasts = ListProperty([])

    def persona(self, name: str, role: str = "") -> PersonaModel:
        if name not in self.personas:
            self.personas[name] = PersonaModel(name=name, role=role)
        model: PersonaModel = self.personas[name]
        if role:
            model.role = role
        return model

    def toast(self, text: str) -> None:
        self.toasts = [*self.toasts[-4:], text]

    def set_connection(self, state: str, detail: str) -> None:
        self.connection, self.connection_detail = state, detail

    def apply(self, event: Event) -> None:
        handler = getattr(self, f"_on_{event.kind}", None)
        if handler is not None:
            handler(event)

    # -- one method per event kind ----------------------------------------------------------
    def _on_heartbeat(self, event: Any) -> None:
        self.last_heartbeat = time.monotonic()

    def _on_persona_status(self, event: Any) -> None:
        p = self.persona(event.proto)
        p.status = event.status
        p.busy = event.status in ("loading", "streaming")

    def _on_token(self, event: Any) -> None:
        p = self.persona(event.proto)
        if p.streaming_request != event.request_id:
            p.streaming_request = event.request_id
            p.say(f"\n{event.proto}: ")
        p.say(event.text)

    def _on_persona_reply(self, event: Any) -> None:
        p = self.persona(event.proto)
        p.streaming_request = ""
        p.busy = False
        if event.error is not None:
            p.status = "error"
            p.say(f"\n[error] {event.error.message}\n")
        elif event.backend:
            p.model = f"{event.backend}:{event.model}"

    def _on_cognitive_dissonance(self, event: Any) -> None:
        self.persona(event.proto).dissonance = event.score

    def _on_model_metrics(self, event: Any) -> None:
        for key in ("tokens_per_s", "queue_wait_ms", "ttft_ms", "total_ms"):
            series = [*self.metrics.get(key, []), float(getattr(event, key))][-METRICS_KEPT:]
            self.metrics[key] = series
        self.persona(event.proto).model = event.resident

    def _on_proto_changed(self, event: Any) -> None:
        if event.proto in self.personas:
            self.personas[event.proto].version = event.version
        self.dispatch("on_change", event.proto)

    def on_change(self, persona: str) -> None:
        """A Proto changed on the backend (inspectors refresh on this)."""

    def _on_backend_log(self, event: Any) -> None:
        if event.level in ("warning", "error"):
            self.toast(event.message)
