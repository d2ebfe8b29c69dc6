"""OpenAI-compatible inference servers: their configuration, and how a model reference names
one. Kept apart from ``backend/config.py`` so that model roles and personas can point here.

``[models.openai.NAME]`` in config.toml declares one server (vLLM, llama.cpp's server, LM
Studio, Ollama's ``/v1``); a persona or role then names a model on it as ``openai:NAME/MODEL``
(or ``openai:NAME`` for the endpoint's default ``model``). The API key is read from the
environment variable ``api_key_env`` when a request goes out: it is never stored in the config
file, the image or a log line.
"""

from __future__ import annotations

import os
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared_api.errors import ConfigInvalidError

PREFIX = "openai:"
BACKEND_PREFIX = "openai:"  # a ModelManager backend per endpoint: "openai:NAME"


class OpenAIEndpoint(BaseModel):
    """One OpenAI-compatible server."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="e.g. http://127.0.0.1:8000/v1 (vLLM), .../v1 (Ollama)")
    model: str = Field(default="", description="the model id used by a bare openai:NAME")
    api_key_env: str = Field(
        default="", description="environment variable holding the API key; empty: no key"
    )
    timeout_s: float = Field(default=120.0, gt=0, description="per request, streaming included")
    connect_timeout_s: float = Field(default=5.0, gt=0)
    concurrency: int = Field(
        default=4, ge=1, le=256, description="calls in flight at once on this server"
    )
    structured: Literal["json_schema", "json_object"] = Field(
        default="json_schema",
        description="how a JSON schema is sent: json_schema (OpenAI, vLLM, Ollama, LM Studio) "
        'or json_object with "schema" (llama-cpp-python\'s server)',
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be an http:// or https:// URL")
        if parts.password:
            raise ValueError("base_url must not hold a password; use api_key_env")
        return value.rstrip("/")

    def api_key(self) -> str:
        """The key from the environment ("" when none is configured or set)."""
        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""


def parse_reference(reference: str, endpoints: dict[str, OpenAIEndpoint]) -> tuple[str, str]:
    """``openai:NAME/MODEL`` or ``openai:NAME`` -> (backend name, model id).

    Raises ``ConfigInvalidError`` naming the known endpoints for an unknown one."""
    rest = reference.removeprefix(PREFIX)
    name, _, model = rest.partition("/")
    endpoint = endpoints.get(name)
    if endpoint is None:
        known = ", ".join(sorted(endpoints)) or "none"
        raise ConfigInvalidError(
            f"Model {reference!r} names the OpenAI endpoint {name!r}, which config.toml does "
            f"not declare (known: {known}). Add [models.openai.{name}] with its base_url."
        )
    model = model or endpoint.model
    if not model:
        raise ConfigInvalidError(
            f"Model {reference!r} names no model; write openai:{name}/MODEL or set "
            f"models.openai.{name}.model."
        )
    return BACKEND_PREFIX + name, model


def is_reference(reference: str) -> bool:
    return reference.startswith(PREFIX)
