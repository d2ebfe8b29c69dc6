"""The versioned layout of the workbench: a reconstruction script of typed operations.

A layout file is ``{"version": 1, "saved_at": ..., "operations": [...]}``; replaying the
operations in order rebuilds the world. ``decode_layout`` reads one leniently: the file's
shape must be right, but an operation this version does not know (or cannot accept) is
skipped with a warning, so a layout saved by a newer workbench still restores what it can.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared_api.errors import LayoutError
from shared_api.types import ProtoName

LAYOUT_VERSION = 1

Coordinate = Annotated[float, Field(allow_inf_nan=False)]
Size = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Operation(BaseModel):
    # strict: a layout is written by us, so "12" for a coordinate is a mistake, not a number
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# Placed morphs sit at x, y (bottom-left corner, y grows upwards as in Kivy) with size w x h,
# in world coordinates. The fields are spelt out per class so that ``op`` is written first.


class CreatePersonaMorph(_Operation):
    op: Literal["create_persona_morph"] = "create_persona_morph"
    persona: ProtoName
    x: Coordinate
    y: Coordinate
    w: Size
    h: Size


class CreatePlotMorph(_Operation):
    """A live plot of model metrics (``tokens_per_s``, ``ttft_ms``, ...)."""

    op: Literal["create_plot_morph"] = "create_plot_morph"
    metrics: list[str]
    x: Coordinate
    y: Coordinate
    w: Size
    h: Size


class CreateInspector(_Operation):
    op: Literal["create_inspector"] = "create_inspector"
    persona: ProtoName
    x: Coordinate
    y: Coordinate
    w: Size
    h: Size


class SetWorld(_Operation):
    """World-wide settings; ``background`` is a colour such as ``"#1e1e24"`` (None: theme)."""

    op: Literal["set_world"] = "set_world"
    zoom: Size = 1.0
    background: str | None = None


class SetWindow(_Operation):
    """The workbench window's size and, when known, its position on the screen (pixels)."""

    op: Literal["set_window"] = "set_window"
    w: Size
    h: Size
    left: Coordinate | None = None
    top: Coordinate | None = None


Operation = Annotated[
    CreatePersonaMorph | CreatePlotMorph | CreateInspector | SetWorld | SetWindow,
    Field(discriminator="op"),
]
OPERATION_ADAPTER: TypeAdapter[Operation] = TypeAdapter(Operation)
OPERATION_KINDS: frozenset[str] = frozenset(
    m.model_fields["op"].default
    for m in (CreatePersonaMorph, CreatePlotMorph, CreateInspector, SetWorld, SetWindow)
)


class Layout(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    version: int = LAYOUT_VERSION
    saved_at: Annotated[float, Field(allow_inf_nan=False)] | None = None
    operations: list[Operation] = []


def decode_layout(data: Any, source: str = "The layout") -> tuple[Layout, list[str]]:
    """Decode parsed JSON into a ``Layout`` plus warnings for the operations it skipped.

    Raises ``LayoutError`` when the file as a whole is unusable: not an object, a missing or
    unsupported version, unknown top-level fields, a bad ``saved_at`` or ``operations`` that
    is not a list. ``source`` names the file in messages.
    """
    if not isinstance(data, dict):
        raise LayoutError(
            f"{source} is not a layout: expected a JSON object with 'version' and "
            f"'operations', got {_json_type(data)}. Delete it to start from the default.",
            source=source,
        )
    _check_version(data, source)
    unknown = sorted(set(data) - set(Layout.model_fields))
    if unknown:
        raise LayoutError(
            f"{source} has unknown top-level field(s) {', '.join(map(repr, unknown))}; "
            f"a version {LAYOUT_VERSION} layout has only {', '.join(Layout.model_fields)}.",
            source=source,
        )
    raw_ops = data.get("operations", [])
    if not isinstance(raw_ops, list):
        raise LayoutError(
            f"{source}: 'operations' must be a list of operations, not {_json_type(raw_ops)}.",
            source=source,
        )
    operations, warnings = decode_operations(raw_ops)
    try:
        layout = Layout(
            version=LAYOUT_VERSION, saved_at=data.get("saved_at"), operations=operations
        )
    except ValidationError as exc:
        raise LayoutError(
            f"{source}: 'saved_at' must be a timestamp (seconds) or null "
            f"({exc.errors()[0]['msg']}).",
            source=source,
        ) from None
    return layout, warnings


def decode_operations(raw_ops: list[Any]) -> tuple[list[Operation], list[str]]:
    """Decode operations one by one; each one that does not decode becomes a warning.

    Warnings number operations from 1, in file order.
    """
    operations: list[Operation] = []
    warnings: list[str] = []
    for number, raw in enumerate(raw_ops, start=1):
        op = raw.get("op") if isinstance(raw, dict) else None
        if not isinstance(raw, dict) or not isinstance(op, str):
            warnings.append(f"skipped operation {number}: not an object with an 'op' field")
        elif op not in OPERATION_KINDS:
            warnings.append(f"skipped operation {number}: unknown op {op!r}")
        else:
            try:
                operations.append(OPERATION_ADAPTER.validate_python(raw))
            except ValidationError as exc:
                warnings.append(f"skipped operation {number} ({op}): {_first_error(exc, op)}")
            except (ValueError, OverflowError) as exc:  # e.g. a 4,000-digit coordinate
                warnings.append(f"skipped operation {number} ({op}): {exc}")
    return operations, warnings


def _check_version(data: dict[str, Any], source: str) -> None:
    version = data.get("version")
    if type(version) is int and version == LAYOUT_VERSION:
        return
    if "version" not in data:
        problem = "has no 'version'"
    elif type(version) is int and version > LAYOUT_VERSION:
        problem = f"is version {version}, written by a newer Entropic OS"
    else:
        problem = f"has version {version!r}"
    raise LayoutError(
        f"{source} {problem}; this workbench reads layout version {LAYOUT_VERSION} only. "
        "Update Entropic OS, or delete the file to start from the default layout.",
        source=source,
        version=version,
        supported=LAYOUT_VERSION,
    )


def _first_error(exc: ValidationError, op: str) -> str:
    error = exc.errors()[0]
    loc = error["loc"][1:] if error["loc"][:1] == (op,) else error["loc"]  # drop the tag
    where = ".".join(str(part) for part in loc)
    return f"{where}: {error['msg']}" if where else str(error["msg"])


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)
