"""ALFRED as a non-conversational LLM-as-judge: a rubric from the codex, scores, blind A/B.

The rubric's four criteria (logical rigour, creative synthesis, dissonance resolution, task
efficacy) are read in the light of the judged persona's role and core principles. ALFRED is
asked through the ModelManager directly, not through ``PersonaLLM.ask``: a judgement is not
a conversation, so it is neither recorded in his history (the curator would judge its own
judgements) nor given memories. Small models often ignore the format: whatever cannot be
parsed is kept as ``raw`` and scores nothing.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Literal, Protocol

from backend.codex import Codex
from backend.llm.base import ChatMessage, GenerationParams
from shared_api.learning import CRITERIA, JudgeScore

if TYPE_CHECKING:
    from backend.llm.service import PersonaLLM
    from backend.runtime import Runtime

Preference = Literal["first", "second", "tie"]
CLIP = 1500

CRITERIA_TEXT = {
    "logical_rigour": "is the reasoning sound, consistent and supported",
    "creative_synthesis": "does it combine ideas into something new and useful",
    "dissonance_resolution": "does it face tensions and contradictions and resolve them",
    "task_efficacy": "does it actually do what was asked",
}
_NUMBER = r"\W*[:=\-]?\s*\**\s*(\d+(?:\.\d+)?)\s*(?:/\s*(10|100|1))?"
_REASON = re.compile(r"^\W*reason\w*\W*[:=]\s*(.+)$", re.IGNORECASE | re.MULTILINE)
_CHOICE = re.compile(r"\b(?:answer\s+)?([AB])\b")


class Judge(Protocol):
    """Scores interactions and compares answers. ``name`` says who judges with what."""

    @property
    def name(self) -> str: ...

    def score(
        self, codex: Codex, prompt: str, reply: str, interaction_id: str = ""
    ) -> JudgeScore: ...

    def compare(self, codex: Codex, prompt: str, first: str, second: str) -> Preference: ...


def _clip(text: str, limit: int = CLIP) -> str:
    return text if len(text) <= limit else text[:limit] + " [...]"


def rubric(codex: Codex) -> str:
    """The rubric for judging ``codex``'s persona, from its role and principles."""
    principles = "; ".join(codex.core_principles)
    lines = [
        f"You judge an answer given by {codex.name}, {codex.role}.",
        f"{codex.name}'s principles: {principles}.",
        "Score each criterion from 1 (poor) to 10 (excellent), in the light of those principles:",
    ]
    lines += [f"- {name}: {text}" for name, text in CRITERIA_TEXT.items()]
    return "\n".join(lines)


def score_prompt(codex: Codex, prompt: str, reply: str) -> str:
    form = "\n".join(f"{name}: N" for name in CRITERIA)
    return (
        f"{rubric(codex)}\n\nQuestion:\n{_clip(prompt)}\n\nAnswer by {codex.name}:\n{_clip(reply)}"
        f"\n\nReply in exactly this form, nothing else:\n{form}\nreason: one sentence"
    )


def compare_prompt(codex: Codex, prompt: str, first: str, second: str) -> str:
    principles = "; ".join(codex.core_principles)
    return (
        f"Two answers to the same question. Which one better fits {codex.name}, {codex.role} "
        f"(principles: {principles}), and answers the question better?\n\n"
        f"Question:\n{_clip(prompt)}\n\nAnswer A:\n{_clip(first)}\n\nAnswer B:\n{_clip(second)}"
        "\n\nReply with one letter only: A or B."
    )


def parse_scores(text: str) -> dict[str, float]:
    """criterion -> 0..1 for each criterion the text scores ("logical rigour: 7", "7/10")."""
    found: dict[str, float] = {}
    for name in CRITERIA:
        words = r"[\s_\-]*".join(re.escape(w) for w in name.split("_"))
        words = words.replace("rigour", "rigou?r")
        match = re.search(words + _NUMBER, text, re.IGNORECASE)
        if match is None:
            continue
        value = float(match.group(1))
        scale = (
            float(match.group(2))
            if match.group(2)
            else (1.0 if "." in match.group(1) and value <= 1 else 10.0)
        )
        found[name] = round(max(0.0, min(1.0, value / scale)), 4)
    return found


def parse_choice(text: str) -> Preference:
    match = _CHOICE.search(text.strip()[:200])
    if match is None:
        return "tie"
    return "first" if match.group(1) == "A" else "second"


def make_score(
    proto: str, interaction_id: str, scores: dict[str, float], judge: str, raw: str
) -> JudgeScore:
    reason = _REASON.search(raw)
    overall = round(sum(scores.values()) / len(scores), 4) if scores else None
    return JudgeScore(
        interaction_id=interaction_id,
        proto=proto,
        scores=scores,
        overall=overall,
        judge=judge,
        rationale=reason.group(1).strip()[:500] if reason else "",
        raw=raw[:2000],
        ts=time.time(),
    )


class AlfredJudge:
    """The judge persona (ALFRED by default), through his own model and system prompt."""

    def __init__(
        self, runtime: Runtime, llm: PersonaLLM, judge: str = "ALFRED", max_tokens: int = 96
    ) -> None:
        self.runtime = runtime
        self.llm = llm
        self.judge = judge
        self.max_tokens = max_tokens

    @property
    def name(self) -> str:
        if self.judge not in self.runtime.manager.names():
            return self.judge
        selection = self.llm.select(self.runtime.manager.get(self.judge), "judge")
        return f"{self.judge} ({selection.backend}:{selection.model})"

    def _ask(self, text: str, max_tokens: int) -> str:
        alfred = self.runtime.manager.get(self.judge)
        selection = self.llm.select(alfred, "judge")
        completion = self.llm.manager.generate(
            backend=selection.backend,
            model=selection.model,
            messages=[ChatMessage("user", text)],
            system=alfred.codex.system_prompt,
            params=GenerationParams(max_tokens=max_tokens, temperature=0.0),
            caller=self.judge,
        )
        return completion.text

    def score(self, codex: Codex, prompt: str, reply: str, interaction_id: str = "") -> JudgeScore:
        raw = self._ask(score_prompt(codex, prompt, reply), self.max_tokens)
        return make_score(codex.name, interaction_id, parse_scores(raw), self.name, raw)

    def compare(self, codex: Codex, prompt: str, first: str, second: str) -> Preference:
        return parse_choice(self._ask(compare_prompt(codex, prompt, first, second), 4))
