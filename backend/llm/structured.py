"""Model outputs the program reads: generated under a JSON schema, validated by pydantic.

The schema goes to the backend (``GenerationParams.json_schema``: a llama.cpp grammar, Ollama's
``format``), so the answer is that JSON by construction. It is still validated here: a backend
that ignored the schema, or an answer cut off by the token limit, is a typed
``ModelOutputError``, never a guess.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from backend.llm.base import ChatMessage, Completion, GenerationParams
from shared_api.errors import ModelOutputError

if TYPE_CHECKING:
    from backend.llm.manager import ModelManager

T = TypeVar("T", bound=BaseModel)


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of ``model``, every property required and nothing else allowed, so
    the grammar never lets the model wander into extra keys."""
    schema = model.model_json_schema()
    for node in [schema, *schema.get("$defs", {}).values()]:
        if node.get("type") == "object":
            node["required"] = list(node.get("properties", {}))
            node["additionalProperties"] = False
    return schema


def parse(model: type[T], completion: Completion) -> T:
    """``completion.text`` as ``model``; ``ModelOutputError`` when it is not."""
    try:
        return model.model_validate_json(completion.text)
    except ValidationError as exc:
        cut = completion.stop_reason == "length"
        hint = (
            "The answer hit the token limit before the JSON closed: raise max_tokens."
            if cut
            else "The backend did not honour the JSON schema; use a backend that supports "
            "structured output (embedded llama.cpp, Ollama 0.5 or newer)."
        )
        raise ModelOutputError(
            f"The model's answer is not a valid {model.__name__}: "
            f"{exc.errors()[0]['msg'] if exc.errors() else exc}. {hint}",
            answer=completion.text[:500],
            stop_reason=completion.stop_reason,
        ) from None


def generate(
    manager: ModelManager,
    model: type[T],
    *,
    backend: str,
    model_name: str,
    prompt: str,
    system: str | None = None,
    max_tokens: int = 256,
    temperature: float = 0.0,
    seed: int | None = None,
    caller: str = "anonymous",
    cancel: threading.Event | None = None,
) -> tuple[T, Completion]:
    """Ask for one ``model`` under its schema; the parsed value and the raw completion."""
    completion = manager.generate(
        backend=backend,
        model=model_name,
        messages=[ChatMessage("user", prompt)],
        system=system,
        params=GenerationParams(
            max_tokens=max_tokens,
            temperature=temperature,
            json_schema=schema_of(model),
            seed=seed,
        ),
        caller=caller,
        cancel=cancel,
    )
    return parse(model, completion), completion
