"""Constrained field types shared by commands, replies and events."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, JsonValue

ProtoName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")]
MethodName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")]
StatePath = Annotated[str, Field(max_length=512, pattern=r"^([^.]+(\.[^.]+)*)?$")]
Json = JsonValue
JsonObject = dict[str, JsonValue]
