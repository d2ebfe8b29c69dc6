"""The workbench's view of dialogues, pending amendments and goals, fed by backend events.

Only the UI thread calls ``apply`` (``WorkbenchStore.apply`` forwards every event here).
Morphs render from these properties; Kivy events tell the controller what to open.
"""

from __future__ import annotations

from typing import Any

from kivy.event import EventDispatcher
from kivy.properties import DictProperty

from shared_api.dialogue import ApprovalInfo, DialogueSummary, GoalInfo, StepInfo
from shared_api.events import Event

ACTIVE = ("running", "paused", "awaiting_approval", "error")


class DialogueStore(EventDispatcher):
    __events__ = ("on_paused", "on_proposed", "on_step", "on_dialogue")

    #: dialogue id -> DialogueSummary
    dialogues = DictProperty({})
    #: interrupt id -> ApprovalInfo, pending only
    approvals = DictProperty({})
    #: goal id -> GoalInfo
    goals = DictProperty({})

    def apply(self, event: Event) -> None:
        handler = getattr(self, f"_on_{event.kind}", None)
        if handler is not None:
            handler(event)

    # -- replies ------------------------------------------------------------------------------
    def set_dialogues(self, dialogues: list[DialogueSummary]) -> None:
        self.dialogues = {d.dialogue_id: d for d in dialogues}

    def set_approvals(self, approvals: list[ApprovalInfo]) -> None:
        self.approvals = {a.interrupt_id: a for a in approvals if a.status == "pending"}

    def set_goals(self, goals: list[GoalInfo]) -> None:
        self.goals = {g.goal_id: g for g in goals}

    def remember(self, summary: DialogueSummary) -> None:
        self.dialogues[summary.dialogue_id] = summary
        self.dispatch("on_dialogue", summary)

    # -- queries ------------------------------------------------------------------------------
    def current_for(self, persona: str) -> str | None:
        """The dialogue a persona takes part in: the latest active one, else the latest."""
        mine = [d for d in self.dialogues.values() if persona in d.personas.values()]
        if not mine:
            return None
        active = [d for d in mine if d.status in ACTIVE]
        latest = max(active or mine, key=lambda d: d.updated)
        return str(latest.dialogue_id)

    # -- events -------------------------------------------------------------------------------
    def _on_dialogue_changed(self, event: Any) -> None:
        self.remember(event.dialogue)

    def _on_dialogue_step(self, event: Any) -> None:
        step: StepInfo = event.step
        self.dispatch("on_step", event.dialogue_id, step)

    def _on_dialogue_paused(self, event: Any) -> None:
        self.dispatch("on_paused", event.dialogue_id, event.reason, event.detail)

    def _on_amendment_proposed(self, event: Any) -> None:
        self.approvals[event.approval.interrupt_id] = event.approval
        self.dispatch("on_proposed", event.approval)

    def _on_amendment_decided(self, event: Any) -> None:
        self.approvals.pop(event.approval.interrupt_id, None)

    def _on_goal_queued(self, event: Any) -> None:
        self.goals[event.goal.goal_id] = event.goal

    def _on_goal_updated(self, event: Any) -> None:
        self.goals[event.goal.goal_id] = event.goal

    # -- default handlers ---------------------------------------------------------------------
    def on_paused(self, dialogue_id: str, reason: str, detail: dict[str, Any]) -> None:
        """A dialogue paused (an impasse opens the debugger)."""

    def on_proposed(self, approval: ApprovalInfo) -> None:
        """An amendment awaits the user's decision."""

    def on_step(self, dialogue_id: str, step: StepInfo) -> None:
        """A node ran."""

    def on_dialogue(self, summary: DialogueSummary) -> None:
        """A dialogue's summary changed."""
