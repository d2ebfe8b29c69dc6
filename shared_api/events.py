"""Backend -> UI events on the PUB socket: one model per event kind, one tagged union ``Event``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared_api.dialogue import ApprovalInfo, DialogueSummary, GoalInfo, PauseReason, StepInfo
from shared_api.errors import ErrorReply
from shared_api.learning import AdoptionRecord, JobInfo, JudgeScore
from shared_api.tools import Tool, ToolAttempt
from shared_api.types import JsonObject


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)


class Heartbeat(_Event):
    kind: Literal["heartbeat"] = "heartbeat"
    pid: int
    uptime_s: float
    interval_s: float


class ProtoChanged(_Event):
    """A Proto was edited, swapped, cloned or removed. ``change`` names what happened."""

    kind: Literal["proto_changed"] = "proto_changed"
    proto: str
    version: int
    change: str
    detail: JsonObject = {}


class CognitiveDissonance(_Event):
    """Something a persona met but could not reconcile: an unknown message, or two
    personas' conflicting views (ALFRED's judgement in a dialogue). ``score`` is in [0, 1]."""

    kind: Literal["cognitive_dissonance"] = "cognitive_dissonance"
    proto: str
    source: str
    score: float = Field(ge=0.0, le=1.0)
    views: list[str] = []
    detail: JsonObject = {}
    #: Every persona in conflict (a dialogue's two sides); ``proto`` is the first of them.
    protos: list[str] = []


class Progress(_Event):
    """Progress of a long operation (image save, model load, ...)."""

    kind: Literal["progress"] = "progress"
    op: str
    op_id: str
    fraction: float = Field(ge=0.0, le=1.0)
    message: str = ""
    done: bool = False


class Token(_Event):
    """One streamed piece of a persona's answer."""

    kind: Literal["token"] = "token"
    request_id: str
    proto: str
    index: int
    text: str


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Citation(BaseModel):
    """A memory given to a persona with its prompt, numbered ``[n]`` there."""

    n: int
    origin: Literal["document", "conversation"]
    id: str
    #: A document's path, or "conversation with NAME".
    source: str
    proto: str = ""
    heading: str = ""
    #: Cosine similarity to the question.
    score: float
    excerpt: str = ""


class PersonaReply(_Event):
    """The end of an ``ask_persona`` request: the whole text, or the error that stopped it."""

    kind: Literal["persona_reply"] = "persona_reply"
    request_id: str
    proto: str
    text: str = ""
    stop_reason: Literal["stop", "length", "cancelled", "error"]
    backend: str = ""
    model: str = ""
    usage: Usage = Usage()
    timings: dict[str, float] = {}
    error: ErrorReply | None = None
    #: The memories retrieved into the prompt (``[n]`` in it), best first.
    citations: list[Citation] = []
    #: Loop guards: the reply was stopped where it began repeating a sentence; it looped
    #: (a 4-word sequence more than 3 times) and was re-sampled; it still looped and was
    #: trimmed where the loop began.
    repeat_stopped: bool = False
    resampled: bool = False
    degenerate: bool = False


class MemoryMetrics(_Event):
    """Figures from the episodic memory for the plots: after a search, an ingest or a write
    of interactions. ``rows`` counts every memory (chunks and interactions)."""

    kind: Literal["memory_metrics"] = "memory_metrics"
    op: Literal["search", "ingest", "record", "index"]
    took_ms: float
    rows: int
    hits: int = 0
    chunks: int = 0
    detail: JsonObject = {}


class ModelMetrics(_Event):
    """Per-call figures for the UI's plots."""

    kind: Literal["model_metrics"] = "model_metrics"
    request_id: str
    proto: str
    backend: str
    model: str
    queue_wait_ms: float
    load_ms: float
    ttft_ms: float
    tokens_per_s: float
    total_ms: float
    completion_tokens: int
    resident: str
    stop_reason: str = ""


class PersonaStatus(_Event):
    """What a persona's model is doing: idle, queued, loading, streaming or error."""

    kind: Literal["persona_status"] = "persona_status"
    proto: str
    status: Literal["idle", "queued", "loading", "streaming", "error"]
    detail: str = ""


class BackendLog(_Event):
    """A warning or error the user should see (e.g. a fallback image was loaded)."""

    kind: Literal["backend_log"] = "backend_log"
    level: Literal["info", "warning", "error"]
    message: str


class BackendStopping(_Event):
    kind: Literal["backend_stopping"] = "backend_stopping"
    reason: str


class ForgeProgress(_Event):
    """One step of a forge: ``examples`` (BRICK proposes examples from the description, when
    none were given; ``message`` lists them), ``writing`` (BRICK is asked for candidates),
    ``testing`` (they run against the examples in the sandbox), ``failed`` (with what went
    wrong, fed back to BRICK), ``passed``."""

    kind: Literal["forge_progress"] = "forge_progress"
    request_id: str
    proto: str
    name: str
    attempt: int
    max_attempts: int
    phase: Literal["examples", "writing", "testing", "failed", "passed"]
    message: str = ""
    feedback: str = ""


class ForgeFinished(_Event):
    """The end of a forge: ``attached`` (the tool is live), ``gave_up`` (no attempt passed),
    ``cancelled`` or ``error`` (e.g. no sandbox; ``error`` says what to do)."""

    kind: Literal["forge_finished"] = "forge_finished"
    request_id: str
    proto: str
    name: str
    outcome: Literal["attached", "gave_up", "cancelled", "error"]
    attempts: list[ToolAttempt] = []
    tool: Tool | None = None
    error: ErrorReply | None = None


# -- dialogues, the Live Debugger, approvals and the motivator ----------------------------
class DialogueChanged(_Event):
    """A dialogue started, paused, resumed, was edited, rewound or ended."""

    kind: Literal["dialogue_changed"] = "dialogue_changed"
    dialogue: DialogueSummary


class DialogueStepEvent(_Event):
    """One node of a dialogue ran; ``step`` holds its input, exact prompt, output, timings."""

    kind: Literal["dialogue_step"] = "dialogue_step"
    dialogue_id: str
    step: StepInfo


class DialoguePaused(_Event):
    """A dialogue stopped before ``node``: an impasse (dissonance), a breakpoint, a step, an
    approval, the user, or an error (``detail['error']`` says what to fix)."""

    kind: Literal["dialogue_paused"] = "dialogue_paused"
    dialogue_id: str
    reason: PauseReason
    node: str = ""
    personas: list[str] = []
    detail: JsonObject = {}


class DialogueFinished(_Event):
    kind: Literal["dialogue_finished"] = "dialogue_finished"
    dialogue_id: str
    status: str
    outcome: str = ""


class AmendmentProposed(_Event):
    kind: Literal["amendment_proposed"] = "amendment_proposed"
    approval: ApprovalInfo


class AmendmentDecided(_Event):
    kind: Literal["amendment_decided"] = "amendment_decided"
    approval: ApprovalInfo


class CuriosityDeficit(_Event):
    """The curiosity check found knowledge gaps or repeated failures in a persona's recent
    interactions. ``gaps`` quotes them; ``score`` in [0, 1]."""

    kind: Literal["curiosity_deficit"] = "curiosity_deficit"
    proto: str
    score: float = Field(ge=0.0, le=1.0)
    gaps: list[str] = []
    detail: JsonObject = {}


class GoalQueued(_Event):
    kind: Literal["goal_queued"] = "goal_queued"
    goal: GoalInfo


class GoalUpdated(_Event):
    kind: Literal["goal_updated"] = "goal_updated"
    goal: GoalInfo


# -- the learning loop (backend/learning/) ------------------------------------------------
class InteractionsScored(_Event):
    """The curator had interactions judged; ``promoted`` became golden examples."""

    kind: Literal["interactions_scored"] = "interactions_scored"
    proto: str
    scores: list[JudgeScore] = []
    promoted: list[str] = []


class FinetuneProposed(_Event):
    """Enough new golden examples for a fine-tune: ``body`` is the ``start_finetune`` body
    that would run it, for the user (or a goal) to approve."""

    kind: Literal["finetune_proposed"] = "finetune_proposed"
    proto: str
    golden: int
    new_examples: int
    reason: str = ""
    body: JsonObject = {}


class LearningProgress(_Event):
    """A fine-tune or Ascension moved on: its phase, step, loss, ETA (``job``)."""

    kind: Literal["learning_progress"] = "learning_progress"
    job: JobInfo


class LearningFinished(_Event):
    """A fine-tune or Ascension ended: adopted, rejected, trained, failed or cancelled."""

    kind: Literal["learning_finished"] = "learning_finished"
    job: JobInfo


class ModelPointerChanged(_Event):
    """A persona's model was adopted, rolled back or ascended (``record`` has the evidence)."""

    kind: Literal["model_pointer_changed"] = "model_pointer_changed"
    proto: str
    record: AdoptionRecord


Event = Annotated[
    Heartbeat
    | ProtoChanged
    | CognitiveDissonance
    | Progress
    | Token
    | PersonaReply
    | ModelMetrics
    | MemoryMetrics
    | PersonaStatus
    | BackendLog
    | BackendStopping
    | DialogueChanged
    | DialogueStepEvent
    | DialoguePaused
    | DialogueFinished
    | AmendmentProposed
    | AmendmentDecided
    | CuriosityDeficit
    | GoalQueued
    | GoalUpdated
    | ForgeProgress
    | ForgeFinished
    | InteractionsScored
    | FinetuneProposed
    | LearningProgress
    | LearningFinished
    | ModelPointerChanged,
    Field(discriminator="kind"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
