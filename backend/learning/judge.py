"""ALFRED as a non-conversational LLM-as-judge: rubric scores and pairwise verdicts.

Rubric scores are generated under a JSON schema (every criterion an integer 1-10, plus a
reason), so an answer is either a full score or a typed error, never a guess. A pairwise
verdict asks the judge for one letter, "A" or "B", in both presentation orders, and reads the
probability of each letter as the next token (one forward pass per order, nothing sampled):
the probabilities summed over the two orders decide, so a judge that favours whichever answer
comes first cancels out. It is a tie only when the margin is below ``TIE_MARGIN``.

ALFRED is asked through the ModelManager directly, not through ``PersonaLLM.ask``: a
judgement is not a conversation, so it is neither recorded in his history (the curator would
judge its own judgements) nor given memories.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Literal, Protocol

from pydantic import AfterValidator, BaseModel

from backend.codex import Codex
from backend.llm import structured
from backend.llm.pairwise import TIE_MARGIN, pairwise_verdict
from backend.llm.roles import role_selection
from shared_api.errors import EntropicError, ErrorCode, ErrorReply
from shared_api.learning import CRITERIA, JudgeScore, PairwiseVerdict

if TYPE_CHECKING:
    from backend.llm.service import PersonaLLM
    from backend.runtime import Runtime

CLIP = 1500
#: The rubric answer's token budget: four small integers and a reason of <= 200 characters.
SCORE_TOKENS = 160

CRITERIA_TEXT = {
    "logical_rigour": "is the reasoning sound, consistent and supported",
    "creative_synthesis": "does it combine ideas into something new and useful",
    "dissonance_resolution": "does it face tensions and contradictions and resolve them",
    "task_efficacy": "does it actually do what was asked",
}

Ten = Literal[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]


class RubricAnswer(BaseModel):
    """The schema the judge's rubric answer is generated under."""

    logical_rigour: Ten
    creative_synthesis: Ten
    dissonance_resolution: Ten
    task_efficacy: Ten
    #: Clipped, not bounded in the schema: a length bound becomes a grammar of nested
    #: optional characters that makes llama.cpp's constrained sampling crawl.
    reason: Annotated[str, AfterValidator(lambda text: str(text).strip()[:300])]


class Judge(Protocol):
    """Scores interactions and compares answers. ``name`` says who judges with what."""

    @property
    def name(self) -> str: ...

    def score(
        self, codex: Codex, prompt: str, reply: str, interaction_id: str = ""
    ) -> JudgeScore: ...

    def pairwise(
        self, question: str, answer_a: str, answer_b: str, criteria: list[str] | None = None
    ) -> PairwiseVerdict: ...


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
    return (
        f"{rubric(codex)}\n\nQuestion:\n{_clip(prompt)}\n\nAnswer by {codex.name}:\n{_clip(reply)}"
        "\n\nAnswer in JSON: each criterion's score, and the reason in one short sentence."
    )


def persona_criteria(codex: Codex) -> list[str]:
    """What "better" means when judging a persona's answers (A/B adoption)."""
    principles = "; ".join(codex.core_principles)
    return [
        "it answers the question correctly and usefully",
        f"it fits {codex.name}, {codex.role} (principles: {principles})",
    ]


def make_score(proto: str, interaction_id: str, answer: RubricAnswer, judge: str) -> JudgeScore:
    scores = {name: round(getattr(answer, name) / 10, 4) for name in CRITERIA}
    return JudgeScore(
        interaction_id=interaction_id,
        proto=proto,
        scores=scores,
        overall=round(sum(scores.values()) / len(scores), 4),
        judge=judge,
        rationale=answer.reason.strip(),
        raw=answer.model_dump_json(),
        ts=time.time(),
    )


def failed_score(proto: str, interaction_id: str, judge: str, error: Exception) -> JudgeScore:
    """A judgement the model could not produce: an explicit error, never a null score."""
    reply = (
        error.to_reply()
        if isinstance(error, EntropicError)
        else ErrorReply(code=ErrorCode.INTERNAL, message=f"The judge failed: {error}")
    )
    return JudgeScore(
        interaction_id=interaction_id, proto=proto, judge=judge, error=reply, ts=time.time()
    )


class AlfredJudge:
    """The judge persona (ALFRED by default), through the judge role's model."""

    def __init__(
        self,
        runtime: Runtime,
        llm: PersonaLLM,
        judge: str = "ALFRED",
        max_tokens: int = SCORE_TOKENS,
        tie_margin: float = TIE_MARGIN,
    ) -> None:
        self.runtime = runtime
        self.llm = llm
        self.judge = judge
        self.max_tokens = max(max_tokens, SCORE_TOKENS)
        self.tie_margin = tie_margin

    @property
    def name(self) -> str:
        if self.judge not in self.runtime.manager.names():
            return self.judge
        selection = role_selection(self.llm, "judge", self.runtime.manager.get(self.judge))
        return f"{self.judge} ({selection.backend}:{selection.model})"

    def score(self, codex: Codex, prompt: str, reply: str, interaction_id: str = "") -> JudgeScore:
        """Raises a typed error (``ModelOutputError``, ``ModelFailedError``, ...) when the
        model cannot produce a score."""
        alfred = self.runtime.manager.get(self.judge)
        selection = role_selection(self.llm, "judge", alfred)
        answer, _ = structured.generate(
            self.llm.manager,
            RubricAnswer,
            backend=selection.backend,
            model_name=selection.model,
            prompt=score_prompt(codex, prompt, reply),
            system=alfred.codex.system_prompt,
            max_tokens=self.max_tokens,
            caller=self.judge,
        )
        return make_score(codex.name, interaction_id, answer, self.name)

    def pairwise(
        self, question: str, answer_a: str, answer_b: str, criteria: list[str] | None = None
    ) -> PairwiseVerdict:
        selection = role_selection(self.llm, "judge", self.runtime.manager.get(self.judge))
        return pairwise_verdict(
            self.llm.manager, selection.backend, selection.model, question, answer_a, answer_b,
            list(criteria or []), caller=self.judge, judge=self.name, tie_margin=self.tie_margin,
        )  # fmt: skip
