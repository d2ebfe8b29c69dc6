"""UI -> backend requests: one pydantic model per command, one tagged union ``Command``.

Every body that names a Proto calls the field ``proto``. New fields always get defaults.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared_api.learning import ChatTurn, GoldenId
from shared_api.tools import ToolName
from shared_api.types import Json, JsonObject, MethodName, ProtoName, StatePath

MAX_SOURCE = 256 * 1024
MAX_TEXT = 8 * 1024 * 1024


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Ping(_Command):
    kind: Literal["ping"] = "ping"
    #: "workbench" from an attached workbench (it keeps a backend it started alive).
    client: str = Field(default="", max_length=32)


class Echo(_Command):
    """Returns ``data`` unchanged: a diagnostic and the protocol benchmark's payload."""

    kind: Literal["echo"] = "echo"
    data: str | bytes = ""


class Status(_Command):
    kind: Literal["status"] = "status"


class ListProtos(_Command):
    kind: Literal["list_protos"] = "list_protos"


class DescribeProto(_Command):
    kind: Literal["describe_proto"] = "describe_proto"
    proto: ProtoName


class GetState(_Command):
    """Read the state tree, or the subtree at a dotted ``path`` ("" is the root)."""

    kind: Literal["get_state"] = "get_state"
    proto: ProtoName
    path: StatePath = ""


class SetState(_Command):
    """Set the value at a dotted ``path``; intermediate maps are created as needed."""

    kind: Literal["set_state"] = "set_state"
    proto: ProtoName
    path: StatePath = Field(min_length=1)
    value: Json


class DefineMethod(_Command):
    kind: Literal["define_method"] = "define_method"
    proto: ProtoName
    name: MethodName
    source: str = Field(max_length=MAX_SOURCE)


class RemoveMethod(_Command):
    kind: Literal["remove_method"] = "remove_method"
    proto: ProtoName
    name: MethodName


class Invoke(_Command):
    """Call a method with JSON keyword arguments. An unknown method is not an error: the
    reply is ``does_not_understand``."""

    kind: Literal["invoke"] = "invoke"
    proto: ProtoName
    method: MethodName
    args: JsonObject = {}


class CloneProto(_Command):
    """Register a deep, independent copy under ``new_name`` (default: NAME-2, NAME-3, ...)."""

    kind: Literal["clone_proto"] = "clone_proto"
    proto: ProtoName
    new_name: ProtoName | None = None


class RemoveProto(_Command):
    """Delete a Proto from the image. The four codex personas cannot be removed."""

    kind: Literal["remove_proto"] = "remove_proto"
    proto: ProtoName


class SwapProto(_Command):
    """Clone the live Proto, apply all edits to the clone, then swap it in atomically.

    Refused with ``stale_version`` unless the live version still equals ``base_version``.
    ``state`` replaces the whole state tree when given.
    """

    kind: Literal["swap_proto"] = "swap_proto"
    proto: ProtoName
    base_version: int = Field(ge=0)
    state: JsonObject | None = None
    methods: dict[MethodName, Annotated[str, Field(max_length=MAX_SOURCE)]] = {}
    remove_methods: list[MethodName] = []


class AskPersona(_Command):
    """Ask a persona through its model. The reply is ``ask_accepted`` with a ``request_id``;
    the answer streams as ``token`` events, then one ``persona_reply`` event."""

    kind: Literal["ask_persona"] = "ask_persona"
    proto: ProtoName
    text: str = Field(min_length=1, max_length=MAX_TEXT)
    max_tokens: int | None = Field(default=None, ge=1, le=32768)


class Cancel(_Command):
    """Cancel a queued or streaming ``ask_persona`` request."""

    kind: Literal["cancel"] = "cancel"
    request_id: str = Field(min_length=1, max_length=64)


class ListModels(_Command):
    kind: Literal["list_models"] = "list_models"


class ModelStatus(_Command):
    kind: Literal["model_status"] = "model_status"


class SaveImage(_Command):
    kind: Literal["save_image"] = "save_image"


class Shutdown(_Command):
    """Stop the backend, saving the image first unless ``save`` is false."""

    kind: Literal["shutdown"] = "shutdown"
    save: bool = True


class ForgeTool(_Command):
    """Have BRICK write ``name`` with its tests, test it in the sandbox (retrying with the
    errors up to ``max_attempts`` times) and attach it to ``proto`` as a sandboxed method.
    The reply is ``forge_accepted``; ``forge_progress`` events follow, then one
    ``forge_finished`` event."""

    kind: Literal["forge_tool"] = "forge_tool"
    proto: ProtoName
    name: ToolName
    description: str = Field(min_length=1, max_length=4000)
    examples: list[Annotated[str, Field(max_length=1000)]] = Field(default=[], max_length=20)
    max_attempts: int | None = Field(default=None, ge=1, le=10)


class ListTools(_Command):
    """The forged tools, of one Proto or of all."""

    kind: Literal["list_tools"] = "list_tools"
    proto: ProtoName | None = None


class RemoveTool(_Command):
    kind: Literal["remove_tool"] = "remove_tool"
    proto: ProtoName
    name: ToolName


class RunTool(_Command):
    """Call a forged tool in the sandbox with JSON keyword ``args``."""

    kind: Literal["run_tool"] = "run_tool"
    proto: ProtoName
    name: ToolName
    args: JsonObject = {}


# -- dialogues, the Live Debugger, approvals and goals (backend/dialogue/) ---------------
DialogueId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
NodeName = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z_]+$")]


class StartDialogue(_Command):
    """BRICK and ROBIN argue ``goal`` in turns while ALFRED judges; the reply is
    ``dialogue_accepted`` and the dialogue runs on its own thread (``dialogue_*`` events).
    ``personas`` maps a role (logic, empathy, judge, research) to another Proto (a clone)."""

    kind: Literal["start_dialogue"] = "start_dialogue"
    goal: str = Field(min_length=1, max_length=4000)
    max_rounds: int | None = Field(default=None, ge=1, le=100)
    breakpoints: list[NodeName] = []
    personas: dict[str, ProtoName] = {}
    #: Start paused before the first node (to step from the very beginning).
    paused: bool = False


class ListDialogues(_Command):
    kind: Literal["list_dialogues"] = "list_dialogues"


class DialogueStatus(_Command):
    """A dialogue's summary, its current graph state and pending approvals."""

    kind: Literal["dialogue_status"] = "dialogue_status"
    dialogue_id: DialogueId


class DialogueGraph(_Command):
    """The Contrapunto graph: nodes, edges and its Mermaid text."""

    kind: Literal["dialogue_graph"] = "dialogue_graph"


class DebugStep(_Command):
    """Run exactly one node of a paused dialogue, then pause again."""

    kind: Literal["debug_step"] = "debug_step"
    dialogue_id: DialogueId


class DebugContinue(_Command):
    """Run a paused dialogue until it ends or meets a breakpoint, impasse or approval."""

    kind: Literal["debug_continue"] = "debug_continue"
    dialogue_id: DialogueId


class DebugPause(_Command):
    """Pause a running dialogue before its next node."""

    kind: Literal["debug_pause"] = "debug_pause"
    dialogue_id: DialogueId


class SetBreakpoints(_Command):
    """Pause before each of these nodes (replaces the dialogue's breakpoints)."""

    kind: Literal["set_breakpoints"] = "set_breakpoints"
    dialogue_id: DialogueId
    nodes: list[NodeName] = []


class DebugUpdateState(_Command):
    """Edit a paused dialogue's graph state: a fork of the current checkpoint."""

    kind: Literal["debug_update_state"] = "debug_update_state"
    dialogue_id: DialogueId
    values: JsonObject = Field(min_length=1)


class DebugHistory(_Command):
    """The steps of the dialogue's current branch, oldest first, from its checkpoints."""

    kind: Literal["debug_history"] = "debug_history"
    dialogue_id: DialogueId
    limit: int = Field(default=200, ge=1, le=2000)


class DebugRewind(_Command):
    """Time travel: make an earlier checkpoint current (``resume`` runs from it at once)."""

    kind: Literal["debug_rewind"] = "debug_rewind"
    dialogue_id: DialogueId
    checkpoint_id: str = Field(min_length=1, max_length=64)
    resume: bool = False


class CancelDialogue(_Command):
    kind: Literal["cancel_dialogue"] = "cancel_dialogue"
    dialogue_id: DialogueId


class DecideAmendment(_Command):
    """Approve or reject a proposed codex amendment; resumes its dialogue."""

    kind: Literal["decide_amendment"] = "decide_amendment"
    interrupt_id: str = Field(min_length=1, max_length=128)
    approve: bool
    note: str = Field(default="", max_length=2000)


class ListApprovals(_Command):
    """Amendments awaiting a decision (``all``: decided ones too)."""

    kind: Literal["list_approvals"] = "list_approvals"
    all: bool = False


class ListGoals(_Command):
    kind: Literal["list_goals"] = "list_goals"


class GoalAction(_Command):
    """approve (starts its dialogue), pause, resume or cancel a queued goal."""

    kind: Literal["goal_action"] = "goal_action"
    goal_id: str = Field(min_length=1, max_length=64)
    action: Literal["approve", "pause", "resume", "cancel"]


# -- episodic memory (backend/memory/) ----------------------------------------------------
class SearchMemory(_Command):
    """The ``k`` memories (document chunks and past interactions) nearest to ``text``; with
    ``proto``, only that persona's. The reply is ``memory_hits``; each hit carries its text."""

    kind: Literal["search_memory"] = "search_memory"
    text: str = Field(min_length=1, max_length=64 * 1024)
    k: int = Field(default=5, ge=1, le=100)
    proto: ProtoName | None = None


class IngestDocument(_Command):
    """Read, chunk, embed and store a document (txt md py json csv pdf) the backend can read
    at ``path`` (absolute). Re-ingesting the same content adds nothing. ``wait: false``
    replies ``queued`` at once; progress and the outcome then arrive as events."""

    kind: Literal["ingest_document"] = "ingest_document"
    path: str = Field(min_length=1, max_length=4096)
    proto: ProtoName | None = None
    wait: bool = True


class AskDocument(_Command):
    """A document dropped on a persona: the backend reads the file at ``path`` (absolute),
    remembers it in the background (as ``ingest_document`` with ``wait: false``) and asks the
    persona with its text, the middle cut to fit ``budget_chars``. The reply is
    ``ask_accepted`` as for ``ask_persona``; a file it cannot read is a ``document_rejected``
    error whose message says what to do."""

    kind: Literal["ask_document"] = "ask_document"
    proto: ProtoName
    path: str = Field(min_length=1, max_length=4096)
    max_bytes: int = Field(default=5 * 1024 * 1024, ge=1)
    budget_chars: int = Field(default=6000, ge=1, le=MAX_TEXT)


class MemoryStats(_Command):
    kind: Literal["memory_stats"] = "memory_stats"


# -- the learning loop: curator, golden data, fine-tunes, adoption (backend/learning/) ------
class LearningStatus(_Command):
    """Each persona's (or one's) model pointer, golden data, judge scores and the jobs."""

    kind: Literal["learning_status"] = "learning_status"
    proto: ProtoName | None = None


class Curate(_Command):
    """Have the judge score interactions not yet judged now (``limit`` per persona) and
    promote the best to golden examples."""

    kind: Literal["curate"] = "curate"
    proto: ProtoName | None = None
    limit: int | None = Field(default=None, ge=1, le=1000)


class JudgePair(_Command):
    """Which of two answers to ``question`` is better, by the judge role's model: asked in
    both orders, decided from the verdict token's probabilities (reply ``judge_reply``)."""

    kind: Literal["judge"] = "judge"
    question: str = Field(min_length=1, max_length=8000)
    answer_a: str = Field(max_length=8000)
    answer_b: str = Field(max_length=8000)
    #: What "better" means here (default: correct, helpful and to the point).
    criteria: list[Annotated[str, Field(min_length=1, max_length=300)]] = Field(
        default=[], max_length=10
    )
    #: The persona that judges (its model serves the judge role).
    judge: ProtoName = "ALFRED"


class ListScores(_Command):
    kind: Literal["list_scores"] = "list_scores"
    proto: ProtoName
    limit: int = Field(default=100, ge=1, le=10_000)


class ListGolden(_Command):
    kind: Literal["list_golden"] = "list_golden"
    proto: ProtoName
    include_excluded: bool = True


class PutGolden(_Command):
    """Add a golden example, or edit the one with ``id``. Give ``prompt`` and ``reply`` (the
    codex system prompt is added) or whole ChatML ``messages``."""

    kind: Literal["put_golden"] = "put_golden"
    proto: ProtoName
    id: GoldenId | None = None
    prompt: str | None = Field(default=None, min_length=1, max_length=256 * 1024)
    reply: str | None = Field(default=None, min_length=1, max_length=256 * 1024)
    messages: list[ChatTurn] | None = Field(default=None, min_length=2, max_length=64)
    note: str = Field(default="", max_length=2000)


class ExcludeGolden(_Command):
    """Leave a golden example out of fine-tunes (``excluded: false`` takes it back)."""

    kind: Literal["exclude_golden"] = "exclude_golden"
    proto: ProtoName
    id: GoldenId
    excluded: bool = True


class StartFinetune(_Command):
    """Fine-tune ``proto``'s model on its golden examples in a separate process, validate it
    blind against the current model on held-out examples, and adopt it on a significant win
    (unless ``adopt`` is false). The reply is ``learning_accepted``; ``learning_progress``
    events follow (phase, loss, ETA), then one ``learning_finished``; ``cancel`` stops it."""

    kind: Literal["start_finetune"] = "start_finetune"
    proto: ProtoName
    engine: Literal["auto", "cpu", "unsloth"] | None = None
    steps: int | None = Field(default=None, ge=1, le=100_000)
    adopt: bool = True


class AdoptModel(_Command):
    """Make a candidate model ``proto``'s model. Refused unless the candidate won its
    validation significantly, or ``force`` is set (recorded as such)."""

    kind: Literal["adopt_model"] = "adopt_model"
    proto: ProtoName
    candidate: str = Field(min_length=1, max_length=128)
    force: bool = False
    reason: str = Field(default="", max_length=2000)


class RollbackModel(_Command):
    """Go back to the model ``proto`` talked through before its last adoption."""

    kind: Literal["rollback_model"] = "rollback_model"
    proto: ProtoName
    reason: str = Field(default="", max_length=2000)


class ProposeAscension(_Command):
    """BABS proposes a new base model for ``proto``: from the installed Ollama models and
    the GGUF files added to ``learning.bases``."""

    kind: Literal["propose_ascension"] = "propose_ascension"
    proto: ProtoName


class Ascend(_Command):
    """Trial ``base`` (a GGUF path, or ``embedded``) on a clone of ``proto``: a temporary
    LoRA on the golden data, judged blind against production. On a significant win the
    production Proto swaps atomically to it and a full fine-tune follows. The codex never
    changes. The reply is ``learning_accepted``."""

    kind: Literal["ascend"] = "ascend"
    proto: ProtoName
    base: str = Field(min_length=1, max_length=4096)
    steps: int | None = Field(default=None, ge=1, le=100_000)
    follow_up: bool = True


Command = Annotated[
    Ping
    | Echo
    | Status
    | ListProtos
    | DescribeProto
    | GetState
    | SetState
    | DefineMethod
    | RemoveMethod
    | Invoke
    | CloneProto
    | RemoveProto
    | SwapProto
    | AskPersona
    | Cancel
    | ListModels
    | ModelStatus
    | SaveImage
    | Shutdown
    | SearchMemory
    | IngestDocument
    | AskDocument
    | MemoryStats
    | StartDialogue
    | ListDialogues
    | DialogueStatus
    | DialogueGraph
    | DebugStep
    | DebugContinue
    | DebugPause
    | SetBreakpoints
    | DebugUpdateState
    | DebugHistory
    | DebugRewind
    | CancelDialogue
    | DecideAmendment
    | ListApprovals
    | ListGoals
    | GoalAction
    | ForgeTool
    | ListTools
    | RemoveTool
    | RunTool
    | LearningStatus
    | Curate
    | JudgePair
    | ListScores
    | ListGolden
    | PutGolden
    | ExcludeGolden
    | StartFinetune
    | AdoptModel
    | RollbackModel
    | ProposeAscension
    | Ascend,
    Field(discriminator="kind"),
]
COMMAND_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)
COMMAND_KINDS: frozenset[str] = frozenset(
    m.model_fields["kind"].default for m in _Command.__subclasses__()
)
