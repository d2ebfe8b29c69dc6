"""Backend -> UI replies to requests: one model per reply kind, one tagged union ``Reply``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared_api.errors import ErrorReply
from shared_api.types import Json, JsonObject


class _Reply(BaseModel):
    model_config = ConfigDict(frozen=True)


class Pong(_Reply):
    kind: Literal["pong"] = "pong"
    protocol: str
    pid: int


class EchoReply(_Reply):
    kind: Literal["echo_reply"] = "echo_reply"
    data: str | bytes


class ImageInfo(BaseModel):
    path: str | None = None
    generation: int = 0
    journal_seq: int = 0
    loaded_from: str | None = None
    fallback_used: bool = False
    replayed_records: int = 0
    warnings: list[str] = []


class StatusReply(_Reply):
    kind: Literal["status_reply"] = "status_reply"
    protocol: str
    package_version: str
    pid: int
    uptime_s: float
    home: str
    protos: list[str]
    image: ImageInfo
    endpoints: dict[str, str]
    services: dict[str, Any] = {}


class ProtoSummary(BaseModel):
    name: str
    role: str
    version: int
    methods: list[str]


class ProtoList(_Reply):
    kind: Literal["proto_list"] = "proto_list"
    protos: list[ProtoSummary]


class ProtoDescription(_Reply):
    kind: Literal["proto_description"] = "proto_description"
    name: str
    version: int
    codex: JsonObject
    state: JsonObject
    methods: dict[str, str]
    description: JsonObject
    #: The most recent interactions, newest last (prompt, reply, model, usage, timings).
    history: list[JsonObject] = []


class StateReply(_Reply):
    kind: Literal["state"] = "state"
    proto: str
    path: str
    value: Json
    version: int


class ProtoUpdated(_Reply):
    """Acknowledges a change; it is journaled (durable) before this reply is sent."""

    kind: Literal["proto_updated"] = "proto_updated"
    proto: str
    version: int
    change: str


class InvokeResult(_Reply):
    kind: Literal["invoke_result"] = "invoke_result"
    proto: str
    method: str
    result: Json
    version: int


class DoesNotUnderstand(_Reply):
    """The Proto has no such method. Not an error: the forge may answer it later."""

    kind: Literal["does_not_understand"] = "does_not_understand"
    proto: str
    message: str
    args: JsonObject
    known_methods: list[str]


class ImageSaved(_Reply):
    kind: Literal["image_saved"] = "image_saved"
    path: str
    generation: int
    bytes: int
    seconds: float
    journal_seq: int


class AskAccepted(_Reply):
    kind: Literal["ask_accepted"] = "ask_accepted"
    request_id: str
    proto: str
    backend: str
    model: str


class CancelReply(_Reply):
    kind: Literal["cancel_reply"] = "cancel_reply"
    request_id: str
    cancelled: bool


class ModelEntry(BaseModel):
    name: str
    backend: str
    size_bytes: int
    detail: dict[str, str] = {}


class ModelSelection(BaseModel):
    """Which backend and model a persona talks through, and why."""

    backend: str
    model: str
    reason: str


class ModelListReply(_Reply):
    kind: Literal["model_list"] = "model_list"
    models: list[ModelEntry]
    ollama_host: str
    ollama_reachable: bool
    ollama_error: str | None = None


class ModelStatusReply(_Reply):
    kind: Literal["model_status_reply"] = "model_status_reply"
    resident: str | None
    queue: list[str]
    selections: dict[str, ModelSelection]
    vram_budget_bytes: int
    in_flight: list[str]
    last_metrics: JsonObject | None = None


class ShuttingDown(_Reply):
    kind: Literal["shutting_down"] = "shutting_down"
    saved: bool


Reply = Annotated[
    Pong
    | EchoReply
    | StatusReply
    | ProtoList
    | ProtoDescription
    | StateReply
    | ProtoUpdated
    | InvokeResult
    | DoesNotUnderstand
    | ImageSaved
    | AskAccepted
    | CancelReply
    | ModelListReply
    | ModelStatusReply
    | ShuttingDown
    | ErrorReply,
    Field(discriminator="kind"),
]
REPLY_ADAPTER: TypeAdapter[Reply] = TypeAdapter(Reply)
