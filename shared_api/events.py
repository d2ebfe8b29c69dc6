"""Backend -> UI events on the PUB socket: one model per event kind, one tagged union ``Event``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

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


class BackendLog(_Event):
    """A warning or error the user should see (e.g. a fallback image was loaded)."""

    kind: Literal["backend_log"] = "backend_log"
    level: Literal["info", "warning", "error"]
    message: str


class BackendStopping(_Event):
    kind: Literal["backend_stopping"] = "backend_stopping"
    reason: str


Event = Annotated[
    Heartbeat | ProtoChanged | CognitiveDissonance | Progress | BackendLog | BackendStopping,
    Field(discriminator="kind"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
