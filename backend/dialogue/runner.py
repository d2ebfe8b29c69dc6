"""The dialogue runner: one thread per running dialogue drives its graph node by node.

Between any two nodes it may stop: for a breakpoint, a single step, the user, an impasse
(dissonance for ``impasse_rounds`` rounds: the UI opens the debugger), an amendment awaiting
approval, cancellation or shutdown. It announces each step and how it stopped as events.
``DialogueService`` (``service.py``) holds one and adds the commands.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.bus import EventBus
from backend.config import DialogueConfig
from backend.dialogue import approvals
from backend.dialogue.cast import Personas
from backend.dialogue.store import DialogueStore
from backend.runtime import Runtime
from shared_api.dialogue import DialogueSummary, PauseReason, StepInfo
from shared_api.errors import CheckpointTamperedError, EntropicError, UnavailableError
from shared_api.events import (
    AmendmentProposed,
    CognitiveDissonance,
    DialogueChanged,
    DialogueFinished,
    DialoguePaused,
    DialogueStepEvent,
)
from shared_api.types import JsonObject

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig


log = logging.getLogger(__name__)

#: How a run stopped, announced once the runner is no longer busy.
Outcome = Callable[[], None]


def _quietly() -> None:
    """The outcome of a run stopped by shutdown: nothing to announce."""


class Engine:
    """The LangGraph side, built on first use (importing LangGraph takes seconds)."""

    def __init__(self, spec: str, directory: Path, key: bytes, personas: Personas) -> None:
        from backend.dialogue import checkpoints, graph

        self.graph_module = graph
        self.store = checkpoints.open_store(spec, directory, key)
        self.saver = self.store.saver
        self.graph = graph.compile_graph(personas, self.saver)

    def close(self) -> None:
        self.store.close()


class Runner:
    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        #: True from launch until the worker has stopped driving the graph.
        self.running = False
        #: Held while a worker announces how it stopped, so no launch slips in between.
        self.lock = threading.RLock()
        self.pause = threading.Event()
        self.cancel = threading.Event()
        self.steps = 0

    @property
    def busy(self) -> bool:
        return self.running


def thread_config(dialogue_id: str, checkpoint_id: str = "") -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": dialogue_id, "checkpoint_ns": ""}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def checkpoint_of(config: Any) -> str:
    return str((config or {}).get("configurable", {}).get("checkpoint_id", ""))


class DialogueWorker:
    """Drives, stops and announces dialogues, one thread per running dialogue. The
    ``DialogueService`` holds one and adds the commands; this gets what it uses from it."""

    def __init__(
        self,
        runtime: Runtime,
        bus: EventBus,
        config: DialogueConfig,
        store: DialogueStore,
        personas: Personas,
        directory: Path,
        dialogue_ended: Callable[[str, str], None],
    ) -> None:
        self.runtime = runtime
        self.bus = bus
        self.config = config
        self.store = store
        self.personas = personas
        self.dir = directory
        #: Told when a dialogue ends (the motivator: a goal's dialogue is done).
        self.dialogue_ended = dialogue_ended
        #: The graph and its checkpoints, opened on first use.
        self.open_engine: Engine | None = None
        self._engine_lock = threading.Lock()
        self.runners: dict[str, Runner] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def close(self, join_s: float) -> None:
        """Wait (a while) for the running dialogues to stop after their current node
        (``stopping`` is set), then close the engine unless one is still running."""
        self.stopping.set()
        deadline = time.monotonic() + 3 * join_s
        with self.lock:
            runners = list(self.runners.values())
        for runner in runners:
            if runner.thread is not None:
                runner.thread.join(max(0.1, min(join_s, deadline - time.monotonic())))
        if self.open_engine is not None and not any(r.busy for r in runners):
            self.open_engine.close()

    def engine(self) -> Engine:
        with self._engine_lock:
            if self.open_engine is None:
                started = time.perf_counter()
                self.open_engine = Engine(
                    self.config.checkpoints, self.dir, self.runtime.home.image_key(), self.personas
                )
                log.info("dialogue engine ready in %.2fs", time.perf_counter() - started)
            return self.open_engine

    # -- the worker ---------------------------------------------------------------------------
    def launch(self, dialogue_id: str, mode: str, *, start: bool = False) -> None:
        runner = self.runner(dialogue_id)
        with runner.lock:
            if runner.busy:
                raise UnavailableError(f"Dialogue {dialogue_id} is already running.")
            runner.cancel.clear()
            runner.running = True
            runner.thread = threading.Thread(
                target=self._drive,
                args=(dialogue_id, runner, mode, start),
                name=f"dialogue-{dialogue_id}",
                daemon=True,
            )
            runner.thread.start()

    def _drive(self, dialogue_id: str, runner: Runner, mode: str, start: bool) -> None:
        try:
            outcome = self._run(dialogue_id, runner, mode, start)
        except Exception as exc:
            with runner.lock:
                runner.running = False
                if self.stopping.is_set():
                    log.info("dialogue %s stopped mid-node by shutdown: %s", dialogue_id, exc)
                    return
                log.exception("dialogue %s failed", dialogue_id)
                self._failed(dialogue_id, exc)
            return
        # Not busy before the outcome is announced: whoever hears "paused" may act at once.
        with runner.lock:
            runner.running = False
            outcome()

    def _run(self, dialogue_id: str, runner: Runner, mode: str, start: bool) -> Outcome:
        """Drive the graph node by node; returns how it stopped, to announce."""
        from langgraph.types import Command

        engine = self.engine()
        graph = engine.graph
        first_node = start and mode != "step"  # a paused start's first step ignores breakpoints
        if start or not graph.get_state(thread_config(dialogue_id)).values:
            summary = self.store.dialogue(dialogue_id)
            initial = engine.graph_module.initial_state(
                dialogue_id, summary.goal, summary.personas, self.config, summary.max_rounds
            )
            graph.invoke(
                initial, thread_config(dialogue_id), interrupt_before="*", durability="sync"
            )
        ran = 0
        while True:
            summary = self.store.dialogue(dialogue_id)
            cfg = self.head_cfg(summary)
            snapshot = graph.get_state(cfg)
            if snapshot.interrupts:
                decisions = {i.id: self.store.decision(i.id) for i in snapshot.interrupts}
                if any(d is None for d in decisions.values()):
                    return partial(self._await_approval, dialogue_id, snapshot)
                self.update(dialogue_id, status="running", reason="", head="")
                graph.invoke(
                    Command(resume=decisions), cfg, interrupt_before="*", durability="sync"
                )
                for interrupt_id in decisions:
                    self.store.mark_resumed(interrupt_id)
            else:
                gate = ran > 0 or first_node
                stop = self._why_stop(dialogue_id, runner, snapshot, summary, mode, ran, gate)
                if stop is not None:
                    return stop
                node = snapshot.next[0]
                if summary.status != "running" or summary.next != [node]:
                    self.update(dialogue_id, status="running", reason="", next=[node])
                graph.invoke(None, cfg, interrupt_before="*", durability="sync")
                if summary.head:
                    self.update(dialogue_id, head="")
            ran += 1
            self._stepped(dialogue_id, runner)

    def _why_stop(
        self,
        dialogue_id: str,
        runner: Runner,
        snapshot: Any,
        summary: DialogueSummary,
        mode: str,
        ran: int,
        gate: bool,
    ) -> Outcome | None:
        """Whether to stop before the next node, and how it is announced (None: go on).
        ``gate``: breakpoints and the impasse pause it (not the first node of a start)."""
        if not snapshot.next:
            return partial(self._finished, dialogue_id, snapshot)
        if self.stopping.is_set():
            return _quietly  # stays "running": the next start resumes it
        if runner.cancel.is_set():
            return partial(self._cancelled, dialogue_id)
        if runner.pause.is_set():
            runner.pause.clear()
            return partial(self._paused, dialogue_id, snapshot, "user")
        node = snapshot.next[0]
        if gate and node == "impasse":
            return partial(self._paused, dialogue_id, snapshot, "dissonance")
        if gate and node in summary.breakpoints:
            return partial(self._paused, dialogue_id, snapshot, "breakpoint")
        if mode == "step" and ran >= 1:
            return partial(self._paused, dialogue_id, snapshot, "step")
        return None

    def _stepped(self, dialogue_id: str, runner: Runner) -> None:
        engine = self.engine()
        snapshot = engine.graph.get_state(thread_config(dialogue_id))
        self.update(dialogue_id, **self.fields(snapshot))
        values = snapshot.values or {}
        last = values.get("last") or {}
        self.publish_step(dialogue_id)
        if last.get("node") == "alfred":
            self._publish_dissonance(dialogue_id, values)
        runner.steps += 1
        if runner.steps % self.config.prune_every == 0:
            summary = self.store.dialogue(dialogue_id)
            engine.store.prune_thread(
                dialogue_id, self.config.keep_checkpoints, protect=[summary.head]
            )

    # -- outcomes -----------------------------------------------------------------------------
    def _paused(
        self, dialogue_id: str, snapshot: Any, reason: PauseReason, detail: JsonObject | None = None
    ) -> None:
        values = snapshot.values or {}
        cast = values.get("personas") or {}
        node = snapshot.next[0] if snapshot.next else ""
        info: JsonObject = dict(detail or {})
        if reason == "dissonance":
            info |= {
                "dissonance": values.get("dissonance", 0.0),
                "streak": values.get("dissonance_streak", 0),
                "views": [values.get("brick_view", ""), values.get("robin_view", "")],
                "reason": (values.get("judgement") or {}).get("reason", ""),
            }
        self.update(dialogue_id, status="paused", reason=reason, **self.fields(snapshot))
        self.bus.publish(
            DialoguePaused(
                dialogue_id=dialogue_id,
                reason=reason,
                node=node,
                personas=[cast.get("logic", ""), cast.get("empathy", "")],
                detail=info,
            )
        )

    def _await_approval(self, dialogue_id: str, snapshot: Any) -> None:
        for pending in snapshot.interrupts:
            approval = approvals.from_interrupt(pending.id, dialogue_id, pending.value)
            if approval is not None and self.store.add_approval(approval):
                self.bus.publish(AmendmentProposed(approval=approval))
        self.update(
            dialogue_id, status="awaiting_approval", reason="approval", **self.fields(snapshot)
        )
        self.bus.publish(
            DialoguePaused(
                dialogue_id=dialogue_id,
                reason="approval",
                node="amend",
                detail={"interrupt_ids": [i.id for i in snapshot.interrupts]},
            )
        )

    def _finished(self, dialogue_id: str, snapshot: Any) -> None:
        values = snapshot.values or {}
        status = str(values.get("status") or "finished")
        summary = self.update(
            dialogue_id,
            status="finished",
            reason=status,
            outcome=str(values.get("outcome", "")),
            **self.fields(snapshot),
        )
        self._retire_old()
        self.bus.publish(
            DialogueFinished(dialogue_id=dialogue_id, status=status, outcome=summary.outcome)
        )
        self.dialogue_ended(dialogue_id, "done")

    def _cancelled(self, dialogue_id: str) -> None:
        self.abandon_approvals(dialogue_id, "the dialogue was cancelled")
        self.update(dialogue_id, status="cancelled", reason="user")
        self.bus.publish(DialogueFinished(dialogue_id=dialogue_id, status="cancelled"))
        self.dialogue_ended(dialogue_id, "cancelled")

    def _failed(self, dialogue_id: str, exc: Exception) -> None:
        if isinstance(exc, CheckpointTamperedError):
            self._damaged(dialogue_id, exc)
            return
        message = exc.message if isinstance(exc, EntropicError) else f"{type(exc).__name__}: {exc}"
        detail: JsonObject = {
            "error": f"{message} Fix the cause (a method in the Inspector, the model) and "
            "continue: the node runs again."
        }
        self._halted(dialogue_id, "error", "error", detail)

    def _damaged(self, dialogue_id: str, exc: CheckpointTamperedError) -> None:
        """A checkpoint of this dialogue was refused: it never runs again (until deleted)."""
        log.error("dialogue %s is damaged: %s", dialogue_id, exc.message)
        detail: JsonObject = {"error": exc.message, "code": str(exc.code)}
        self._halted(dialogue_id, "damaged", "tampered", detail)

    def _halted(self, dialogue_id: str, status: str, reason: str, detail: JsonObject) -> None:
        """Record that an error stopped the dialogue, and announce it as paused by an error."""
        try:
            summary = self.update(dialogue_id, status=status, reason=reason)
        except Exception:
            log.exception("could not record that dialogue %s is %s", dialogue_id, status)
            return
        self.bus.publish(
            DialoguePaused(
                dialogue_id=dialogue_id,
                reason="error",
                node=summary.next[0] if summary.next else "",
                detail=detail,
            )
        )

    def _retire_old(self) -> None:
        """Keep the newest ``keep_dialogues`` finished dialogues; delete older ones."""
        ended = self.store.dialogues(("finished", "cancelled"))
        doomed = [d.dialogue_id for d in ended[: max(0, len(ended) - self.config.keep_dialogues)]]
        if doomed:
            engine = self.engine()
            engine.store.delete_threads(doomed)
            self.store.delete_dialogues(doomed)

    def abandon_approvals(self, dialogue_id: str, note: str) -> None:
        for approval in self.store.approvals(dialogue_id=dialogue_id):
            self.store.decide(approval.interrupt_id, "rejected", note, None)
            self.store.mark_resumed(approval.interrupt_id)

    # -- helpers ------------------------------------------------------------------------------
    @contextmanager
    def reading(self, dialogue_id: str) -> Iterator[None]:
        """Read a dialogue's checkpoints; one that is refused marks the dialogue damaged."""
        try:
            yield
        except CheckpointTamperedError as exc:
            self._damaged(dialogue_id, exc)
            raise

    def runner(self, dialogue_id: str) -> Runner:
        with self.lock:
            return self.runners.setdefault(dialogue_id, Runner())

    def head_cfg(self, summary: DialogueSummary) -> RunnableConfig:
        return thread_config(summary.dialogue_id, summary.head)

    @staticmethod
    def fields(snapshot: Any) -> dict[str, Any]:
        values = snapshot.values or {}
        return {
            "next": list(snapshot.next),
            "round": int(values.get("round", 0)),
            "max_rounds": int(values.get("max_rounds", 0)),
            "dissonance": float(values.get("dissonance", 0.0)),
            "convergence": float(values.get("convergence", 0.0)),
        }

    def update(self, dialogue_id: str, **fields: Any) -> DialogueSummary:
        summary = self.store.update_dialogue(dialogue_id, **fields)
        self.publish_changed(summary)
        return summary

    def publish_changed(self, summary: DialogueSummary) -> None:
        self.bus.publish(DialogueChanged(dialogue=summary))

    def publish_step(self, dialogue_id: str) -> None:
        saver = self.engine().saver
        tup = saver.get_tuple(thread_config(dialogue_id))
        if tup is None:
            return
        parent = saver.get_tuple(tup.parent_config) if tup.parent_config else None
        summary = self.store.dialogue(dialogue_id)
        self.bus.publish(
            DialogueStepEvent(dialogue_id=dialogue_id, step=step_info(tup, parent, summary.next))
        )

    def _publish_dissonance(self, dialogue_id: str, values: dict[str, Any]) -> None:
        cast = values.get("personas") or {}
        logic, empathy = cast.get("logic", "BRICK"), cast.get("empathy", "ROBIN")
        judgement = values.get("judgement") or {}
        self.bus.publish(
            CognitiveDissonance(
                proto=logic,
                protos=[logic, empathy],
                source="dialogue",
                score=float(values.get("dissonance", 0.0)),
                views=[
                    f"{logic}: {values.get('brick_view', '')}",
                    f"{empathy}: {values.get('robin_view', '')}",
                ],
                detail={
                    "dialogue_id": dialogue_id,
                    "goal": values.get("goal", ""),
                    "round": values.get("round", 0),
                    "verdict": judgement.get("verdict", ""),
                    "convergence": values.get("convergence", 0.0),
                    "criteria": judgement.get("criteria", {}),
                    "reason": judgement.get("reason", ""),
                    "streak": values.get("dissonance_streak", 0),
                    "impasse": values.get("dissonance_streak", 0)
                    >= values.get("impasse_rounds", self.config.impasse_rounds),
                },
            )
        )


def node_of(tup: Any, parent: Any) -> list[str]:
    """The node that made checkpoint ``tup`` from ``parent`` (as the next of ``parent``)."""
    node = step_info(tup, parent, []).node
    if node == "start":
        return ["__start__"]
    return [node] if node not in ("input", "edit", "fork") else []


def step_info(tup: Any, parent: Any, next_nodes: list[str]) -> StepInfo:
    values = tup.checkpoint.get("channel_values", {})
    last = values.get("last") or {}
    parent_values = parent.checkpoint.get("channel_values", {}) if parent is not None else {}
    parent_last = (parent_values.get("last") or {}).get("id")
    owns = bool(last) and last.get("id") != parent_last
    metadata = tup.metadata or {}
    source = str(metadata.get("source", ""))
    if owns:
        node = str(last.get("node", "?"))
    else:
        node = {"input": "input", "loop": "start", "update": "edit"}.get(source, source or "?")
    return StepInfo(
        index=int(values.get("seq", 0) or 0),
        checkpoint_id=checkpoint_of(tup.config),
        before=checkpoint_of(tup.parent_config),
        node=node,
        source=source,
        next=list(next_nodes),
        round=int(values.get("round", 0) or 0),
        dissonance=float(values.get("dissonance", 0.0) or 0.0),
        created_at=str(tup.checkpoint.get("ts", "")),
        record=last if owns else {},
    )
