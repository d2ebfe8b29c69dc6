"""What every model backend speaks: messages in, streamed text and a ``Completion`` out."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant"]
StopReason = Literal["stop", "length", "cancelled", "error"]
OnToken = Callable[[str], None]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 256
    temperature: float = 0.0
    repeat_penalty: float = 1.0  # 1.0: none (persona replies use models.repeat_penalty)
    #: Generate JSON valid under this schema (llama.cpp grammar, Ollama ``format``, an
    #: OpenAI-compatible ``response_format``); the text is then that JSON.
    json_schema: dict[str, Any] | None = None
    #: Score these answers instead of generating: one forward pass over the prompt, and the
    #: log-probability of each choice's first token as the next token goes to
    #: ``Completion.choice_logprobs`` (``text`` is the likeliest choice).
    choices: tuple[str, ...] = ()
    #: With ``choices``: the start of the assistant's reply the choice continues ("The better
    #: answer is"), so the next token is the verdict. Embedded only; others ignore it.
    prefill: str = ""
    #: Sampling seed (None: the backend's own); best-of-n sampling varies it.
    seed: int | None = None


@dataclass
class Completion:
    text: str
    stop_reason: StopReason
    #: The loop guards (persona replies): stopped at a repeated sentence, re-sampled because
    #: the reply looped, or still looping after that and trimmed.
    repeat_stopped: bool = False
    resampled: bool = False
    degenerate: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    load_ms: float = 0.0
    ttft_ms: float = 0.0
    generation_ms: float = 0.0
    #: choice -> log-probability, for a ``GenerationParams.choices`` request.
    choice_logprobs: dict[str, float] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / (self.generation_ms / 1000) if self.generation_ms else 0.0


@dataclass(frozen=True)
class ModelInfo:
    name: str
    backend: str
    size_bytes: int
    detail: dict[str, str] = field(default_factory=dict)


class ModelBackend(Protocol):
    """A source of completions. ``generate`` is only ever called by the ``ModelManager``,
    one call at a time, after ``load``."""

    name: str

    def list_models(self) -> list[ModelInfo]: ...

    def model_size(self, model: str) -> int: ...

    def load(self, model: str) -> float:
        """Make ``model`` resident; returns the load time in ms (0 if already resident)."""
        ...

    def unload(self) -> None: ...

    def generate(
        self,
        model: str,
        messages: list[ChatMessage],
        params: GenerationParams,
        on_token: OnToken | None,
        cancel: threading.Event,
    ) -> Completion: ...
