"""The dialogue graph's way to the live system: each turn looks its persona up in the live
``ProtoManager`` (so a method or state edited while the dialogue is paused is in effect when it
resumes) and asks it through ``Proto.invoke_llm``. Nothing here goes into the graph state."""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from backend.config import DialogueConfig
from backend.dialogue import prompts
from backend.dialogue.judge import words
from backend.runtime import Runtime
from shared_api.errors import EntropicError, MethodFailedError
from shared_api.replies import InvokeResult

log = logging.getLogger(__name__)

PROMPT_METHOD = "dialogue_prompt"
ROLES = ("logic", "empathy", "judge", "research")


ResearchSource = Callable[[str, int], list[str]]


class Personas:
    """The graph's only way to the live system (never stored in the graph state)."""

    def __init__(
        self,
        runtime: Runtime,
        config: DialogueConfig,
        research: ResearchSource | None = None,
    ) -> None:
        self.runtime = runtime
        self.config = config
        self.research_source = research

    def turn(
        self,
        node: str,
        persona: str,
        task: str,
        default: str,
        ctx: dict[str, Any],
        schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> dict[str, Any]:
        """Ask ``persona`` (its live Proto) and return the step record; with ``schema`` the
        answer is JSON valid under it."""
        proto = self.runtime.manager.get(persona)
        prompt, source = self._prompt(persona, task, default, ctx)
        started, clock = time.time(), time.perf_counter()
        tokens = max_tokens or self.config.max_tokens
        text = proto.invoke_llm(prompt, max_tokens=tokens, json_schema=schema).strip()
        duration = (time.perf_counter() - clock) * 1000
        interaction = self._interaction(persona, prompt)
        return {
            **record(node, persona, task, ctx, started, duration),
            "system": proto.codex.system_prompt,
            "prompt": prompt,
            "prompt_source": source,
            # What reached the model when the model service added to the prompt (memories it
            # recalled), if it records that; else the prompt above is exactly what was sent.
            "sent": str(interaction.get("sent", "")),
            "output": text,
            "stop_reason": str(interaction.get("stop_reason", "")),
            "model": f"{interaction.get('backend', '?')}:{interaction.get('model', '?')}",
            "timings": interaction.get("timings", {}),
            "usage": interaction.get("usage", {}),
        }

    def _prompt(
        self, persona: str, task: str, default: str, ctx: dict[str, Any]
    ) -> tuple[str, str]:
        """The default prompt, or what the persona's live ``dialogue_prompt`` method makes."""
        proto = self.runtime.manager.get(persona)
        method = proto.methods.get(PROMPT_METHOD)
        if method is None:
            return default, "default"
        offered = {
            "task": task,
            "goal": ctx.get("goal", ""),
            "round": ctx.get("round", 0),
            "transcript": prompts.transcript(ctx.get("turns", [])),
            "default": default,
            "context": {k: v for k, v in ctx.items() if k != "turns"},
        }
        params = list(inspect.signature(method.function).parameters.values())[1:]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            offered = {k: v for k, v in offered.items() if k in {p.name for p in params}}
        result = self.runtime.invoke(persona, PROMPT_METHOD, offered)
        if not isinstance(result, InvokeResult) or not isinstance(result.result, str):
            raise MethodFailedError(
                f"{persona}.{PROMPT_METHOD} must return the prompt as a non-empty string; "
                "fix it in the Inspector and continue the dialogue.",
                method=PROMPT_METHOD,
            )
        if not result.result.strip():
            raise MethodFailedError(f"{persona}.{PROMPT_METHOD} returned an empty prompt.")
        return result.result, f"method {persona}.{PROMPT_METHOD}"

    def _interaction(self, persona: str, prompt: str) -> dict[str, Any]:
        """The history entry ``invoke_llm`` just recorded (model, timings, usage)."""
        for item in reversed(self.runtime.manager.get(persona).history[-8:]):
            if item.get("prompt") == prompt:
                return dict(item)
        return {}

    def facts(self, question: str, k: int = 3) -> list[str]:
        """What memory knows about ``question``: the memory service when one is wired in,
        else a keyword search of every persona's recorded interactions."""
        if self.research_source is not None:
            try:
                return self.research_source(question, k)
            except EntropicError as exc:  # e.g. the memory is still opening
                log.info("memory search unavailable for BABS (%s); searching history", exc)
        wanted = words(question)
        scored: list[tuple[float, str]] = []
        for proto in self.runtime.manager.list():
            for item in proto.history[-200:]:
                text = f"{item.get('prompt', '')} {item.get('reply', '')}"
                found = words(text)
                overlap = len(wanted & found) / (len(wanted) or 1)
                if overlap > 0.3:
                    scored.append(
                        (overlap, f"{proto.name}: {prompts.clip(str(item.get('reply', '')), 300)}")
                    )
        return [text for _, text in sorted(scored, key=lambda s: -s[0])[:k]]


def record(
    node: str, persona: str, task: str, ctx: dict[str, Any], started: float, duration_ms: float
) -> dict[str, Any]:
    """The common part of a step record: a fresh id marks which checkpoint a node made."""
    shown = {k: (prompts.clip(v, 1500) if isinstance(v, str) else v) for k, v in ctx.items()}
    return {
        "id": uuid.uuid4().hex,
        "node": node,
        "persona": persona,
        "task": task,
        "round": ctx.get("round", 0),
        "input": shown,
        "started_at": round(started, 3),
        "duration_ms": round(duration_ms, 3),
    }


def memory_research(memory: Any) -> ResearchSource:
    """BABS's research through the memory service (``backend.memory.MemoryService``)."""

    def search(question: str, k: int) -> list[str]:
        hits = memory.search(question, k).hits
        return [f"{hit.source}: {prompts.clip(hit.text, 300)}" for hit in hits]

    return search
