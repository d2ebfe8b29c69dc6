"""TEST DOUBLES for the dialogue tests: a scripted model that forces outcomes (guaranteed
dissonance, a concession, an amendment proposal), in-process as a ``ModelBackend`` and
out-of-process as an Ollama HTTP server (``ScriptedOllama``) a real backend subprocess talks
to. Only the model is faked; graph, checkpoints, protos, journal and protocol are real."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from backend.llm.base import ChatMessage, Completion, GenerationParams, ModelInfo, OnToken
from tests.doubles.fake_ollama import GB, FakeOllama, _Handler

SPEED = "Logically, speed is strictly better than care: faster answers help more people."
DISSENT = "I disagree: care for the people involved matters more than speed."
CONCEDE = "I agree with ROBIN: we should balance both speed and care."
ACCORD = "I agree, we should balance both speed and care."
FACT = "Fact: studies show speed and care trade off; neither wins everywhere."
#: The marker a live-edited ``dialogue_prompt`` method puts in BRICK's prompt.
CONCEDE_MARKER = "CONCEDE"

PERSONA_MODELS = {
    "BRICK": "brick-double",
    "ROBIN": "robin-double",
    "BABS": "babs-double",
    "ALFRED": "alfred-double",
}


@dataclass
class Scenario:
    """The scripted model's behaviour; tests change it while a dialogue runs."""

    #: BRICK asks for research (RESEARCH: line) in his first turn.
    research: bool = True
    #: Amendments ("PROTO field: text") ALFRED proposes in his next judgements, in order.
    amendments: list[str] = field(default_factory=list)
    #: Seconds each reply takes (to kill a backend mid-dialogue).
    delay_s: float = 0.0
    calls: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def turns(self, persona: str, round_: int) -> int:
        """How often ``persona`` was asked for its turn of round ``round_`` (a dialogue
        resumed from its checkpoint never asks a checkpointed turn again)."""
        with self.lock:
            return sum(1 for p, text in self.calls if p == persona and f"Round {round_} of" in text)

    def reply(self, persona: str, prompt: str) -> str:
        with self.lock:
            self.calls.append((persona, prompt))
            first_brick = sum(1 for p, _ in self.calls if p == "BRICK") == 1
            amend = self.amendments.pop(0) if persona == "ALFRED" and self.amendments else ""
        if self.delay_s:
            time.sleep(self.delay_s)
        if persona == "BRICK":
            if CONCEDE_MARKER in prompt:
                return CONCEDE
            return SPEED + (
                "\nRESEARCH: what do studies say about speed?"
                if self.research and first_brick
                else ""
            )
        if persona == "ROBIN":
            return ACCORD if "balance both" in prompt else DISSENT
        if persona == "BABS":
            return FACT
        if persona == "ALFRED":  # his verdict is JSON under a schema (AlfredVerdict)
            agreed = prompt.count("balance both") >= 2
            proto, _, rest = amend.partition(" ")
            field, _, text = rest.partition(": ")
            return json.dumps(
                {
                    "convergence": 9 if agreed else 1,
                    "dissonance": 1 if agreed else 9,
                    "research": "",
                    "amend": {"proto": proto, "field": field, "text": text} if amend else None,
                    "reason": "they agree" if agreed else "opposite conclusions",
                }
            )
        return "ok"

    def prompts_of(self, persona: str) -> list[str]:
        with self.lock:
            return [p for who, p in self.calls if who == persona]


def persona_of(messages: list[dict[str, Any]] | list[ChatMessage]) -> str:
    system = next(
        (
            (m["content"] if isinstance(m, dict) else m.content)
            for m in messages
            if (m["role"] if isinstance(m, dict) else m.role) == "system"
        ),
        "",  # the pairwise judge sends no system prompt
    )
    match = re.match(r"You are ([A-Z][A-Z0-9_\-]*)", system)
    return match.group(1) if match else "?"


class ScriptedModel:
    """A ``ModelBackend`` TEST DOUBLE that answers from a ``Scenario`` (in-process)."""

    name = "embedded"

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario

    def list_models(self) -> list[ModelInfo]:
        return [ModelInfo("scripted-double", "embedded", 1)]

    def model_size(self, model: str) -> int:
        return 1

    def load(self, model: str) -> float:
        return 0.0

    def unload(self) -> None:
        pass

    def generate(
        self,
        model: str,
        messages: list[ChatMessage],
        params: GenerationParams,
        on_token: OnToken | None,
        cancel: threading.Event,
    ) -> Completion:
        text = self.scenario.reply(persona_of(messages), messages[-1].content)
        return Completion(
            text, "stop", prompt_tokens=10, completion_tokens=len(text.split()), generation_ms=1.0
        )


class _ScriptedHandler(_Handler):
    scenario: Scenario

    def _chat(self, body: dict[str, Any], model: str) -> None:
        messages = body.get("messages", [])
        text = self.scenario.reply(persona_of(messages), messages[-1]["content"])
        final = {
            "model": model,
            "message": {"role": "assistant", "content": text},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 12,
            "eval_count": len(text.split()),
            "load_duration": 1_000_000,
            "eval_duration": 1_000_000 * len(text.split()),
        }
        if body.get("stream", True):
            data = (
                json.dumps(
                    {**final, "message": {"role": "assistant", "content": text}, "done": False}
                )
                + "\n"
            )
            data += json.dumps({**final, "message": {"role": "assistant", "content": ""}}) + "\n"
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.end_headers()
            self.wfile.write(data.encode())
        else:
            self._json(200, final)


class ScriptedOllama(FakeOllama):
    """FakeOllama (a TEST DOUBLE of Ollama's HTTP API) whose chat replies come from a
    ``Scenario``; each persona gets its own model name (``PERSONA_MODELS``)."""

    def __init__(self, scenario: Scenario) -> None:
        super().__init__({m: GB for m in PERSONA_MODELS.values()})
        self.scenario = scenario
        self._server.RequestHandlerClass = type(
            "Handler", (_ScriptedHandler,), {"state": self.state, "scenario": scenario}
        )

    def config_toml(self, memory: bool = False, **dialogue: Any) -> str:
        """A config.toml that points every persona at its double model (the memory is off
        unless asked for: these tests are about dialogues, and it costs seconds to open)."""
        lines = [f'[models]\nollama_host = "{self.host}"\nbackend = "ollama"\n']
        if not memory:
            lines.append("[memory]\nenabled = false\n")
        for persona, model in PERSONA_MODELS.items():
            lines.append(f'[models.personas.{persona}]\nmodel = "{model}"\n')
        lines.append(
            "[dialogue]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in dialogue.items())
        )
        return "\n".join(lines)
