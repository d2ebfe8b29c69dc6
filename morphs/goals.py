"""GoalsMorph: the motivator's goal queue. Each goal shows where it came from and its status,
with the actions its status allows (approve starts its dialogue; pause; resume; cancel),
announced as ``on_intent(GoalAction)``; ``on_open(dialogue_id)`` asks for its debugger."""

from __future__ import annotations

from typing import Any

from kivy.graphics import Color, Line, RoundedRectangle
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.gridlayout import GridLayout
from kivy.uix.label import Label
from kivy.uix.scrollview import ScrollView
from kivy.utils import escape_markup

from morphs.behaviors import DraggableBehavior
from morphs.panel import ClosableBehavior
from shared_api.commands import GoalAction
from shared_api.dialogue import GoalInfo

ACTIONS = {
    "proposed": ("approve", "pause", "cancel"),
    "approved": ("pause", "cancel"),
    "paused": ("approve", "resume", "cancel"),
    "cancelled": (),
    "done": (),
}
STATUS_COLOURS = {
    "proposed": "e0c36c",
    "approved": "7be07b",
    "paused": "9aa5b1",
    "cancelled": "ff6b6b",
    "done": "6cb6e0",
}


class GoalsMorph(ClosableBehavior, DraggableBehavior, BoxLayout):
    __events__ = ("on_intent", "on_open", "on_moved", "on_meta_click", "on_close")

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("size_hint", (None, None))
        kwargs.setdefault("size", (560, 360))
        super().__init__(orientation="vertical", padding=8, spacing=4, **kwargs)
        with self.canvas.before:
            Color(0.1, 0.13, 0.12, 1)
            self._bg = RoundedRectangle(radius=[10])
            Color(0.45, 0.8, 0.55, 0.9)
            self._edge = Line(width=1.2)
        self.bind(pos=self._redraw, size=self._redraw)
        self.title = Label(
            markup=True, size_hint_y=None, height=26, halign="left", text="[b]Goals[/b]"
        )
        self.title.bind(size=lambda lbl, s: setattr(lbl, "text_size", s))
        self.add_widget(self.title)
        self.rows = GridLayout(cols=1, size_hint_y=None, spacing=3)
        self.rows.bind(minimum_height=self.rows.setter("height"))
        scroll = ScrollView(do_scroll_x=False)
        scroll.add_widget(self.rows)
        self.add_widget(scroll)
        self.buttons: dict[tuple[str, str], Button] = {}
        self._redraw()
        self._init_close_box()

    def _redraw(self, *_: Any) -> None:
        self._bg.pos, self._bg.size = self.pos, self.size
        self._edge.rounded_rectangle = (self.x, self.y, self.width, self.height, 10)

    def show(self, goals: list[GoalInfo]) -> None:
        self.rows.clear_widgets()
        self.buttons.clear()
        waiting = sum(1 for g in goals if g.status == "proposed")
        self.title.text = (
            f"[b]Goals[/b]  [color=8899aa]{len(goals)} queued, {waiting} waiting for you[/color]"
        )
        for goal in sorted(goals, key=lambda g: -g.created):
            self._row(goal)
        if not goals:
            self.rows.add_widget(Label(text="(no goals yet)", size_hint_y=None, height=26))

    def _row(self, goal: GoalInfo) -> None:
        colour = STATUS_COLOURS.get(goal.status, "ffffff")
        text = Label(
            markup=True,
            halign="left",
            valign="middle",
            font_size="12sp",
            size_hint_y=None,
            text=(
                f"[color={colour}]{goal.status}[/color]  {escape_markup(goal.text)}\n"
                f"[color=8899aa]{escape_markup(goal.source)} {escape_markup(goal.proto)} "
                f"score {goal.score:.2f}[/color]"
            ),
        )
        text.bind(
            width=lambda lbl, w: setattr(lbl, "text_size", (w, None)),
            texture_size=lambda lbl, ts: setattr(lbl, "height", max(40, ts[1] + 6)),
        )
        self.rows.add_widget(text)
        actions = BoxLayout(size_hint_y=None, height=28, spacing=4)
        for action in ACTIONS.get(goal.status, ()):
            button = Button(text=action, font_size="12sp")
            button.bind(on_release=lambda _b, a=action: self.act(goal.goal_id, a))
            self.buttons[(goal.goal_id, action)] = button
            actions.add_widget(button)
        if goal.dialogue_id:
            button = Button(text="debugger", font_size="12sp")
            button.bind(on_release=lambda _b: self.dispatch("on_open", goal.dialogue_id))
            self.buttons[(goal.goal_id, "debugger")] = button
            actions.add_widget(button)
        self.rows.add_widget(actions)

    def act(self, goal_id: str, action: str) -> None:
        self.dispatch(
            "on_intent", GoalAction.model_validate({"goal_id": goal_id, "action": action})
        )

    def on_intent(self, command: Any) -> None:
        pass

    def on_open(self, dialogue_id: str) -> None:
        pass

    def on_moved(self) -> None:
        pass

    def on_meta_click(self, touch: Any) -> None:
        pass
