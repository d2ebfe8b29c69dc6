"""UI -> backend requests: one pydantic model per command, one tagged union ``Command``.

Every body that names a Proto calls the field ``proto``. New fields always get defaults.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared_api.types import Json, JsonObject, MethodName, ProtoName, StatePath

MAX_SOURCE = 256 * 1024
MAX_TEXT = 8 * 1024 * 1024


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Ping(_Command):
    kind: Literal["ping"] = "ping"


class Echo(_Command):
    """Returns ``data`` unchanged: a diagnostic and the protocol benchmark's payload."""

    kind: Literal["echo"] = "echo"
    data: str | bytes = ""


class Status(_Command):
    kind: Literal["status"] = "status"


class ListProtos(_Command):
    kind: Literal["list_protos"] = "list_protos"


class DescribeProto(_Command):
    kind: Literal["describe_proto"] = "describe_proto"
    proto: ProtoName


class GetState(_Command):
    """Read the state tree, or the subtree at a dotted ``path`` ("" is the root)."""

    kind: Literal["get_state"] = "get_state"
    proto: ProtoName
    path: StatePath = ""


class SetState(_Command):
    """Set the value at a dotted ``path``; intermediate maps are created as needed."""

    kind: Literal["set_state"] = "set_state"
    proto: ProtoName
    path: StatePath = Field(min_length=1)
    value: Json


class DefineMethod(_Command):
    kind: Literal["define_method"] = "define_method"
    proto: ProtoName
    name: MethodName
    source: str = Field(max_length=MAX_SOURCE)


class RemoveMethod(_Command):
    kind: Literal["remove_method"] = "remove_method"
    proto: ProtoName
    name: MethodName


class Invoke(_Command):
    """Call a method with JSON keyword arguments. An unknown method is not an error: the
    reply is ``does_not_understand``."""

    kind: Literal["invoke"] = "invoke"
    proto: ProtoName
    method: MethodName
    args: JsonObject = {}


class CloneProto(_Command):
    """Register a deep, independent copy under ``new_name`` (default: NAME-2, NAME-3, ...)."""

    kind: Literal["clone_proto"] = "clone_proto"
    proto: ProtoName
    new_name: ProtoName | None = None


class RemoveProto(_Command):
    """Delete a Proto from the image. The four codex personas cannot be removed."""

    kind: Literal["remove_proto"] = "remove_proto"
    proto: ProtoName


class SwapProto(_Command):
    """Clone the live Proto, apply all edits to the clone, then swap it in atomically.

    Refused with ``stale_version`` unless the live version still equals ``base_version``.
    ``state`` replaces the whole state tree when given.
    """

    kind: Literal["swap_proto"] = "swap_proto"
    proto: ProtoName
    base_version: int = Field(ge=0)
    state: JsonObject | None = None
    methods: dict[MethodName, Annotated[str, Field(max_length=MAX_SOURCE)]] = {}
    remove_methods: list[MethodName] = []


class AskPersona(_Command):
    """Ask a persona through its model. The reply is ``ask_accepted`` with a ``request_id``;
    the answer streams as ``token`` events, then one ``persona_reply`` event."""

    kind: Literal["ask_persona"] = "ask_persona"
    proto: ProtoName
    text: str = Field(min_length=1, max_length=MAX_TEXT)
    max_tokens: int | None = Field(default=None, ge=1, le=32768)


class Cancel(_Command):
    """Cancel a queued or streaming ``ask_persona`` request."""

    kind: Literal["cancel"] = "cancel"
    request_id: str = Field(min_length=1, max_length=64)


class ListModels(_Command):
    kind: Literal["list_models"] = "list_models"


class ModelStatus(_Command):
    kind: Literal["model_status"] = "model_status"


class SaveImage(_Command):
    kind: Literal["save_image"] = "save_image"


class Shutdown(_Command):
    """Stop the backend, saving the image first unless ``save`` is false."""

    kind: Literal["shutdown"] = "shutdown"
    save: bool = True


Command = Annotated[
    Ping
    | Echo
    | Status
    | ListProtos
    | DescribeProto
    | GetState
    | SetState
    | DefineMethod
    | RemoveMethod
    | Invoke
    | CloneProto
    | RemoveProto
    | SwapProto
    | AskPersona
    | Cancel
    | ListModels
    | ModelStatus
    | SaveImage
    | Shutdown,
    Field(discriminator="kind"),
]
COMMAND_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)
COMMAND_KINDS: frozenset[str] = frozenset(
    m.model_fields["kind"].default for m in _Command.__subclasses__()
)
