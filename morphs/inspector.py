"""InspectorMorph: a persona's live state, codex, methods and history, editable in place.

It renders a ``ProtoDescription`` and announces edits as typed commands
(``on_intent(command, key)``); the app sends them and hands each reply back with
``show_result(key, reply)``, so a rejected edit shows the backend's own error next to the
field it came from. Edits are type-checked against the current value before they are sent.
"""

from __future__ import annotations

import json
from typing import Any

from kivy.graphics import Color, Line, RoundedRectangle
from kivy.properties import StringProperty
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.gridlayout import GridLayout
from kivy.uix.label import Label
from kivy.uix.scrollview import ScrollView
from kivy.uix.textinput import TextInput

from morphs.behaviors import DraggableBehavior
from morphs.field import Field
from morphs.inspector_tools import ToolsSection, describe_reply
from morphs.panel import ClosableBehavior
from shared_api.commands import DefineMethod, SetState
from shared_api.errors import ErrorReply
from shared_api.replies import DoesNotUnderstand, ProtoDescription

ROW = 30
MAX_DEPTH_SHOWN = 4


def leaves(tree: Any, prefix: str = "", depth: int = 0) -> list[tuple[str, Any]]:
    """(dotted path, value) for every editable leaf; lists and deep maps are leaves."""
    if isinstance(tree, dict) and tree and depth < MAX_DEPTH_SHOWN:
        out: list[tuple[str, Any]] = []
        for key in sorted(tree):
            out += leaves(tree[key], f"{prefix}.{key}" if prefix else str(key), depth + 1)
        return out
    return [(prefix, tree)] if prefix else []


def check_type(old: Any, new: Any) -> str | None:
    """Why ``new`` may not replace ``old`` (None if it may): a number stays a number, etc."""
    kinds = {
        bool: "true/false",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a map",
        type(None): "null",
    }
    old_kind, new_kind = kinds.get(type(old)), kinds.get(type(new))
    if old is None or old_kind == new_kind:
        return None
    return f"this value is {old_kind}; enter {old_kind} (or set a new path to change its type)"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("[", "&bl;").replace("]", "&br;")


def history_line(item: dict[str, Any]) -> str:
    prompt = _escape(str(item.get("prompt", "")).splitlines()[0][:80] if item.get("prompt") else "")
    reply = _escape(" ".join(str(item.get("reply", "")).split())[:160])
    timings = item.get("timings") or {}
    rate = timings.get("tokens_per_s") if isinstance(timings, dict) else None
    meta = f"{item.get('model', '?')}" + (
        f", {rate:.0f} tok/s" if isinstance(rate, int | float) else ""
    )
    score = item.get("judge_score")
    if isinstance(score, int | float):
        meta += f", judged {score:.2f}"
    return f"[color=e0c36c]> {prompt}[/color]\n{reply} [color=8899aa]({meta})[/color]"


def models_line(models: dict[str, Any]) -> str:
    """Which model serves each role (chat, code, judge) of the persona, and why."""
    rows = [
        f"{role}: {_escape(f'{sel.backend}:{sel.model}')} [color=8899aa]"
        f"({_escape(sel.reason.removeprefix(role + ': '))})[/color]"
        for role, sel in sorted(models.items())
    ]
    return "[color=b8c2cc]" + "\n".join(rows) + "[/color]"


def learning_line(view: dict[str, Any]) -> str:
    """ALFRED's judgement of the persona's interactions, its golden data and model."""
    model = view.get("model") or "the default model"
    return (
        f"[color=b59cf0]judged {view.get('judged')}: mean score {view.get('mean_score')}, "
        f"{view.get('golden')} golden examples, talks through {_escape(str(model))}[/color]"
    )


def performance_line(history: list[dict[str, Any]]) -> str:
    rates = [
        t["tokens_per_s"]
        for i in history
        if isinstance(t := i.get("timings"), dict)
        and isinstance(t.get("tokens_per_s"), int | float)
    ]
    ttfts = [
        t["ttft_ms"]
        for i in history
        if isinstance(t := i.get("timings"), dict) and isinstance(t.get("ttft_ms"), int | float)
    ]
    if not rates:
        return "[color=8899aa]no model calls yet[/color]"
    return (
        f"[color=b8c2cc]last {len(rates)} calls: {sum(rates) / len(rates):.1f} tok/s mean, "
        f"time to first token {sum(ttfts) / max(1, len(ttfts)):.0f} ms mean[/color]"
    )


def _label(text: str, **kwargs: Any) -> Label:
    kwargs.setdefault("size_hint_y", None)
    kwargs.setdefault("height", ROW)
    label = Label(
        text=text, halign="left", valign="middle", markup=True, font_size="12sp", **kwargs
    )
    label.bind(width=lambda lbl, w: setattr(lbl, "text_size", (w, None)))
    label.bind(texture_size=lambda lbl, ts: setattr(lbl, "height", max(ROW, ts[1] + 6)))
    return label


class InspectorMorph(ClosableBehavior, ToolsSection, DraggableBehavior, BoxLayout):
    persona = StringProperty("")

    __events__ = ("on_intent", "on_moved", "on_meta_click", "on_close")

    def __init__(self, persona: str, **kwargs: Any) -> None:
        kwargs.setdefault("size_hint", (None, None))
        kwargs.setdefault("size", (460, 560))
        super().__init__(orientation="vertical", padding=8, spacing=4, **kwargs)
        self.persona = persona
        with self.canvas.before:
            Color(0.11, 0.13, 0.17, 1)
            self._bg = RoundedRectangle(radius=[10])
            Color(0.8, 0.65, 0.3, 0.8)
            self._edge = Line(width=1.2)
        self.bind(pos=self._redraw, size=self._redraw)
        self.title = _label(f"[b]Inspector[/b]  {persona}", size_hint_y=None, height=28)
        self.add_widget(self.title)
        self._body = GridLayout(cols=1, size_hint_y=None, spacing=3)
        self._body.bind(minimum_height=self._body.setter("height"))
        scroll = ScrollView(do_scroll_x=False)
        scroll.add_widget(self._body)
        self.add_widget(scroll)
        self.results: dict[str, Label] = {}
        self.inputs: dict[str, TextInput] = {}
        self.description: ProtoDescription | None = None
        self.forge_label = _label("", color=(0.55, 0.85, 0.75, 1), height=0)
        self._redraw()
        self._init_close_box()

    def _label(self, text: str, **kwargs: Any) -> Label:
        return _label(text, **kwargs)

    def _redraw(self, *_: Any) -> None:
        self._bg.pos, self._bg.size = self.pos, self.size
        self._edge.rounded_rectangle = (self.x, self.y, self.width, self.height, 10)

    # -- rendering --------------------------------------------------------------------------
    def editing(self) -> bool:
        return any(i.focus for i in self.inputs.values())

    def show(self, description: ProtoDescription) -> None:
        """Render a fresh description, unless the user is typing (then it waits)."""
        if self.editing():
            return
        self.description = description
        self.title.text = (
            f"[b]Inspector[/b]  {description.name}  [color=8899aa]v{description.version}[/color]"
        )
        body = self._body
        body.clear_widgets()
        self.inputs.clear()
        self.results.clear()
        codex = description.codex
        body.add_widget(_label("[b]Codex[/b] [color=8899aa](read-only)[/color]"))
        principles = "; ".join(codex.get("core_principles", []))  # type: ignore[arg-type]
        body.add_widget(
            _label(
                f"[color=b8c2cc]{codex.get('role', '')}\nmodel: {codex.get('default_model', '')}\n"
                f"principles: {principles}[/color]"
            )
        )
        if description.models:
            body.add_widget(_label("[b]Models[/b] [color=8899aa](per role)[/color]"))
            body.add_widget(_label(models_line(description.models)))
        body.add_widget(_label("[b]State[/b]"))
        for path, value in leaves(description.state):
            self._state_row(path, value)
        self._state_row("", None, new=True)
        body.add_widget(_label("[b]Methods[/b]"))
        for name, source in sorted(description.methods.items()):
            self._method_editor(name, source)
        self._method_editor("", "def new_method(self):\n    return None\n", new=True)
        self._tools_section(description)
        total = description.description.get("interactions", 0)
        body.add_widget(_label(f"[b]History[/b]  [color=8899aa]{total} interactions[/color]"))
        learning = description.description.get("learning")
        if isinstance(learning, dict) and learning.get("judged"):
            body.add_widget(_label(learning_line(learning)))
        for item in reversed(description.history[-8:]):
            body.add_widget(_label(history_line(item)))
        body.add_widget(_label("[b]Performance[/b]"))
        body.add_widget(_label(performance_line(description.history)))

    def _result_label(self, key: str) -> Label:
        label = _label("", color=(1, 0.55, 0.55, 1), height=0)
        self.results[key] = label
        return label

    def _state_row(self, path: str, value: Any, *, new: bool = False) -> None:
        key = "state:" + (path or "+new")
        row = BoxLayout(size_hint_y=None, height=ROW, spacing=4)
        if new:
            where = Field(hint_text="new.path", multiline=False, size_hint_x=0.4, font_size="12sp")
            self.inputs[key + ":path"] = where
            row.add_widget(where)
        else:
            row.add_widget(_label(f"[color=b8c2cc]{path}[/color]", size_hint_x=0.4))
        field = Field(
            text="" if new else json.dumps(value),
            multiline=False,
            font_size="12sp",
            hint_text="JSON value",
        )
        self.inputs[key] = field
        row.add_widget(field)
        button = Button(text="set", size_hint_x=None, width=44, font_size="12sp")
        button.bind(
            on_release=lambda _b: self.edit_state(key, path if not new else None, value, new)
        )
        row.add_widget(button)
        self._body.add_widget(row)
        self._body.add_widget(self._result_label(key))

    def _method_editor(self, name: str, source: str, *, new: bool = False) -> None:
        key = "method:" + (name or "+new")
        head = BoxLayout(size_hint_y=None, height=ROW, spacing=4)
        if new:
            field = Field(hint_text="method name", multiline=False, font_size="12sp")
            self.inputs[key + ":name"] = field
            head.add_widget(field)
        else:
            head.add_widget(_label(f"[color=e0c36c]{name}[/color]"))
        button = Button(text="apply", size_hint_x=None, width=56, font_size="12sp")
        button.bind(on_release=lambda _b: self.define_method(key, name or None))
        head.add_widget(button)
        self._body.add_widget(head)
        editor = Field(
            text=source,
            multiline=True,
            size_hint_y=None,
            height=110,
            font_name="RobotoMono-Regular",
            font_size="12sp",
        )
        editor.cursor = (0, 0)  # show the source from its first line
        self.inputs[key] = editor
        self._body.add_widget(editor)
        self._body.add_widget(self._result_label(key))

    # -- edits (announced, never sent from here) --------------------------------------------
    def _say(self, key: str, text: str, ok: bool = False) -> None:
        label = self.results[key]
        label.color = (0.5, 0.9, 0.5, 1) if ok else (1, 0.55, 0.55, 1)
        label.text = text
        label.height = ROW if text else 0

    def edit_state(self, key: str, path: str | None, old: Any, new: bool) -> None:
        if new:
            path = self.inputs[key + ":path"].text.strip()
            if not path:
                self._say(key, "enter a dotted path, e.g. mood.level")
                return
        try:
            value = json.loads(self.inputs[key].text)
        except json.JSONDecodeError as exc:
            self._say(key, f"not valid JSON: {exc.msg} (strings need quotes)")
            return
        problem = None if new else check_type(old, value)
        if problem:
            self._say(key, problem)
            return
        self._say(key, "sending...", ok=True)
        assert path is not None
        self.dispatch("on_intent", SetState(proto=self.persona, path=path, value=value), key)

    def define_method(self, key: str, name: str | None) -> None:
        if name is None:
            name = self.inputs[key + ":name"].text.strip()
        source = self.inputs[key].text
        if not name.isidentifier():
            self._say(key, "enter a method name (a Python identifier)")
            return
        self._say(key, "compiling...", ok=True)
        self.dispatch("on_intent", DefineMethod(proto=self.persona, name=name, source=source), key)

    def show_result(self, key: str, reply: Any) -> None:
        """The backend's answer to an edit: its error inline, or a confirmation."""
        if key not in self.results:
            return
        if isinstance(reply, DoesNotUnderstand):
            self.offer_forge(reply)
        if not key.startswith(("state:", "method:")):
            self._say(key, *describe_reply(reply))
        elif isinstance(reply, ErrorReply):
            where = ""
            if reply.detail.get("line") is not None:
                where = f"line {reply.detail['line']}, column {reply.detail.get('column')}: "
            self._say(key, f"{where}{reply.message}")
        else:
            self._say(key, f"applied (v{getattr(reply, 'version', '?')})", ok=True)

    def on_intent(self, command: Any, key: str) -> None:
        pass

    def on_moved(self) -> None:
        pass

    def on_meta_click(self, touch: Any) -> None:
        pass
