"""Backend -> UI events on the PUB socket: one model per event kind, one tagged union ``Event``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared_api.errors import ErrorReply
from shared_api.types import JsonObject


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)


class Heartbeat(_Event):
    kind: Literal["heartbeat"] = "heartbeat"
    pid: int
    uptime_s: float
    interval_s: float


class ProtoChanged(_Event):
    """A Proto was edited, swapped, cloned or removed. ``change`` names what happened."""

    kind: Literal["proto_changed"] = "proto_changed"
    proto: str
    version: int
    change: str
    detail: JsonObject = {}


class CognitiveDissonance(_Event):
    """Something a persona met but could not reconcile: an unknown message, or (later) two
    personas' conflicting views. ``score`` is in [0, 1]."""

    kind: Literal["cognitive_dissonance"] = "cognitive_dissonance"
    proto: str
    source: str
    score: float = Field(ge=0.0, le=1.0)
    views: list[str] = []
    detail: JsonObject = {}


class Progress(_Event):
    """Progress of a long operation (image save, model load, ...)."""

    kind: Literal["progress"] = "progress"
    op: str
    op_id: str
    fraction: float = Field(ge=0.0, le=1.0)
    message: str = ""
    done: bool = False


class Token(_Event):
    """One streamed piece of a persona's answer."""

    kind: Literal["token"] = "token"
    request_id: str
    proto: str
    index: int
    text: str


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class PersonaReply(_Event):
    """The end of an ``ask_persona`` request: the whole text, or the error that stopped it."""

    kind: Literal["persona_reply"] = "persona_reply"
    request_id: str
    proto: str
    text: str = ""
    stop_reason: Literal["stop", "length", "cancelled", "error"]
    backend: str = ""
    model: str = ""
    usage: Usage = Usage()
    timings: dict[str, float] = {}
    error: ErrorReply | None = None


class ModelMetrics(_Event):
    """Per-call figures for the UI's plots."""

    kind: Literal["model_metrics"] = "model_metrics"
    request_id: str
    proto: str
    backend: str
    model: str
    queue_wait_ms: float
    load_ms: float
    ttft_ms: float
    tokens_per_s: float
    total_ms: float
    completion_tokens: int
    resident: str
    stop_reason: str = ""


class PersonaStatus(_Event):
    """What a persona's model is doing: idle, queued, loading, streaming or error."""

    kind: Literal["persona_status"] = "persona_status"
    proto: str
    status: Literal["idle", "queued", "loading", "streaming", "error"]
    detail: str = ""


class BackendLog(_Event):
    """A warning or error the user should see (e.g. a fallback image was loaded)."""

    kind: Literal["backend_log"] = "backend_log"
    level: Literal["info", "warning", "error"]
    message: str


class BackendStopping(_Event):
    kind: Literal["backend_stopping"] = "backend_stopping"
    reason: str


Event = Annotated[
    Heartbeat
    | ProtoChanged
    | CognitiveDissonance
    | Progress
    | Token
    | PersonaReply
    | ModelMetrics
    | PersonaStatus
    | BackendLog
    | BackendStopping,
    Field(discriminator="kind"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
