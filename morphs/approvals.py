"""ApprovalMorph: a codex amendment ALFRED proposed, as a diff, with approve and reject.

A persona's codex is the one thing the system may not change alone: the dialogue waits until
the user decides here (``on_intent(DecideAmendment)``), even across backend restarts.
"""

from __future__ import annotations

from typing import Any

from kivy.graphics import Color, Line, RoundedRectangle
from kivy.properties import StringProperty
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.label import Label
from kivy.uix.scrollview import ScrollView
from kivy.utils import escape_markup

from morphs.behaviors import DraggableBehavior
from morphs.field import Field
from morphs.panel import ClosableBehavior
from shared_api.commands import DecideAmendment
from shared_api.dialogue import ApprovalInfo


def diff_markup(diff: str) -> str:
    """A unified diff coloured line by line: additions green, removals red."""
    lines = []
    for line in diff.splitlines():
        text = escape_markup(line)
        if line.startswith("+") and not line.startswith("+++"):
            lines.append(f"[color=7be07b]{text}[/color]")
        elif line.startswith("-") and not line.startswith("---"):
            lines.append(f"[color=ff6b6b]{text}[/color]")
        else:
            lines.append(f"[color=8899aa]{text}[/color]")
    return "\n".join(lines)


class ApprovalMorph(ClosableBehavior, DraggableBehavior, BoxLayout):
    interrupt_id = StringProperty("")

    __events__ = ("on_intent", "on_moved", "on_meta_click", "on_close")

    def __init__(self, approval: ApprovalInfo, **kwargs: Any) -> None:
        kwargs.setdefault("size_hint", (None, None))
        kwargs.setdefault("size", (560, 380))
        super().__init__(orientation="vertical", padding=8, spacing=6, **kwargs)
        self.approval = approval
        self.interrupt_id = approval.interrupt_id
        with self.canvas.before:
            Color(0.12, 0.11, 0.1, 1)
            self._bg = RoundedRectangle(radius=[10])
            Color(0.9, 0.62, 0.3, 0.9)
            self._edge = Line(width=1.2)
        self.bind(pos=self._redraw, size=self._redraw)
        head = Label(
            markup=True,
            size_hint_y=None,
            height=48,
            halign="left",
            valign="top",
            text=(
                f"[b]Amendment proposed[/b]  {escape_markup(approval.proto)}."
                f"{approval.field}\n[color=b8c2cc]{escape_markup(approval.reason)}[/color]"
            ),
        )
        head.bind(size=lambda lbl, s: setattr(lbl, "text_size", s))
        self.add_widget(head)
        self.diff = Label(
            markup=True,
            halign="left",
            valign="top",
            font_size="12sp",
            size_hint_y=None,
            font_name="RobotoMono-Regular",
            text=diff_markup(approval.diff),
        )
        self.diff.bind(
            width=lambda lbl, w: setattr(lbl, "text_size", (w, None)),
            texture_size=lambda lbl, ts: setattr(lbl, "height", ts[1]),
        )
        scroll = ScrollView(do_scroll_x=False)
        scroll.add_widget(self.diff)
        self.add_widget(scroll)
        self.note = Field(
            hint_text="a note (optional)",
            multiline=False,
            size_hint_y=None,
            height=32,
            font_size="12sp",
        )
        self.add_widget(self.note)
        self._add_buttons()
        self.status = Label(markup=True, size_hint_y=None, height=22, font_size="12sp")
        self.add_widget(self.status)
        self._redraw()
        self._init_close_box()

    def _add_buttons(self) -> None:
        row = BoxLayout(size_hint_y=None, height=34, spacing=6)
        self.approve_button = Button(text="Approve", background_color=(0.35, 0.7, 0.4, 1))
        self.reject_button = Button(text="Reject", background_color=(0.8, 0.35, 0.35, 1))
        self.approve_button.bind(on_release=lambda _b: self.decide(True))
        self.reject_button.bind(on_release=lambda _b: self.decide(False))
        row.add_widget(self.approve_button)
        row.add_widget(self.reject_button)
        self.add_widget(row)

    def _redraw(self, *_: Any) -> None:
        self._bg.pos, self._bg.size = self.pos, self.size
        self._edge.rounded_rectangle = (self.x, self.y, self.width, self.height, 10)

    def decide(self, approve: bool) -> None:
        self.status.text = "[color=e0c36c]sending...[/color]"
        self.dispatch(
            "on_intent",
            DecideAmendment(interrupt_id=self.interrupt_id, approve=approve, note=self.note.text),
        )

    def show_decided(self, approval: ApprovalInfo) -> None:
        self.approve_button.disabled = self.reject_button.disabled = True
        version = f" (v{approval.version})" if approval.version is not None else ""
        colour = "7be07b" if approval.status == "approved" else "ff6b6b"
        self.status.text = f"[color={colour}]{approval.status}{version}[/color]"

    def show_error(self, message: str) -> None:
        self.status.text = f"[color=ff6b6b]{escape_markup(message)}[/color]"

    def on_intent(self, command: Any) -> None:
        pass

    def on_moved(self) -> None:
        pass

    def on_meta_click(self, touch: Any) -> None:
        pass
