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
    ObjectProperty,
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
    #: the latest question sent and not answered yet (Esc cancels it), if any.
    pending_request = StringProperty("")
    #: the latest step of a forge of a tool for this persona ("" when none ran yet).
    forge = StringProperty("")

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
    #: memories in the episodic memory (chunks and interactions), from memory_metrics events.
    memory_rows = NumericProperty(0)
    #: long operations under way (image save, forge, model load...): op_id -> one line.
    progress = DictProperty({})
    #: the latest fine-tune or Ascension (``shared_api.learning.JobInfo``), from its events.
    learning_job = ObjectProperty(None, allownone=True)

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

    #: The dialogues' store (``ui.dialogue_store.DialogueStore``), fed the same events.
    dialogues: Any = None

    def apply(self, event: Event) -> None:
        handler = getattr(self, f"_on_{event.kind}", None)
        if handler is not None:
            handler(event)
        if self.dialogues is not None:
            self.dialogues.apply(event)

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
        if p.pending_request == event.request_id:
            p.pending_request = ""
        p.busy = False
        if event.stop_reason == "cancelled":
            p.say("\n[cancelled]\n")
        elif event.error is not None:
            p.status = "error"
            p.say(f"\n[error] {event.error.message}\n")
        elif event.backend:
            p.model = f"{event.backend}:{event.model}"
        if getattr(event, "citations", None):
            p.say(f"\n  sources: {sources_line(event.citations)}\n")

    def _on_memory_metrics(self, event: Any) -> None:
        values = {"memory_rows": float(event.rows)}
        if event.op == "search":
            values["memory_search_ms"] = float(event.took_ms)
        elif event.op == "ingest":
            values["memory_ingest_chunks_per_s"] = float(event.detail.get("chunks_per_s", 0.0))
            name = event.detail.get("name", "a document")
            chunks = f"{event.chunks} chunk" + ("" if event.chunks == 1 else "s")
            self.toast(f"Remembered {name}: {chunks}")
        for key, value in values.items():
            self.metrics[key] = [*self.metrics.get(key, []), value][-METRICS_KEPT:]
        self.memory_rows = event.rows

    def _on_cognitive_dissonance(self, event: Any) -> None:
        self.persona(event.proto).dissonance = event.score
        for name in event.protos:  # both sides of a dialogue's conflict
            if name in self.personas:
                self.personas[name].dissonance = event.score

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

    def _on_progress(self, event: Any) -> None:
        if event.done:
            self.progress.pop(event.op_id, None)
        else:
            line = f"{event.op.replace('_', ' ')} {event.fraction:.0%} {event.message}"
            self.progress[event.op_id] = line[:120]

    def _on_forge_progress(self, event: Any) -> None:
        text = (
            f"forging {event.name}: attempt {event.attempt}/{event.max_attempts} "
            f"{event.phase}: {event.message}"
        )
        if event.feedback:
            text += "\n" + "\n".join(event.feedback.strip().splitlines()[-6:])
        self.persona(event.proto).forge = text

    def _on_forge_finished(self, event: Any) -> None:
        tries = len(event.attempts)
        if event.outcome == "attached":
            text = f"{event.name} forged in {tries} attempt(s) and attached to {event.proto}"
        elif event.outcome == "gave_up":
            text = f"the forge of {event.name} gave up after {tries} attempt(s)"
        else:
            text = f"the forge of {event.name}: {event.outcome}"
            if event.error is not None:
                text += f": {event.error.message}"
        self.persona(event.proto).forge = text
        self.toast(text)

    # -- the learning loop --------------------------------------------------------------------
    def _on_learning_progress(self, event: Any) -> None:
        job, last = event.job, self.learning_job
        stepped = last is None or last.job_id != job.job_id or last.step != job.step
        if job.loss is not None and job.phase == "training" and stepped:
            self.metrics["finetune_loss"] = [*self.metrics.get("finetune_loss", []), job.loss][
                -METRICS_KEPT:
            ]
        self.learning_job = job

    def _on_learning_finished(self, event: Any) -> None:
        self.learning_job = event.job
        job = event.job
        self.toast(f"{job.kind} of {job.proto}: {job.outcome}. {job.message}")

    def _on_interactions_scored(self, event: Any) -> None:
        judged = [float(s.overall) for s in event.scores if s.overall is not None]
        if judged:
            series = [*self.metrics.get("judge_overall", []), *judged][-METRICS_KEPT:]
            self.metrics["judge_overall"] = series

    def _on_finetune_proposed(self, event: Any) -> None:
        self.toast(f"A fine-tune of {event.proto} is proposed: {event.reason}")

    def _on_model_pointer_changed(self, event: Any) -> None:
        record = event.record
        self.toast(f"{event.proto}: {record.action} to {record.current or 'the default model'}")

    def _on_backend_log(self, event: Any) -> None:
        if event.level in ("warning", "error"):
            self.toast(event.message)


def sources_line(citations: list[Any]) -> str:
    """``[1] notes.md > Setup (0.82); [2] conversation with ROBIN (0.61)``: what a persona
    was given from memory with its question."""
    parts = []
    for c in citations:
        where = c.source.rsplit("/", 1)[-1] if c.origin == "document" else c.source
        if c.heading and c.origin == "document":
            where += f" > {c.heading}"
        parts.append(f"[{c.n}] {where} ({c.score:.2f})")
    return "; ".join(parts)
