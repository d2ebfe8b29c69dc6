"""The learning loop in the workbench: opens LearningMorphs, sends their intents, hands the
replies back, and keeps them live from the store's ``learning_job`` and proto changes.
Only the UI thread runs any of it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from morphs.learning import LEARNING_METRICS, LearningMorph
from shared_api.commands import Command
from shared_api.errors import ErrorReply
from shared_api.replies import (
    CurateReply,
    GoldenList,
    GoldenReply,
    LearningAccepted,
    LearningStatusReply,
    ModelAdoption,
    Reply,
)

if TYPE_CHECKING:
    from morphs.world import World
    from ui.store import WorkbenchStore


class LearningController:
    """The learning panels and what they ask the backend. It gets what it uses, not the app:
    the send function, the workbench's store, the world and a way to open a plot."""

    def __init__(
        self,
        send: Callable[[Command, Any], None],
        store: WorkbenchStore,
        world: World,
        add_plot: Callable[..., Any],
    ) -> None:
        self._send = send
        self.world = world
        self.add_plot = add_plot
        self.morphs: list[LearningMorph] = []
        store.bind(learning_job=self._job)
        store.bind(on_change=self._changed)

    def menu_items(self, touch: Any) -> list[tuple[str, Any]]:
        return [("Learning", lambda: self.open(pos=touch.pos))]

    def open(self, persona: str = "BRICK", pos: tuple[float, float] = (100, 100)) -> LearningMorph:
        morph = LearningMorph(persona, pos=(max(0, pos[0]), max(0, pos[1] - 640)))
        morph.bind(on_intent=self._intent)
        morph.bind(
            on_plot=lambda m: self.add_plot((m.right + 20, m.y), metrics=list(LEARNING_METRICS))
        )
        self.world.add_widget(morph)
        self.morphs.append(morph)
        morph.refresh()
        return morph

    def _intent(self, morph: LearningMorph, command: Command) -> None:
        def show(reply: Reply) -> None:
            if isinstance(reply, LearningStatusReply):
                morph.show_status(reply)
            elif isinstance(reply, GoldenList):
                morph.show_golden(reply)
            elif isinstance(reply, LearningAccepted):
                morph.show_job(reply.job)
            elif isinstance(reply, GoldenReply):
                morph.edit(None)
                morph.refresh()
            elif isinstance(reply, CurateReply | ModelAdoption):
                morph.refresh()
            elif isinstance(reply, ErrorReply):
                morph.show_error(reply.message)

        self._send(command, show)

    def _job(self, _store: Any, job: Any) -> None:
        if job is not None:
            for morph in self._live():
                morph.show_job(job)

    def _changed(self, _store: Any, persona: str) -> None:
        for morph in self._live():
            if morph.persona == persona:
                morph.refresh()

    def _live(self) -> list[LearningMorph]:
        self.morphs = [m for m in self.morphs if m.parent is not None]
        return self.morphs
