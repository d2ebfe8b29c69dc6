"""The dialogue service and Live Debugger.

Each dialogue is a LangGraph thread in the SQLite checkpointer. A worker thread per running
dialogue (``runner.py``) drives it one node at a time (``interrupt_before="*"``), so between
any two nodes it can pause: for a breakpoint, a single step, the user, an impasse (dissonance
for ``impasse_rounds`` rounds: the UI opens the debugger), or an amendment awaiting approval.
Commands only flip flags or start a worker and return at once; results arrive as events.

Debugging works from the checkpoints: the steps of the current branch with each node's input,
exact prompt, output and timings; edits fork the current checkpoint (``update_state``); time
travel makes any earlier checkpoint the head, and the next run forks from it. After a restart
or a ``kill -9``, dialogues that were running resume from their last checkpoint.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backend.bus import EventBus
from backend.config import Config
from backend.dialogue.cast import ROLES, Personas, ResearchSource
from backend.dialogue.checkpoint_reads import read_checkpoints
from backend.dialogue.runner import (
    DialogueWorker,
    checkpoint_of,
    node_of,
    step_info,
    thread_config,
)
from backend.dialogue.store import DialogueStore
from backend.runtime import Runtime
from backend.urls import redact
from shared_api.dialogue import (
    DIALOGUE_NODES,
    ApprovalInfo,
    DialogueSummary,
    GraphEdge,
    StepInfo,
)
from shared_api.errors import CheckpointTamperedError, InvalidValueError, UnavailableError
from shared_api.events import AmendmentDecided, DialoguePaused
from shared_api.types import JsonObject

log = logging.getLogger(__name__)

JOIN_S = 10.0


class StateEdit(BaseModel):
    """The graph-state fields the debugger may edit, with their types."""

    model_config = ConfigDict(extra="forbid")

    goal: str | None = Field(default=None, min_length=1, max_length=4000)
    max_rounds: int | None = Field(default=None, ge=1, le=100)
    impasse_rounds: int | None = Field(default=None, ge=1, le=100)
    dissonance_threshold: float | None = Field(default=None, ge=0, le=1)
    convergence_threshold: float | None = Field(default=None, ge=0, le=1)
    round: int | None = Field(default=None, ge=0)
    brick_view: str | None = None
    robin_view: str | None = None
    research: str | None = None
    research_question: str | None = None
    dissonance_streak: int | None = Field(default=None, ge=0)
    turns: list[dict[str, Any]] | None = None


class DialogueService:
    def __init__(
        self,
        runtime: Runtime,
        config: Config,
        bus: EventBus,
        root: Path,
        research: ResearchSource | None = None,
    ) -> None:
        from backend.dialogue.motivator import Motivator

        self.runtime = runtime
        self.bus = bus
        self.config = config.dialogue
        self.dir = root / "dialogue"
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.store = DialogueStore(self.dir / "dialogues.sqlite")
        self.personas = Personas(runtime, self.config, research)
        self.motivator = Motivator(self, config.motivator)
        self.worker = DialogueWorker(
            runtime,
            bus,
            self.config,
            self.store,
            self.personas,
            self.dir,
            self.motivator.dialogue_ended,
        )

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Resume the dialogues a stop or crash interrupted; start the motivator."""
        for summary in self.store.dialogues(("running",)):
            log.info("resuming dialogue %s from its last checkpoint", summary.dialogue_id)
            self.worker.launch(summary.dialogue_id, "continue")
        for summary in self.store.dialogues(("awaiting_approval",)):
            known = self.store.approvals(dialogue_id=summary.dialogue_id, pending_only=False)
            if any(self.store.decision(a.interrupt_id) for a in known):
                self.resume_decided(summary.dialogue_id)  # decided just before a crash
        self.motivator.start()

    def close(self) -> None:
        """Stop the workers after their current node; running dialogues stay ``running``, so
        the next start resumes them."""
        self.worker.stopping.set()
        self.motivator.close()
        self.worker.close(JOIN_S)
        self.store.close()

    # -- commands -----------------------------------------------------------------------------
    def start_dialogue(
        self,
        goal: str,
        *,
        max_rounds: int | None = None,
        breakpoints: list[str] | tuple[str, ...] = (),
        personas: dict[str, str] | None = None,
        paused: bool = False,
    ) -> DialogueSummary:
        cast = self._cast(personas or {})
        points = self._check_nodes(breakpoints)
        now = time.time()
        dialogue_id = f"d-{uuid.uuid4().hex[:12]}"
        summary = DialogueSummary(
            dialogue_id=dialogue_id,
            goal=goal,
            status="paused" if paused else "running",
            reason="user" if paused else "",
            next=["brick"],
            max_rounds=max_rounds or self.config.max_rounds,
            personas=cast,
            breakpoints=points,
            created=now,
            updated=now,
        )
        self.store.add_dialogue(summary)
        self.worker.publish_changed(summary)
        if paused:  # paused at once: its first step or continue starts it
            sides = [cast.get("logic", ""), cast.get("empathy", "")]
            self.bus.publish(
                DialoguePaused(dialogue_id=dialogue_id, reason="user", node="brick", personas=sides)
            )
        else:
            self.worker.launch(dialogue_id, "continue", start=True)
        return summary

    def list_dialogues(self) -> list[DialogueSummary]:
        return self.store.dialogues()

    def status(self, dialogue_id: str) -> tuple[DialogueSummary, JsonObject, list[ApprovalInfo]]:
        summary = self.store.dialogue(dialogue_id)
        with self.worker.reading(dialogue_id):
            snapshot = self.worker.engine().graph.get_state(self.worker.head_cfg(summary))
        values: JsonObject = dict(snapshot.values or {})
        return summary, values, self.store.approvals(dialogue_id=dialogue_id)

    def graph_info(self) -> tuple[list[str], list[GraphEdge], str]:
        drawable = self.worker.engine().graph.get_graph()
        nodes = [n for n in drawable.nodes if n not in ("__start__", "__end__")]
        edges = [
            GraphEdge(source=e.source, target=e.target, conditional=e.conditional)
            for e in drawable.edges
        ]
        return nodes, edges, drawable.draw_mermaid()

    def step(self, dialogue_id: str) -> DialogueSummary:
        self._runnable(dialogue_id)
        summary = self.worker.update(dialogue_id, status="running", reason="step")
        self.worker.launch(dialogue_id, "step")
        return summary

    def continue_(self, dialogue_id: str) -> DialogueSummary:
        runner = self.worker.runner(dialogue_id)
        if runner.busy:
            runner.pause.clear()
            return self.store.dialogue(dialogue_id)
        self._runnable(dialogue_id)
        summary = self.worker.update(dialogue_id, status="running", reason="")
        self.worker.launch(dialogue_id, "continue")
        return summary

    def pause(self, dialogue_id: str) -> DialogueSummary:
        summary = self.store.dialogue(dialogue_id)
        runner = self.worker.runner(dialogue_id)
        if runner.busy:
            runner.pause.set()  # the worker pauses before its next node
            return summary
        if summary.status == "running":
            return self.worker.update(dialogue_id, status="paused", reason="user")
        return summary

    def cancel(self, dialogue_id: str) -> DialogueSummary:
        summary = self.store.dialogue(dialogue_id)
        runner = self.worker.runner(dialogue_id)
        if runner.busy:
            runner.cancel.set()
            return summary
        self.worker.abandon_approvals(dialogue_id, "the dialogue was cancelled")
        self.motivator.dialogue_ended(dialogue_id, "cancelled")
        return self.worker.update(dialogue_id, status="cancelled", reason="user")

    def set_breakpoints(self, dialogue_id: str, nodes: list[str]) -> DialogueSummary:
        self.store.dialogue(dialogue_id)
        return self.worker.update(dialogue_id, breakpoints=self._check_nodes(nodes))

    def update_state(
        self, dialogue_id: str, values: dict[str, Any]
    ) -> tuple[DialogueSummary, str, JsonObject]:
        """Fork the current checkpoint with edited values; the dialogue stays paused."""
        summary = self._editable(dialogue_id)
        try:
            edits = StateEdit.model_validate(values).model_dump(exclude_unset=True)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
            )
            raise InvalidValueError(
                f"Cannot edit the dialogue state: {problems}. Editable: "
                f"{', '.join(StateEdit.model_fields)}.",
            ) from None
        engine = self.worker.engine()
        cfg = self.worker.head_cfg(summary)
        with self.worker.reading(dialogue_id):
            before = engine.graph.get_state(cfg).values or {}
        seq = int(before.get("seq", 0)) + 1
        record = {
            "id": uuid.uuid4().hex,
            "seq": seq,
            "node": "edit",
            "persona": "user",
            "task": "edit",
            "round": before.get("round", 0),
            "input": {k: before.get(k) for k in edits},
            "output": ", ".join(f"{k} edited" for k in edits),
            "edits": edits,
            "started_at": round(time.time(), 3),
            "duration_ms": 0.0,
        }
        forked = engine.graph.update_state(cfg, {**edits, "seq": seq, "last": record})
        snapshot = engine.graph.get_state(thread_config(dialogue_id))
        status = "paused" if snapshot.next else summary.status
        summary = self.worker.update(
            dialogue_id, head="", status=status, reason="edited", **self.worker.fields(snapshot)
        )
        self.worker.publish_step(dialogue_id)
        return summary, checkpoint_of(forked), dict(snapshot.values)

    def history(
        self, dialogue_id: str, limit: int = 200
    ) -> tuple[DialogueSummary, list[StepInfo], bool]:
        """The current branch's steps, oldest first (the head's ancestors)."""
        with self.worker.reading(dialogue_id):
            return self._history(dialogue_id, limit)

    def _history(
        self, dialogue_id: str, limit: int
    ) -> tuple[DialogueSummary, list[StepInfo], bool]:
        summary = self.store.dialogue(dialogue_id)
        engine = self.worker.engine()
        ids, truncated = engine.store.branch(dialogue_id, summary.head, limit + 1)
        chain = read_checkpoints(engine.store, dialogue_id, ids)  # (pruned ones left out)
        shown = chain[1:] if len(chain) > limit else chain  # the first is only its parent
        truncated = truncated or len(chain) > limit
        head_next = list(engine.graph.get_state(self.worker.head_cfg(summary)).next)
        steps = []
        for i, tup in enumerate(shown):
            k = i + len(chain) - len(shown)
            parent = chain[k - 1] if k else None
            following = chain[k + 1] if k + 1 < len(chain) else None
            nxt = node_of(following, tup) if following else head_next
            steps.append(step_info(tup, parent, nxt))
        return summary, steps, truncated

    def rewind(self, dialogue_id: str, checkpoint_id: str, resume: bool = False) -> DialogueSummary:
        """Time travel: make ``checkpoint_id`` the head; the next run forks from it."""
        summary = self._undamaged(dialogue_id)
        if self.worker.runner(dialogue_id).busy:
            raise UnavailableError(
                f"Dialogue {dialogue_id} is running; pause it (debug_pause) before rewinding."
            )
        engine = self.worker.engine()
        with self.worker.reading(dialogue_id):
            found = engine.saver.get_tuple(thread_config(dialogue_id, checkpoint_id))
        if found is None:
            raise InvalidValueError(
                f"Dialogue {dialogue_id} has no checkpoint {checkpoint_id!r} (pruned, or from "
                "another dialogue); `debug_history` lists its steps.",
                checkpoint_id=checkpoint_id,
            )
        self.worker.abandon_approvals(dialogue_id, "abandoned by time travel")
        snapshot = engine.graph.get_state(thread_config(dialogue_id, checkpoint_id))
        summary = self.worker.update(
            dialogue_id,
            head=checkpoint_id,
            status="paused",
            reason="rewound",
            **self.worker.fields(snapshot),
        )
        self.bus.publish(
            DialoguePaused(
                dialogue_id=dialogue_id,
                reason="rewound",
                node=summary.next[0] if summary.next else "",
                detail={"checkpoint_id": checkpoint_id},
            )
        )
        if resume:
            summary = self.continue_(dialogue_id)
        return summary

    def decide(self, interrupt_id: str, approve: bool, note: str = "") -> ApprovalInfo:
        """Apply the user's decision on an amendment (``approvals.py``) and resume the
        dialogue that waits for it."""
        approval = self.store.approval(interrupt_id)
        if approval.status != "pending":
            raise InvalidValueError(
                f"The amendment {interrupt_id} was already {approval.status}.",
                interrupt_id=interrupt_id,
            )
        version = None
        if approve:
            proto = self.runtime.commit(
                {
                    "op": "amend_codex",
                    "proto": approval.proto,
                    "field": approval.field,
                    "value": approval.new,
                    "interrupt_id": interrupt_id,
                }
            )
            version = proto.version
            self.runtime.save_image()  # the amended codex is in the newest generation
        verdict = "approved" if approve else "rejected"
        decided = self.store.decide(interrupt_id, verdict, note, version)
        self.bus.publish(AmendmentDecided(approval=decided))
        self.resume_decided(approval.dialogue_id)
        return decided

    def approvals(self, *, pending_only: bool = True) -> list[ApprovalInfo]:
        return self.store.approvals(pending_only=pending_only)

    def resume_decided(self, dialogue_id: str) -> None:
        """Resume a dialogue whose pending amendment has been decided."""
        if not self.worker.runner(dialogue_id).busy:
            self.worker.launch(dialogue_id, "continue")

    # -- helpers ------------------------------------------------------------------------------
    def _runnable(self, dialogue_id: str) -> DialogueSummary:
        summary = self._undamaged(dialogue_id)
        if self.worker.runner(dialogue_id).busy:
            raise UnavailableError(
                f"Dialogue {dialogue_id} is running; pause it (debug_pause) first."
            )
        if summary.status == "awaiting_approval":
            raise UnavailableError(
                f"Dialogue {dialogue_id} waits for an amendment decision; approve or reject "
                "it (decide_amendment, or the approval view)."
            )
        if summary.status == "finished" and not summary.head and not summary.next:
            raise InvalidValueError(
                f"Dialogue {dialogue_id} has finished; rewind it to an earlier step "
                "(debug_rewind) to run from there again."
            )
        return summary

    def _editable(self, dialogue_id: str) -> DialogueSummary:
        summary = self._undamaged(dialogue_id)
        if self.worker.runner(dialogue_id).busy:
            raise UnavailableError(
                f"Dialogue {dialogue_id} is running; pause it (debug_pause) before editing."
            )
        if summary.status == "awaiting_approval":
            raise UnavailableError(
                f"Dialogue {dialogue_id} waits for an amendment decision; decide it first."
            )
        return summary

    def _undamaged(self, dialogue_id: str) -> DialogueSummary:
        summary = self.store.dialogue(dialogue_id)
        if summary.status == "damaged":
            raise CheckpointTamperedError(
                f"Dialogue {dialogue_id} is damaged: one of its checkpoints was refused as "
                "tampered. Start a new dialogue; restore the checkpoint store from a backup "
                "to recover this one.",
                dialogue_id=dialogue_id,
            )
        return summary

    def _cast(self, personas: dict[str, str]) -> dict[str, str]:
        unknown = set(personas) - set(ROLES)
        if unknown:
            raise InvalidValueError(
                f"Unknown dialogue roles {sorted(unknown)}; roles: {', '.join(ROLES)}."
            )
        cast = {role: personas.get(role) or getattr(self.config, role) for role in ROLES}
        for name in cast.values():
            self.runtime.manager.get(name)  # NotFoundError names the known Protos
        return cast

    @staticmethod
    def _check_nodes(nodes: list[str] | tuple[str, ...]) -> list[str]:
        unknown = sorted(set(nodes) - set(DIALOGUE_NODES))
        if unknown:
            raise InvalidValueError(
                f"Unknown graph nodes {unknown}; nodes: {', '.join(DIALOGUE_NODES)}."
            )
        return sorted(set(nodes), key=DIALOGUE_NODES.index)

    @property
    def checkpoints_where(self) -> str:
        spec = self.config.checkpoints
        local = spec in ("", "sqlite")
        return f"sqlite:{self.dir / 'checkpoints.sqlite'}" if local else redact(spec)

    def stats(self) -> dict[str, Any]:
        with self.worker.lock:
            running = sum(1 for r in self.worker.runners.values() if r.busy)
        return {"running": running, "engine_loaded": self.worker.open_engine is not None}
