"""A persona's codex: its immutable identity, loaded from ``personas/<NAME>.json``."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared_api.errors import CodexInvalidError
from shared_api.types import ProtoName

PERSONAS_DIR = Path(__file__).resolve().parent.parent / "personas"


class Codex(BaseModel):
    """Frozen: a persona's identity changes only through an approved amendment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ProtoName
    role: str = Field(min_length=1, max_length=200)
    default_model: str = Field(min_length=1, max_length=200)
    system_prompt: str = Field(min_length=1, max_length=20_000)
    core_principles: tuple[str, ...] = Field(min_length=1)
    description: str = ""


def load_codex(path: Path) -> Codex:
    """Load and validate one codex file; errors name the file and the field."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CodexInvalidError(
            f"{path}: cannot read codex ({exc}). Fix the file or restore it from git.",
            file=str(path),
        ) from None
    try:
        codex = Codex.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise CodexInvalidError(
            f"{path}: field `{field}`: {first['msg']}", file=str(path), field=field
        ) from None
    if codex.name != path.stem:
        raise CodexInvalidError(
            f"{path}: field `name`: is {codex.name!r} but the file is named {path.stem!r}",
            file=str(path),
            field="name",
        )
    return codex


def load_personas(directory: Path = PERSONAS_DIR) -> dict[str, Codex]:
    codices = [load_codex(p) for p in sorted(directory.glob("*.json"))]
    if not codices:
        raise CodexInvalidError(f"No persona codex files (*.json) found in {directory}.")
    return {c.name: c for c in codices}


#: The codex fields an approved amendment may change (never ``name`` or the model).
AMENDABLE_FIELDS = ("role", "system_prompt", "core_principles", "description")


def codex_field_text(codex: Codex, field: str) -> str:
    """A codex field as text (``core_principles``: one principle per line)."""
    value = getattr(codex, field)
    return "\n".join(value) if isinstance(value, tuple) else str(value)


def amended(codex: Codex, field: str, text: str) -> Codex:
    """A validated copy of ``codex`` with ``field`` set from ``text`` (as ``codex_field_text``
    writes it). Only the journaled ``amend_codex`` op (an approved amendment) calls this."""
    if field not in AMENDABLE_FIELDS:
        raise CodexInvalidError(
            f"`{field}` cannot be amended; amendable fields: {', '.join(AMENDABLE_FIELDS)}.",
            field=field,
        )
    raw = codex.model_dump()
    if field == "core_principles":
        raw[field] = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        raw[field] = text
    try:
        return Codex.model_validate(raw)
    except ValidationError as exc:
        raise CodexInvalidError(
            f"The amended `{field}` is invalid: {exc.errors()[0]['msg']}.", field=field
        ) from None
