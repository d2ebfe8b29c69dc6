"""ScriptedModel: a TEST DOUBLE for a model backend, to force what a persona "writes".

It answers each generate call with the next scripted reply (then a stock "ok"), records the
prompts it was given, and keeps the one-model-resident rule the real backends keep. Use it
where an outcome must be forced (a forge that fails once, then passes); tests about inference
itself use the real embedded model.

Doubles that must force something else (block until released, run until cancelled) subclass
it and override ``answer``: the rest of the ``ModelBackend`` protocol stays here, once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from backend.llm.base import ChatMessage, Completion, GenerationParams, ModelInfo, OnToken


class ScriptedModel:
    name = "embedded"  # stands in for the embedded backend inside PersonaLLM

    def __init__(
        self,
        replies: Iterable[str] = (),
        *,
        name: str | None = None,
        size: int = 1,
        model_id: str = "scripted",
    ) -> None:
        if name is not None:
            self.name = name
        self.size = size
        self.model_id = model_id
        self.replies = list(replies)
        self.prompts: list[str] = []
        self.loaded: str | None = None
        self.loads = 0
        self.unloads = 0
        self._lock = threading.Lock()

    def script(self, *replies: str) -> None:
        with self._lock:
            self.replies.extend(replies)

    def list_models(self) -> list[ModelInfo]:
        return [ModelInfo(self.model_id, self.name, self.size)]

    def model_size(self, model: str) -> int:
        return self.size

    def load(self, model: str) -> float:
        self.loaded = model
        self.loads += 1
        return 0.0

    def unload(self) -> None:
        self.loaded = None
        self.unloads += 1

    def generate(
        self,
        model: str,
        messages: list[ChatMessage],
        params: GenerationParams,
        on_token: OnToken | None,
        cancel: threading.Event,
    ) -> Completion:
        completion = self.answer(messages, cancel)
        if on_token is not None and completion.text:
            on_token(completion.text)
        return completion

    def answer(self, messages: list[ChatMessage], cancel: threading.Event) -> Completion:
        """The reply to ``messages``: the next scripted one (then "ok"), in one piece."""
        with self._lock:
            self.prompts.append(messages[-1].content)
            text = self.replies.pop(0) if self.replies else "ok"
        return Completion(text=text, stop_reason="stop", completion_tokens=1, generation_ms=1.0)
