"""DebuggerMorph: the Live Debugger on one dialogue.

The steps of the dialogue's current branch (from its checkpoints), each node's input, exact
prompt, output and timings, the graph with the next node and the breakpoints, and the editable
graph state. Buttons announce typed commands (``on_intent(command)``): step, continue, pause,
breakpoints, edit state, rewind and restart from a step; ``on_inspect(persona)`` asks for the
Inspector (edit a live method or state there, then continue). The app sends the commands and
feeds the replies and events back through ``show_*``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kivy.graphics import Color, Line, RoundedRectangle
from kivy.properties import StringProperty
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.gridlayout import GridLayout
from kivy.uix.label import Label
from kivy.uix.popup import Popup
from kivy.uix.scrollview import ScrollView
from kivy.uix.togglebutton import ToggleButton
from kivy.utils import escape_markup

from morphs.behaviors import DraggableBehavior
from morphs.field import Field
from morphs.graph_view import GraphView
from morphs.menu import themed_button, themed_popup
from morphs.panel import ClosableBehavior
from morphs.tooltip import ellipsize, set_tooltip
from shared_api.commands import (
    DebugContinue,
    DebugPause,
    DebugRewind,
    DebugStep,
    DebugUpdateState,
    SetBreakpoints,
)
from shared_api.dialogue import DIALOGUE_NODES, DialogueSummary, GraphEdge, StepInfo

ROW = 28
#: The state fields offered for editing (the backend validates them again).
EDITABLE = (
    "goal",
    "max_rounds",
    "round",
    "impasse_rounds",
    "dissonance_streak",
    "brick_view",
    "robin_view",
    "research",
)
STATUS_COLOURS = {
    "running": "7be07b",
    "paused": "e0c36c",
    "awaiting_approval": "e0a06c",
    "finished": "6cb6e0",
    "cancelled": "9aa5b1",
    "error": "ff6b6b",
}


def _e(value: Any) -> str:
    return str(escape_markup(str(value)))


def step_line(step: StepInfo, number: int | None = None) -> str:
    """One row of the steps list; ``number`` is the row's own (unique) number."""
    record = step.record
    took = record.get("duration_ms")
    timing = f" {float(took):.0f} ms" if isinstance(took, int | float) and took else ""
    who = record.get("persona", "")
    n = step.index if number is None else number
    return f"#{n} {step.node} {who} r{step.round}{timing}"


def detail_text(step: StepInfo, number: int | None = None) -> str:
    """Everything about one step, as escaped markup."""
    r = step.record
    n = step.index if number is None else number
    head = (
        f"[b]#{n} {_e(step.node)}[/b]  {_e(r.get('persona', ''))} "
        f"{_e(r.get('task', ''))}  round {step.round}"
    )
    if not r:
        return (
            f"{head}\n[color=8899aa]{_e(step.source)} checkpoint {_e(step.checkpoint_id)}; "
            f"next: {_e(', '.join(step.next) or '(end)')}[/color]"
        )
    parts = [
        head,
        f"[color=8899aa]{_e(r.get('model', ''))}  {float(r.get('duration_ms') or 0):.0f} ms  "  # type: ignore[arg-type]
        f"checkpoint {_e(step.checkpoint_id)}[/color]",
    ]
    inputs = r.get("input") or {}
    if isinstance(inputs, dict) and inputs:
        shown = "\n".join(
            f"  {_e(k)}: {_e(json.dumps(v, ensure_ascii=False)[:300])}"
            for k, v in inputs.items()
            if k != "turns"
        )
        parts.append(f"[b]Input[/b]\n{shown}")
    if r.get("system"):
        parts.append(f"[b]System prompt[/b]\n[color=b8c2cc]{_e(r['system'])}[/color]")
    if r.get("prompt"):
        parts.append(
            f"[b]Prompt[/b] [color=8899aa]({_e(r.get('prompt_source', 'default'))})[/color]\n"
            f"[color=e0c36c]{_e(r['prompt'])}[/color]"
        )
    if r.get("sent") and r.get("sent") != r.get("prompt"):
        parts.append(
            f"[b]Sent to the model[/b] [color=8899aa](with recalled memories)[/color]\n"
            f"[color=e0c36c]{_e(r['sent'])}[/color]"
        )
    parts.append(f"[b]Output[/b]\n{_e(r.get('output', ''))}")
    timings = r.get("timings") or {}
    if isinstance(timings, dict) and timings:
        parts.append("[b]Timings[/b]  " + ", ".join(f"{_e(k)} {_e(v)}" for k, v in timings.items()))
    judgement = r.get("judgement")
    if isinstance(judgement, dict):
        criteria = judgement.get("criteria")
        crit = ", ".join(
            f"{_e(k)} {v:.2f}"
            for k, v in (criteria.items() if isinstance(criteria, dict) else ())
            if isinstance(v, int | float)
        )
        parts.append(
            f"[b]Judgement[/b]  {_e(judgement.get('verdict'))}: dissonance "
            f"{judgement.get('dissonance', 0):.2f}, convergence "
            f"{judgement.get('convergence', 0):.2f}\n  criteria: {crit}\n  "
            f"reason: {_e(judgement.get('reason', ''))}"
        )
    if r.get("decision"):
        parts.append(f"[b]Decision[/b]  {_e(json.dumps(r['decision']))}")
    return "\n\n".join(parts)


def _button(text: str, action: Callable[[], Any], **kwargs: Any) -> Button:
    button = Button(text=text, font_size="12sp", **kwargs)
    button.bind(on_release=lambda _b: action())
    return button


class DebuggerMorph(ClosableBehavior, DraggableBehavior, BoxLayout):
    dialogue_id = StringProperty("")

    __events__ = ("on_intent", "on_inspect", "on_moved", "on_meta_click", "on_close")

    def __init__(self, dialogue_id: str, **kwargs: Any) -> None:
        kwargs.setdefault("size_hint", (None, None))
        kwargs.setdefault("size", (1000, 640))
        super().__init__(orientation="vertical", padding=8, spacing=4, **kwargs)
        self.dialogue_id = dialogue_id
        self.summary: DialogueSummary | None = None
        self.steps: list[StepInfo] = []
        self.selected: int | None = None
        self.values: dict[str, Any] = {}
        self.mermaid = ""
        self.showing_mermaid = False
        with self.canvas.before:
            Color(0.1, 0.12, 0.16, 1)
            self._bg = RoundedRectangle(radius=[10])
            Color(0.55, 0.5, 0.85, 0.9)
            self._edge = Line(width=1.2)
        self.bind(pos=self._redraw, size=self._redraw)
        self.title = Label(markup=True, size_hint_y=None, height=ROW, halign="left")
        self.title.bind(size=lambda lbl, s: setattr(lbl, "text_size", s))
        self.add_widget(self.title)
        self._toolbar()
        self._breakpoints()
        body = BoxLayout(spacing=6)
        body.add_widget(self._steps_column())
        body.add_widget(self._detail_column())
        body.add_widget(self._side_column())
        self.add_widget(body)
        self.result = Label(
            markup=True, size_hint_y=None, height=22, font_size="12sp", halign="left"
        )
        self.result.bind(size=lambda lbl, s: setattr(lbl, "text_size", s))
        self.add_widget(self.result)
        self._redraw()
        self._init_close_box()

    # -- building -----------------------------------------------------------------------------
    def _redraw(self, *_: Any) -> None:
        self._bg.pos, self._bg.size = self.pos, self.size
        self._edge.rounded_rectangle = (self.x, self.y, self.width, self.height, 10)

    def _toolbar(self) -> None:
        bar = BoxLayout(size_hint_y=None, height=ROW + 2, spacing=4)
        self.buttons = {
            "step": _button("Step", self.step),
            "continue": _button("Continue", self.continue_),
            "pause": _button("Pause", self.pause),
            "rewind": _button("Rewind here", lambda: self.rewind(resume=False)),
            "restart": _button("Restart from here", lambda: self.rewind(resume=True)),
            "inspect": _button("Inspect persona", self.inspect),
            "mermaid": _button("Mermaid", self.toggle_mermaid),
        }
        for button in self.buttons.values():
            bar.add_widget(button)
        self.add_widget(bar)

    def _breakpoints(self) -> None:
        row = BoxLayout(size_hint_y=None, height=ROW, spacing=3)
        row.add_widget(Label(text="break before:", font_size="12sp", size_hint_x=None, width=96))
        self.toggles: dict[str, ToggleButton] = {}
        for node in DIALOGUE_NODES:
            toggle = ToggleButton(text=node, font_size="12sp")
            toggle.bind(on_release=lambda _t: self.set_breakpoints())
            self.toggles[node] = toggle
            row.add_widget(toggle)
        self.add_widget(row)

    def _steps_column(self) -> ScrollView:
        self.step_list = GridLayout(cols=1, size_hint_y=None, spacing=2)
        self.step_list.bind(minimum_height=self.step_list.setter("height"))
        scroll = ScrollView(size_hint_x=None, width=230, do_scroll_x=False)
        scroll.add_widget(self.step_list)
        self.step_scroll = scroll
        return scroll

    def _detail_column(self) -> ScrollView:
        self.detail = Label(
            markup=True, halign="left", valign="top", font_size="12sp", size_hint_y=None
        )
        self.detail.bind(
            width=lambda lbl, w: setattr(lbl, "text_size", (w, None)),
            texture_size=lambda lbl, ts: setattr(lbl, "height", ts[1]),
        )
        scroll = ScrollView(do_scroll_x=False)
        scroll.add_widget(self.detail)
        return scroll

    def _side_column(self) -> BoxLayout:
        side = BoxLayout(orientation="vertical", size_hint_x=None, width=300, spacing=4)
        self.graph = GraphView(size_hint_y=None, height=250)
        side.add_widget(self.graph)
        side.add_widget(
            Label(
                text="graph state (JSON), edit and apply:",
                font_size="12sp",
                size_hint_y=None,
                height=20,
            )
        )
        self.editor = Field(font_size="11sp", font_name="RobotoMono-Regular")
        side.add_widget(self.editor)
        side.add_widget(_button("Apply edit (fork)", self.apply_edit, size_hint_y=None, height=ROW))
        return side

    # -- rendering ----------------------------------------------------------------------------
    def show_summary(self, summary: DialogueSummary) -> None:
        self.summary = summary
        colour = STATUS_COLOURS.get(summary.status, "ffffff")
        reason = f" ({_e(summary.reason)})" if summary.reason else ""
        nxt = ", ".join(summary.next) or "(end)"
        self.title.text = (
            f"[b]Live Debugger[/b]  {_e(ellipsize(summary.goal, 60))}   "
            f"[color={colour}]{summary.status}{reason}[/color]   round {summary.round}/"
            f"{summary.max_rounds}   dissonance {summary.dissonance:.2f}   next: {_e(nxt)}"
        )
        for node, toggle in self.toggles.items():
            toggle.state = "down" if node in summary.breakpoints else "normal"
        set_tooltip(self.title, summary.goal if len(summary.goal) > 60 else "")
        self.graph.upcoming = summary.next[0] if summary.next else "__end__"
        self.graph.breakpoints = list(summary.breakpoints)
        running = summary.status == "running"
        over = summary.status in ("finished", "cancelled")
        for name in ("step", "rewind", "restart"):
            self.buttons[name].disabled = running
        for name in ("step", "continue"):  # a finished dialogue has nothing left to run
            self.buttons[name].disabled = running or over
        self.buttons["pause"].disabled = not running

    def show_history(self, steps: list[StepInfo], truncated: bool = False) -> None:
        follow = self.selected is None or self.selected >= len(self.steps) - 1
        self.steps = list(steps)
        self.step_list.clear_widgets()
        if truncated:
            self.step_list.add_widget(
                Label(
                    text="(older steps pruned)",
                    font_size="11sp",
                    size_hint_y=None,
                    height=20,
                    color=(0.6, 0.65, 0.7, 1),
                )
            )
        first = self._first_number(truncated)
        for i, step in enumerate(self.steps):
            row = ToggleButton(
                text=step_line(step, first + i),
                font_size="12sp",
                size_hint_y=None,
                height=ROW,
                group=f"steps-{self.dialogue_id}",
                halign="left",
            )
            row.bind(size=lambda b, s: setattr(b, "text_size", (s[0] - 8, None)))
            row.bind(on_release=lambda _b, n=i: self.select(n))
            self.step_list.add_widget(row)
        ran = [s for s in self.steps if s.record]
        self.graph.current = ran[-1].node if ran else ""
        if self.steps:
            self.select(
                len(self.steps) - 1 if follow else min(self.selected or 0, len(self.steps) - 1)
            )

    def show_values(self, values: dict[str, Any]) -> None:
        """The graph state at the head; the editor refreshes unless the user is typing."""
        self.values = dict(values)
        if not self.editor.focus:
            shown = {k: values[k] for k in EDITABLE if k in values}
            self.editor.text = json.dumps(shown, indent=1, ensure_ascii=False)

    def show_graph(self, nodes: list[str], edges: list[GraphEdge], mermaid: str) -> None:
        self.graph.set_graph(nodes, edges)
        self.mermaid = mermaid

    def show_result(self, text: str, ok: bool = True) -> None:
        colour = "7be07b" if ok else "ff6b6b"
        self.result.text = f"[color={colour}]{_e(text)}[/color]"

    def select(self, index: int) -> None:
        if not 0 <= index < len(self.steps):
            return
        self.selected = index
        self.showing_mermaid = False
        rows = [w for w in reversed(self.step_list.children) if isinstance(w, ToggleButton)]
        for i, row in enumerate(rows):
            row.state = "down" if i == index else "normal"
        self.detail.text = detail_text(self.steps[index], self._first_number() + index)

    def _first_number(self, truncated: bool | None = None) -> int:
        """Steps are numbered by their place in the branch, so no two share a number (the
        graph's own ``seq`` repeats: the input and the start are both 0). Pruned older
        steps keep the count going from the oldest step's own number."""
        if truncated is not None:
            self._truncated = truncated
        if getattr(self, "_truncated", False) and self.steps:
            return int(self.steps[0].index)
        return 0

    def selected_step(self) -> StepInfo | None:
        return self.steps[self.selected] if self.selected is not None and self.steps else None

    # -- intents (announced, never sent from here) --------------------------------------------
    def _announce(self, command: Any) -> None:
        self.dispatch("on_intent", command)

    def step(self) -> None:
        self._announce(DebugStep(dialogue_id=self.dialogue_id))

    def continue_(self) -> None:
        self._announce(DebugContinue(dialogue_id=self.dialogue_id))

    def pause(self) -> None:
        self._announce(DebugPause(dialogue_id=self.dialogue_id))

    def set_breakpoints(self) -> None:
        nodes = [n for n, t in self.toggles.items() if t.state == "down"]
        self._announce(SetBreakpoints(dialogue_id=self.dialogue_id, nodes=nodes))

    def rewind(self, resume: bool) -> None:
        step = self.selected_step()
        if step is None or not step.before:
            self.show_result("select a step that has a step before it", ok=False)
            return
        self._announce(
            DebugRewind(dialogue_id=self.dialogue_id, checkpoint_id=step.before, resume=resume)
        )

    def apply_edit(self) -> None:
        try:
            edited = json.loads(self.editor.text or "{}")
        except json.JSONDecodeError as exc:
            self.show_result(f"not valid JSON: {exc.msg} (line {exc.lineno})", ok=False)
            return
        if not isinstance(edited, dict):
            self.show_result("the state must be a JSON object", ok=False)
            return
        changed = {k: v for k, v in edited.items() if self.values.get(k) != v}
        if not changed:
            self.show_result("nothing changed", ok=False)
            return
        self.show_result("forking the state...")
        self._announce(DebugUpdateState(dialogue_id=self.dialogue_id, values=changed))

    def inspect(self) -> None:
        step = self.selected_step()
        persona = str(step.record.get("persona", "")) if step else ""
        if not persona or persona == "user":
            persona = (self.summary.personas.get("logic", "") if self.summary else "") or "BRICK"
        self.dispatch("on_inspect", persona)

    def toggle_mermaid(self) -> None:
        self.showing_mermaid = not self.showing_mermaid
        if self.showing_mermaid:
            self.detail.text = f"[b]Mermaid[/b]\n[font=RobotoMono-Regular]{_e(self.mermaid)}[/font]"
        elif self.selected is not None:
            self.select(self.selected)

    # -- default handlers ---------------------------------------------------------------------
    def on_intent(self, command: Any) -> None:
        pass

    def on_inspect(self, persona: str) -> None:
        pass

    def on_moved(self) -> None:
        pass

    def on_meta_click(self, touch: Any) -> None:
        pass


def ask_goal(on_start: Callable[[str, int], Any], rounds: int = 4) -> Popup:
    """The world menu's "Start a dialogue": a goal and a number of rounds."""
    box = BoxLayout(orientation="vertical", spacing=6, padding=6)
    goal = Field(hint_text="the goal BRICK and ROBIN argue", multiline=True)
    count = Field(
        text=str(rounds), multiline=False, size_hint_y=None, height=32, input_filter="int"
    )
    box.add_widget(goal)
    row = BoxLayout(size_hint_y=None, height=36, spacing=6)
    row.add_widget(Label(text="rounds", size_hint_x=None, width=60))
    row.add_widget(count)
    box.add_widget(row)
    popup = themed_popup("Start a dialogue", box, (460, 280))
    buttons = BoxLayout(size_hint_y=None, height=36, spacing=6)

    def start() -> None:
        if goal.text.strip():
            popup.dismiss()
            on_start(goal.text.strip(), max(1, int(count.text or rounds)))

    for text, action in (("Start", start), ("Cancel", popup.dismiss)):
        button = themed_button(text)
        button.bind(on_release=lambda _b, act=action: act())
        buttons.add_widget(button)
    box.add_widget(buttons)
    popup.goal_input = goal  # for tests and keyboard focus
    popup.start = start
    popup.open()
    goal.focus = True
    return popup
