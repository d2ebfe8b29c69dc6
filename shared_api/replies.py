"""Backend -> UI replies to requests: one model per reply kind, one tagged union ``Reply``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared_api.dialogue import ApprovalInfo, DialogueSummary, GoalInfo, GraphEdge, StepInfo
from shared_api.errors import ErrorReply
from shared_api.learning import (
    AdoptionRecord,
    GoldenExample,
    JobInfo,
    JudgeScore,
    LearningSummary,
    PairwiseVerdict,
)
from shared_api.tools import Tool
from shared_api.types import Json, JsonObject


class _Reply(BaseModel):
    model_config = ConfigDict(frozen=True)


class Pong(_Reply):
    kind: Literal["pong"] = "pong"
    protocol: str
    pid: int


class EchoReply(_Reply):
    kind: Literal["echo_reply"] = "echo_reply"
    data: str | bytes


class ImageInfo(BaseModel):
    path: str | None = None
    generation: int = 0
    journal_seq: int = 0
    loaded_from: str | None = None
    fallback_used: bool = False
    replayed_records: int = 0
    warnings: list[str] = []


class StatusReply(_Reply):
    kind: Literal["status_reply"] = "status_reply"
    protocol: str
    package_version: str
    pid: int
    uptime_s: float
    home: str
    protos: list[str]
    image: ImageInfo
    endpoints: dict[str, str]
    services: dict[str, Any] = {}


class ProtoSummary(BaseModel):
    name: str
    role: str
    version: int
    methods: list[str]
    tools: list[str] = []


class ProtoList(_Reply):
    kind: Literal["proto_list"] = "proto_list"
    protos: list[ProtoSummary]


class ProtoDescription(_Reply):
    kind: Literal["proto_description"] = "proto_description"
    name: str
    version: int
    codex: JsonObject
    state: JsonObject
    methods: dict[str, str]
    description: JsonObject
    #: The most recent interactions, newest last (prompt, reply, model, usage, timings).
    history: list[JsonObject] = []
    #: Forged tools: live methods whose bodies run in the sandbox.
    tools: list[Tool] = []
    #: The model serving each of its roles (chat, code, judge), and why.
    models: dict[str, ModelSelection] = {}


class StateReply(_Reply):
    kind: Literal["state"] = "state"
    proto: str
    path: str
    value: Json
    version: int


class ProtoUpdated(_Reply):
    """Acknowledges a change; it is journaled (durable) before this reply is sent."""

    kind: Literal["proto_updated"] = "proto_updated"
    proto: str
    version: int
    change: str


class InvokeResult(_Reply):
    kind: Literal["invoke_result"] = "invoke_result"
    proto: str
    method: str
    result: Json
    version: int


class DoesNotUnderstand(_Reply):
    """The Proto has no such method. Not an error: the forge may answer it later."""

    kind: Literal["does_not_understand"] = "does_not_understand"
    proto: str
    message: str
    args: JsonObject
    known_methods: list[str]
    #: With autonomy off: the ``forge_tool`` body that would teach it, proposed as a goal.
    proposal: JsonObject | None = None
    #: With autonomy on: the forge that was tried and did not produce the tool.
    forge: JsonObject | None = None


class ImageSaved(_Reply):
    kind: Literal["image_saved"] = "image_saved"
    path: str
    generation: int
    bytes: int
    seconds: float
    journal_seq: int


class AskAccepted(_Reply):
    kind: Literal["ask_accepted"] = "ask_accepted"
    request_id: str
    proto: str
    backend: str
    model: str
    #: For ``ask_document``: the first line of the prompt, naming the document.
    asked: str = ""


class CancelReply(_Reply):
    kind: Literal["cancel_reply"] = "cancel_reply"
    request_id: str
    cancelled: bool


class ModelEntry(BaseModel):
    name: str
    backend: str
    size_bytes: int
    detail: dict[str, str] = {}


class ModelSelection(BaseModel):
    """Which backend and model a persona talks through, and why."""

    backend: str
    model: str
    reason: str


class ModelListReply(_Reply):
    kind: Literal["model_list"] = "model_list"
    models: list[ModelEntry]
    ollama_host: str
    ollama_reachable: bool
    ollama_error: str | None = None


class ModelStatusReply(_Reply):
    kind: Literal["model_status_reply"] = "model_status_reply"
    resident: str | None
    queue: list[str]
    selections: dict[str, ModelSelection]
    vram_budget_bytes: int
    in_flight: list[str]
    last_metrics: JsonObject | None = None
    #: Persona -> role (chat, code, judge) -> the model serving it, and why.
    roles: dict[str, dict[str, ModelSelection]] = {}
    #: The default model (backend, model) and why it is the default.
    default_model: dict[str, str] = {}


class ShuttingDown(_Reply):
    kind: Literal["shutting_down"] = "shutting_down"
    saved: bool


# -- episodic memory ------------------------------------------------------------------------
class MemoryHit(BaseModel):
    """One memory found by ``search_memory``: a document chunk or a past interaction."""

    origin: Literal["document", "conversation"]
    id: str
    #: Cosine similarity to the query, -1..1 (higher is closer).
    score: float
    #: A document's path, or "conversation with NAME".
    source: str
    name: str = ""
    #: The persona it belongs to: who read the document, or who answered.
    proto: str = ""
    #: Where in the document: a heading path, "class A > def f", "$.items[3]", "rows 2-40".
    heading: str = ""
    position: int = 0
    start: int = -1
    end: int = -1
    #: The chunk's text, or the exchange ("Asked ...: ... / answered: ...").
    text: str
    ts: float = 0.0


class MemoryHits(_Reply):
    kind: Literal["memory_hits"] = "memory_hits"
    query: str
    hits: list[MemoryHit]
    took_ms: float
    #: True when every table was searched exactly (no ANN index yet).
    exact: bool = True
    embedder: str = ""


class DocumentIngested(_Reply):
    kind: Literal["document_ingested"] = "document_ingested"
    path: str
    status: Literal["ingested", "duplicate", "queued"]
    name: str = ""
    doc_hash: str = ""
    chunks: int = 0
    proto: str = ""
    seconds: float = 0.0
    #: For a duplicate: where the same content was ingested from first.
    duplicate_of: str = ""


class MemoryStatsReply(_Reply):
    kind: Literal["memory_stats_reply"] = "memory_stats_reply"
    #: disabled, opening, ready, reembedding or failed.
    state: str
    error: str | None = None
    path: str = ""
    embedder: str = ""
    dim: int = 0
    schema_version: int = 0
    rows: dict[str, int] = {}
    index: dict[str, Any] = {}
    disk_bytes: int = 0
    detail: dict[str, Any] = {}


class ForgeAccepted(_Reply):
    kind: Literal["forge_accepted"] = "forge_accepted"
    request_id: str = Field(description="the forge's id: its events carry it; cancel takes it")
    proto: str
    name: str
    author: str
    max_attempts: int


class ToolList(_Reply):
    kind: Literal["tool_list"] = "tool_list"
    tools: list[Tool]


class ToolResult(_Reply):
    """A forged tool's answer; it ran in the sandbox (``runtime``)."""

    kind: Literal["tool_result"] = "tool_result"
    proto: str
    name: str
    result: Json
    stderr: str = ""
    runtime: str
    duration_s: float


# -- dialogues, the Live Debugger, approvals and goals ------------------------------------
class DialogueAccepted(_Reply):
    kind: Literal["dialogue_accepted"] = "dialogue_accepted"
    dialogue: DialogueSummary


class DialogueListReply(_Reply):
    kind: Literal["dialogue_list"] = "dialogue_list"
    dialogues: list[DialogueSummary]


class DialogueStatusReply(_Reply):
    kind: Literal["dialogue_status_reply"] = "dialogue_status_reply"
    dialogue: DialogueSummary
    #: The graph state at the current checkpoint (ids, text and scores).
    values: JsonObject = {}
    approvals: list[ApprovalInfo] = []


class DialogueGraphReply(_Reply):
    kind: Literal["dialogue_graph_reply"] = "dialogue_graph_reply"
    nodes: list[str]
    edges: list[GraphEdge]
    mermaid: str


class DebugAck(_Reply):
    """A debugger action was accepted; its results arrive as ``dialogue_*`` events."""

    kind: Literal["debug_ack"] = "debug_ack"
    dialogue: DialogueSummary
    action: str


class DebugStateUpdated(_Reply):
    kind: Literal["debug_state_updated"] = "debug_state_updated"
    dialogue: DialogueSummary
    checkpoint_id: str
    values: JsonObject = {}


class DebugHistoryReply(_Reply):
    kind: Literal["debug_history_reply"] = "debug_history_reply"
    dialogue: DialogueSummary
    steps: list[StepInfo]
    #: True when older steps were pruned (retention) or cut by ``limit``.
    truncated: bool = False


class AmendmentDecision(_Reply):
    kind: Literal["amendment_decision"] = "amendment_decision"
    approval: ApprovalInfo


class ApprovalListReply(_Reply):
    kind: Literal["approval_list"] = "approval_list"
    approvals: list[ApprovalInfo]


class GoalListReply(_Reply):
    kind: Literal["goal_list"] = "goal_list"
    goals: list[GoalInfo]
    #: Goals the rate limit held back since the backend started.
    suppressed: int = 0


class GoalReply(_Reply):
    kind: Literal["goal_reply"] = "goal_reply"
    goal: GoalInfo


# -- the learning loop ----------------------------------------------------------------------
class LearningStatusReply(_Reply):
    kind: Literal["learning_status_reply"] = "learning_status_reply"
    personas: list[LearningSummary]
    jobs: list[JobInfo] = []
    #: Whether fine-tuning can run here (the ``learning`` extra is installed).
    available: bool = False
    #: What to do when it cannot: "make learning" or "uv sync --extra learning".
    how_to_enable: str = ""
    engine: str = ""
    proposals: list[JsonObject] = []


class CurateReply(_Reply):
    kind: Literal["curate_reply"] = "curate_reply"
    scored: list[JudgeScore] = []
    promoted: list[str] = []
    deficits: list[str] = []
    proposals: list[str] = []
    judge: str = ""


class JudgeReply(_Reply):
    """The answer to ``judge``: the winner (a, b or tie), the margin, each order's
    probabilities and the model used."""

    kind: Literal["judge_reply"] = "judge_reply"
    verdict: PairwiseVerdict


class ScoreList(_Reply):
    kind: Literal["score_list"] = "score_list"
    proto: str
    scores: list[JudgeScore]


class GoldenList(_Reply):
    kind: Literal["golden_list"] = "golden_list"
    proto: str
    examples: list[GoldenExample]
    #: Where the persona's ChatML dataset lies on disk (JSONL).
    path: str = ""


class GoldenReply(_Reply):
    kind: Literal["golden_reply"] = "golden_reply"
    example: GoldenExample


class LearningAccepted(_Reply):
    """A fine-tune or Ascension started; ``job.job_id`` is what ``cancel`` takes."""

    kind: Literal["learning_accepted"] = "learning_accepted"
    job: JobInfo


class ModelAdoption(_Reply):
    kind: Literal["model_adoption"] = "model_adoption"
    record: AdoptionRecord
    summary: LearningSummary


class AscensionProposal(_Reply):
    kind: Literal["ascension_proposal"] = "ascension_proposal"
    proto: str
    #: The bases that could be trialled (GGUF paths, "embedded", Ollama models).
    options: list[str]
    choice: str = ""
    #: BABS's reason, as she gave it (or why the choice fell back to a rule).
    reason: str = ""


Reply = Annotated[
    Pong
    | EchoReply
    | StatusReply
    | ProtoList
    | ProtoDescription
    | StateReply
    | ProtoUpdated
    | InvokeResult
    | DoesNotUnderstand
    | ImageSaved
    | AskAccepted
    | CancelReply
    | ModelListReply
    | ModelStatusReply
    | ShuttingDown
    | MemoryHits
    | DocumentIngested
    | MemoryStatsReply
    | DialogueAccepted
    | DialogueListReply
    | DialogueStatusReply
    | DialogueGraphReply
    | DebugAck
    | DebugStateUpdated
    | DebugHistoryReply
    | AmendmentDecision
    | ApprovalListReply
    | GoalListReply
    | GoalReply
    | ForgeAccepted
    | ToolList
    | ToolResult
    | LearningStatusReply
    | CurateReply
    | JudgeReply
    | ScoreList
    | GoldenList
    | GoldenReply
    | LearningAccepted
    | ModelAdoption
    | AscensionProposal
    | ErrorReply,
    Field(discriminator="kind"),
]
REPLY_ADAPTER: TypeAdapter[Reply] = TypeAdapter(Reply)
