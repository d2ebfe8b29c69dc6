"""The plain data of dialogues, the debugger, approvals and goals, shared by replies and events.

Pydantic only (no LangGraph): the UI imports this. A dialogue's graph state is JSON (ids,
text and scores); these models are its views.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared_api.types import JsonObject

#: The nodes of the Socratic Contrapunto graph, in the order they usually run.
DIALOGUE_NODES: tuple[str, ...] = ("brick", "babs", "robin", "alfred", "impasse", "amend")

DialogueStatusName = Literal[
    "running", "paused", "awaiting_approval", "finished", "cancelled", "error", "damaged"
]
PauseReason = Literal[
    "dissonance", "breakpoint", "step", "approval", "user", "error", "rewound", "restart"
]
#: Goal life cycle: proposed (waits for the user) -> approved (its dialogue runs) -> done.
GoalStatus = Literal["proposed", "approved", "paused", "cancelled", "done"]
GoalActionName = Literal["approve", "pause", "resume", "cancel"]
#: Codex fields an amendment may change (never the name).
AmendableField = Literal["role", "system_prompt", "core_principles", "description"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class DialogueSummary(_Frozen):
    """What the UI lists about a dialogue."""

    dialogue_id: str
    goal: str
    status: DialogueStatusName
    #: Why it is paused or stopped (a PauseReason, "converged", "unresolved", ...).
    reason: str = ""
    #: The node that runs next ([] when finished).
    next: list[str] = []
    round: int = 0
    max_rounds: int = 0
    dissonance: float = 0.0
    convergence: float = 0.0
    #: role -> persona: {"logic": "BRICK", "empathy": "ROBIN", "judge": "ALFRED", ...}
    personas: dict[str, str] = {}
    breakpoints: list[str] = []
    #: A rewound dialogue's position (the checkpoint it resumes from), else "".
    head: str = ""
    outcome: str = ""
    created: float = 0.0
    updated: float = 0.0


class StepInfo(_Frozen):
    """One checkpoint on the dialogue's current branch: usually one node run.

    ``record`` is what the node saw and did: ``input``, the exact ``system`` and ``prompt``
    sent, ``output``, ``duration_ms``, ``model``, ``timings`` (empty for the input checkpoint).
    ``before`` is the checkpoint the node started from: rewind there to run it again.
    ``index`` counts the node runs (and edits) on this branch: step 1 is the first node.
    """

    index: int
    checkpoint_id: str
    before: str = ""
    node: str
    source: str = ""
    next: list[str] = []
    round: int = 0
    dissonance: float = 0.0
    created_at: str = ""
    record: JsonObject = {}


class ApprovalInfo(_Frozen):
    """A codex amendment ALFRED proposed; the dialogue waits for the user's decision."""

    interrupt_id: str
    dialogue_id: str
    proto: str
    field: AmendableField
    old: str
    new: str
    #: A unified diff of the codex field, old -> new.
    diff: str
    reason: str = ""
    status: Literal["pending", "approved", "rejected"] = "pending"
    created: float = 0.0
    #: The persona's version after an approved amendment.
    version: int | None = None


class GoalInfo(_Frozen):
    """A goal the motivator queued (from dissonance or a curiosity deficit)."""

    goal_id: str
    text: str
    source: str
    proto: str = ""
    score: float = Field(default=0.0, ge=0.0, le=1.0)
    status: GoalStatus = "proposed"
    dialogue_id: str = ""
    created: float = 0.0
    updated: float = 0.0
    detail: JsonObject = {}


class GraphEdge(_Frozen):
    source: str
    target: str
    conditional: bool = False
