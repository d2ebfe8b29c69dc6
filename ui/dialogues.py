"""Dialogues in the workbench: the wiring between the backend's dialogue commands and events
and the DebuggerMorph, ApprovalMorph and GoalsMorph.

The app owns one ``DialogueController``. It fills the ``DialogueStore`` from replies and
events, opens the debugger on an impasse, the approval view on a proposed amendment, and
turns the morphs' intents into commands. Only the UI thread runs any of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kivy.animation import Animation
from kivy.clock import Clock

from morphs.approvals import ApprovalMorph
from morphs.debugger import DebuggerMorph, ask_goal
from morphs.goals import GoalsMorph
from shared_api.commands import (
    Command,
    DebugHistory,
    DialogueGraph,
    DialogueStatus,
    ListApprovals,
    ListDialogues,
    ListGoals,
    StartDialogue,
)
from shared_api.dialogue import ApprovalInfo, DialogueSummary, StepInfo
from shared_api.errors import ErrorReply
from shared_api.replies import (
    AmendmentDecision,
    ApprovalListReply,
    DebugAck,
    DebugHistoryReply,
    DebugStateUpdated,
    DialogueAccepted,
    DialogueGraphReply,
    DialogueListReply,
    DialogueStatusReply,
    GoalListReply,
    GoalReply,
    Reply,
)
from ui.dialogue_store import ACTIVE, DialogueStore

if TYPE_CHECKING:
    from morphs.world import World
    from ui.store import WorkbenchStore

#: Sends a command to the backend; the reply goes to the callback, on the Kivy thread.
Send = Callable[[Command, Any], None]

REFRESH_S = 0.25  # a debugger refreshes at most this often while its dialogue runs
DEBUGGER_POS = (140, 60)
SAID_CHARS = 400
HISTORY_SHOWN = 100  # steps a debugger lists (the newest)
CALM_S = 4.0  # seconds a persona's dissonance tint takes to fade once its dialogue ends


class DialogueController:
    """The dialogues' views (debuggers, approvals, goals) and what they ask the backend. It
    gets what it uses, not the app: the send function, the workbench's store, the world and
    a way to open a persona's Inspector."""

    def __init__(
        self,
        send: Send,
        workbench: WorkbenchStore,
        world: World,
        open_inspector: Callable[[str, tuple[float, float]], Any],
    ) -> None:
        self._send = send
        self.workbench = workbench
        self.world = world
        self.open_inspector = open_inspector
        self.store = DialogueStore()
        workbench.dialogues = self.store
        self.store.bind(
            on_paused=self._on_paused,
            on_proposed=lambda _s, approval: self.open_approval(approval),
            on_step=self._on_step,
            on_dialogue=self._on_dialogue,
            goals=lambda *_: self._show_goals(),
        )
        self.graph: DialogueGraphReply | None = None
        self._triggers: dict[str, Any] = {}

    # -- plumbing -----------------------------------------------------------------------------
    def send(self, command: Command, on_reply: Any) -> None:
        self._send(command, on_reply)

    def _toast_error(self, reply: Reply) -> bool:
        if isinstance(reply, ErrorReply):
            self.workbench.toast(reply.message)
            return True
        return False

    def refresh(self) -> None:
        """Everything the backend knows (on each connect, e.g. after a backend restart)."""

        def dialogues(reply: Reply) -> None:
            if isinstance(reply, DialogueListReply):
                self.store.set_dialogues(reply.dialogues)
                for morph in self.debuggers():
                    self.refresh_debugger(morph.dialogue_id)

        def approvals(reply: Reply) -> None:
            if isinstance(reply, ApprovalListReply):
                self.store.set_approvals(reply.approvals)
                for approval in reply.approvals:
                    self.open_approval(approval)

        def goals(reply: Reply) -> None:
            if isinstance(reply, GoalListReply):
                self.store.set_goals(reply.goals)

        self.send(ListDialogues(), dialogues)
        self.send(ListApprovals(), approvals)
        self.send(ListGoals(), goals)

    # -- the world menu -----------------------------------------------------------------------
    def menu_items(self, touch: Any) -> list[tuple[str, Any]]:
        items: list[tuple[str, Any]] = [
            ("Start a dialogue...", lambda: ask_goal(self.start)),
            ("Goals", lambda: self.open_goals((touch.x, touch.y))),
        ]
        recent = sorted(self.store.dialogues.values(), key=lambda d: -d.updated)[:3]
        items += [
            (f"Debug: {d.goal}", lambda i=d.dialogue_id: self.open_debugger(i)) for d in recent
        ]
        pending = list(self.store.approvals.values())
        if pending:
            items.append(
                (f"Approvals ({len(pending)})", lambda: [self.open_approval(a) for a in pending])
            )
        return items

    def start(self, goal: str, rounds: int | None = None) -> None:
        def started(reply: Reply) -> None:
            if isinstance(reply, DialogueAccepted):
                self.store.remember(reply.dialogue)
                self.open_debugger(reply.dialogue.dialogue_id)
            else:
                self._toast_error(reply)

        self.send(StartDialogue(goal=goal, max_rounds=rounds), started)

    # -- the debugger -------------------------------------------------------------------------
    def debuggers(self, dialogue_id: str | None = None) -> list[DebuggerMorph]:
        return [
            m
            for m in self.world.children
            if isinstance(m, DebuggerMorph) and dialogue_id in (None, m.dialogue_id)
        ]

    def open_debugger(
        self, dialogue_id: str, pos: tuple[float, float] | None = None
    ) -> DebuggerMorph:
        open_ = self.debuggers(dialogue_id)
        if open_:
            self.world.bring_to_front(open_[0])
            return open_[0]
        x, y = pos or DEBUGGER_POS
        morph = DebuggerMorph(dialogue_id, pos=(max(0, x), max(0, y)))
        morph.bind(on_intent=self._debugger_intent, on_inspect=self._inspect)
        self.world.add_widget(morph)
        summary = self.store.dialogues.get(dialogue_id)
        if summary is not None:
            morph.show_summary(summary)
        if self.graph is None:
            self.send(DialogueGraph(), self._graph_arrived)
        else:
            morph.show_graph(self.graph.nodes, self.graph.edges, self.graph.mermaid)
        self.refresh_debugger(dialogue_id)
        return morph

    def open_for_persona(self, persona: str, pos: tuple[float, float] | None = None) -> None:
        """The halo's debug handle: the persona's current dialogue."""
        dialogue_id = self.store.current_for(persona)
        if dialogue_id is None:
            self.workbench.toast(
                f"{persona} is in no dialogue yet: click the canvas, 'Start a dialogue...'."
            )
            return
        self.open_debugger(dialogue_id, pos)

    def _graph_arrived(self, reply: Reply) -> None:
        if isinstance(reply, DialogueGraphReply):
            self.graph = reply
            for morph in self.debuggers():
                morph.show_graph(reply.nodes, reply.edges, reply.mermaid)

    def refresh_debugger(self, dialogue_id: str) -> None:
        if not self.debuggers(dialogue_id):
            return

        def status(reply: Reply) -> None:
            if isinstance(reply, DialogueStatusReply):
                self.store.remember(reply.dialogue)
                for morph in self.debuggers(dialogue_id):
                    morph.show_summary(reply.dialogue)
                    morph.show_values(reply.values)

        def history(reply: Reply) -> None:
            if isinstance(reply, DebugHistoryReply):
                for morph in self.debuggers(dialogue_id):
                    morph.show_history(reply.steps, reply.truncated)

        self.send(DialogueStatus(dialogue_id=dialogue_id), status)
        self.send(DebugHistory(dialogue_id=dialogue_id, limit=HISTORY_SHOWN), history)

    def _refresh_soon(self, dialogue_id: str) -> None:
        if not self.debuggers(dialogue_id):
            return
        trigger = self._triggers.get(dialogue_id)
        if trigger is None:
            trigger = self._triggers[dialogue_id] = Clock.create_trigger(
                lambda _dt: self.refresh_debugger(dialogue_id), REFRESH_S
            )
        trigger()

    def _debugger_intent(self, morph: DebuggerMorph, command: Command) -> None:
        def done(reply: Reply) -> None:
            if isinstance(reply, ErrorReply):
                morph.show_result(reply.message, ok=False)
                return
            if isinstance(reply, DebugStateUpdated):
                morph.show_summary(reply.dialogue)
                morph.show_values(reply.values)
                morph.show_result(f"state forked at checkpoint {reply.checkpoint_id}")
            elif isinstance(reply, DebugAck):
                morph.show_summary(reply.dialogue)
                morph.show_result(f"{reply.action}: ok")
            self._refresh_soon(morph.dialogue_id)

        self.send(command, done)

    def _inspect(self, morph: DebuggerMorph, persona: str) -> None:
        self.open_inspector(persona, (morph.x + 60, morph.y + 20))

    # -- events -------------------------------------------------------------------------------
    def _on_paused(
        self, _store: DialogueStore, dialogue_id: str, reason: str, detail: dict[str, Any]
    ) -> None:
        if reason == "dissonance":
            self.open_debugger(dialogue_id)
            self.workbench.toast(
                "Impasse: BRICK and ROBIN cannot agree. The Live Debugger is open: step, edit "
                "the state or a method, then continue."
            )
        elif reason == "error":
            self.workbench.toast(str(detail.get("error", "a dialogue stopped on an error")))
        self._refresh_soon(dialogue_id)

    def _on_step(self, _store: DialogueStore, dialogue_id: str, step: StepInfo) -> None:
        persona = str(step.record.get("persona", ""))
        output = str(step.record.get("output", ""))
        if persona in self.workbench.personas and output and step.node != "edit":
            self.workbench.persona(persona).say(
                f"\n{persona} ({step.node}): {output[:SAID_CHARS]}\n"
            )
        self._refresh_soon(dialogue_id)

    def _on_dialogue(self, _store: DialogueStore, summary: DialogueSummary) -> None:
        for morph in self.debuggers(summary.dialogue_id):
            morph.show_summary(summary)
        if summary.status not in ACTIVE:
            self._refresh_soon(summary.dialogue_id)
            self._calm(summary)

    def _calm(self, summary: DialogueSummary) -> None:
        """A dialogue that ended leaves its personas' tint to fade back to calm, unless
        another dialogue of theirs is still going."""
        busy = {
            name
            for d in self.store.dialogues.values()
            if d.status in ACTIVE and d.dialogue_id != summary.dialogue_id
            for name in d.personas.values()
        }
        for name in set(summary.personas.values()) - busy:
            persona = self.workbench.personas.get(name)
            if persona is not None and persona.dissonance > 0:
                Animation.cancel_all(persona, "dissonance")
                Animation(dissonance=0.0, duration=CALM_S).start(persona)

    # -- approvals ----------------------------------------------------------------------------
    def approval_morphs(self) -> list[ApprovalMorph]:
        return [m for m in self.world.children if isinstance(m, ApprovalMorph)]

    def open_approval(self, approval: ApprovalInfo) -> ApprovalMorph:
        for morph in self.approval_morphs():
            if morph.interrupt_id == approval.interrupt_id:
                return morph
        morph = ApprovalMorph(approval, pos=(360, 220))
        morph.bind(on_intent=self._approval_intent)
        self.world.add_widget(morph)
        return morph

    def _approval_intent(self, morph: ApprovalMorph, command: Command) -> None:
        def done(reply: Reply) -> None:
            if isinstance(reply, AmendmentDecision):
                morph.show_decided(reply.approval)
                self.store.approvals.pop(reply.approval.interrupt_id, None)
            elif isinstance(reply, ErrorReply):
                morph.show_error(reply.message)

        self.send(command, done)

    # -- goals --------------------------------------------------------------------------------
    def goals_morphs(self) -> list[GoalsMorph]:
        return [m for m in self.world.children if isinstance(m, GoalsMorph)]

    def open_goals(self, pos: tuple[float, float] = (600, 400)) -> GoalsMorph:
        if self.goals_morphs():
            morph = self.goals_morphs()[0]
            self.world.bring_to_front(morph)
        else:
            morph = GoalsMorph(pos=(max(0, pos[0]), max(0, pos[1] - 360)))
            morph.bind(on_intent=self._goal_intent, on_open=lambda _m, i: self.open_debugger(i))
            self.world.add_widget(morph)
        morph.show(list(self.store.goals.values()))
        self.send(ListGoals(), self._goals_arrived)
        return morph

    def _goals_arrived(self, reply: Reply) -> None:
        if isinstance(reply, GoalListReply):
            self.store.set_goals(reply.goals)

    def _show_goals(self) -> None:
        for morph in self.goals_morphs():
            morph.show(list(self.store.goals.values()))

    def _goal_intent(self, _morph: GoalsMorph, command: Command) -> None:
        def done(reply: Reply) -> None:
            if isinstance(reply, GoalReply):
                self.store.goals[reply.goal.goal_id] = reply.goal
            else:
                self._toast_error(reply)

        self.send(command, done)
