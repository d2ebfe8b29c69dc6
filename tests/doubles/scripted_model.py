"""ScriptedModel: a TEST DOUBLE for a model backend, to force what a persona "writes".

It answers each generate call with the next scripted reply (then a stock "ok"), records the
prompts it was given, and keeps the one-model-resident rule the real backends keep. Use it
where an outcome must be forced (a forge that fails once, then passes); tests about inference
itself use the real embedded model.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from backend.llm.base import ChatMessage, Completion, GenerationParams, ModelInfo, OnToken


class ScriptedModel:
    name = "embedded"  # stands in for the embedded backend inside PersonaLLM

    def __init__(self, replies: Iterable[str] = ()) -> None:
        self.replies = list(replies)
        self.prompts: list[str] = []
        self.loaded: str | None = None
        self._lock = threading.Lock()

    def script(self, *replies: str) -> None:
        with self._lock:
            self.replies.extend(replies)

    def list_models(self) -> list[ModelInfo]:
        return [ModelInfo("scripted", self.name, 1)]

    def model_size(self, model: str) -> int:
        return 1

    def load(self, model: str) -> float:
        self.loaded = model
        return 0.0

    def unload(self) -> None:
        self.loaded = None

    def generate(
        self,
        model: str,
        messages: list[ChatMessage],
        params: GenerationParams,
        on_token: OnToken | None,
        cancel: threading.Event,
    ) -> Completion:
        with self._lock:
            self.prompts.append(messages[-1].content)
            text = self.replies.pop(0) if self.replies else "ok"
        if on_token is not None:
            on_token(text)
        return Completion(text=text, stop_reason="stop", completion_tokens=1, generation_ms=1.0)
