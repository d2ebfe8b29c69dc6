"""The learning loop's plain data (backend/learning/), shared by commands, replies and events.

ALFRED judges recorded interactions on a rubric drawn from the persona's codex; the best
become golden examples (ChatML); a fine-tune turns them into a candidate model, which is
validated blind against the current one and adopted by swapping the persona's model pointer.
Pydantic only: the UI imports this.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared_api.errors import ErrorReply
from shared_api.types import JsonObject

#: The rubric's criteria, each scored 0..1 (ALFRED is asked for 1-10).
CRITERIA: tuple[str, ...] = (
    "logical_rigour",
    "creative_synthesis",
    "dissonance_resolution",
    "task_efficacy",
)
GoldenId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-.]+$")]
Engine = Literal["auto", "cpu", "unsloth"]
JobPhase = Literal[
    "queued",
    "preparing",
    "loading",
    "training",
    "merging",
    "converting",
    "quantizing",
    "checking",
    "validating",
    "adopting",
    "done",
]
JobOutcome = Literal["adopted", "rejected", "trained", "failed", "cancelled"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class ChatTurn(_Frozen):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=256 * 1024)


class GoldenExample(_Frozen):
    """One training example in ChatML: system (the codex prompt), user, assistant."""

    id: GoldenId
    proto: str
    messages: list[ChatTurn] = Field(min_length=2)
    #: curator (promoted from a judged interaction) or user (added or edited by hand).
    source: Literal["curator", "user"] = "user"
    interaction_id: str = ""
    #: The judge's overall score (0..1) when it came from the curator.
    score: float | None = None
    excluded: bool = False
    note: str = ""
    created: float = 0.0
    updated: float = 0.0

    @property
    def prompt(self) -> str:
        return next((m.content for m in self.messages if m.role == "user"), "")

    @property
    def reply(self) -> str:
        return next((m.content for m in reversed(self.messages) if m.role == "assistant"), "")


class JudgeScore(_Frozen):
    """ALFRED's judgement of one interaction against the persona's codex."""

    interaction_id: str
    proto: str
    #: criterion -> 0..1, every criterion of the rubric (empty only when ``error`` is set).
    scores: dict[str, float] = {}
    #: The mean of the criteria; None only when the judgement failed (``error``).
    overall: float | None = None
    #: Why the judge could not score it (the model failed, or its answer did not validate):
    #: a failed judgement, shown as such and never counted as judged.
    error: ErrorReply | None = None
    judge: str = Field(default="", description="who judged: persona and model, or a double")
    rationale: str = ""
    raw: str = Field(default="", description="the judge's answer as given")
    ts: float = 0.0


class ModelPointer(_Frozen):
    """A model a persona can talk through: a GGUF file the embedded backend serves, and (GPU
    path) the Ollama model registered from it."""

    id: str
    proto: str
    path: str = ""
    sha256: str = ""
    size_bytes: int = 0
    #: The base it was fine-tuned from: "embedded" (the bundled model), a GGUF path, or an
    #: Ollama model name.
    base: str = ""
    base_path: str = ""
    quant: str = ""
    engine: str = ""
    ollama: str = Field(default="", description="the Ollama model registered from it, if any")
    examples: int = 0
    created: float = 0.0
    detail: JsonObject = {}


class JudgeOrder(_Frozen):
    """One presentation order of a pairwise judgement: the verdict token's probabilities,
    normalised over "A" and "B"."""

    #: "ab": answer_a was shown as A; "ba": answer_b was shown as A.
    order: Literal["ab", "ba"]
    #: Probability that the judge picks answer_a (resp. answer_b) in this order.
    p_a: float
    p_b: float
    #: How much of the next-token probability "A" and "B" together held (near 1: on task).
    mass: float = 1.0


class PairwiseVerdict(_Frozen):
    """Which of two answers is better, decided from the verdict-token probabilities summed
    over both presentation orders, so a judge's position bias cancels out."""

    winner: Literal["a", "b", "tie"]
    #: |p(a) - p(b)| of the summed probabilities, 0..1; below ``threshold`` it is a tie.
    margin: float
    threshold: float
    #: p(a) over both orders (p(b) = 1 - p_a).
    p_a: float
    orders: list[JudgeOrder] = []
    judge: str = ""
    backend: str = ""
    model: str = ""
    seconds: float = 0.0


class PairVerdict(_Frozen):
    """ALFRED's blind verdicts on one held-out prompt, asked in both orders."""

    prompt: str
    candidate: str
    current: str
    #: What the judge preferred with the candidate shown first, then shown second.
    verdicts: list[Literal["candidate", "current", "tie"]] = []
    outcome: Literal["win", "loss", "tie"] = "tie"
    #: The pairwise judgement the outcome came from (candidate as answer_a).
    judgement: PairwiseVerdict | None = None


class ValidationReport(_Frozen):
    """Candidate vs current model on a held-out set, judged blind; the adoption's evidence."""

    proto: str
    candidate: str
    current: str
    wins: int = 0
    losses: int = 0
    ties: int = 0
    #: One-sided sign test: the chance of this many wins or more if neither were better.
    p_value: float = 1.0
    alpha: float = 0.05
    significant: bool = False
    judge: str = ""
    pairs: list[PairVerdict] = []
    seconds: float = 0.0


class AdoptionRecord(_Frozen):
    """One change of a persona's model pointer, with its evidence."""

    action: Literal["adopt", "rollback", "ascend"]
    proto: str
    previous: str = Field(default="", description="the pointer id before ('' = default)")
    current: str = Field(default="", description="the pointer id after ('' = default)")
    reason: str = ""
    evidence: ValidationReport | None = None
    ts: float = 0.0


class JobInfo(_Frozen):
    """A fine-tune (or an Ascension) as the UI sees it."""

    job_id: str
    proto: str
    kind: Literal["finetune", "ascension"] = "finetune"
    engine: str = "cpu"
    phase: JobPhase = "queued"
    outcome: JobOutcome | None = None
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    losses: list[float] = []
    eta_s: float | None = None
    elapsed_s: float = 0.0
    examples: int = 0
    holdout: int = 0
    pid: int | None = None
    candidate: ModelPointer | None = None
    validation: ValidationReport | None = None
    message: str = ""
    error: str = ""
    started: float = 0.0
    ended: float = 0.0


class LearningSummary(_Frozen):
    """One persona's learning state."""

    proto: str
    model: ModelPointer | None = None
    previous: list[ModelPointer] = []
    candidates: list[ModelPointer] = []
    golden: int = 0
    excluded: int = 0
    #: Interactions the judge scored (failed judgements are not among them).
    scored: int = 0
    #: Judgements that failed (shown as errors; retried by the next curator pass).
    failed: int = 0
    unscored: int = 0
    #: criterion -> mean score over the judged interactions; "overall" too.
    means: dict[str, float] = {}
    #: The most recent overall scores, oldest first (for the plot).
    recent: list[float] = []
    adoptions: list[AdoptionRecord] = []
    base: str = ""
