"""PersonaMorph: a persona on the canvas. Renders its ``PersonaModel``; announces intent.

Plain ``Widget`` + canvas instructions (a ``Scatter`` per morph measured ~2x slower here).
The fill shifts from calm slate to red with the dissonance score; a glow pulses while the
persona's model is loaded or generating. The conversation scrolls (the wheel reads it back);
the text field at the bottom asks the persona: Enter sends (``on_ask``), Shift+Enter adds a
line, Esc cancels a running answer (``on_cancel_ask``); *copy* copies the last answer.
"""

from __future__ import annotations

import math
import random
import weakref
from typing import Any, ClassVar

from kivy.clock import Clock
from kivy.graphics import Color, Line, RoundedRectangle
from kivy.metrics import sp
from kivy.properties import NumericProperty, ObjectProperty
from kivy.uix.button import Button
from kivy.uix.label import Label
from kivy.uix.scrollview import ScrollView
from kivy.uix.widget import Widget
from kivy.utils import escape_markup

from morphs.behaviors import DraggableBehavior
from morphs.field import Field
from ui.store import PersonaModel

CALM = (0.16, 0.20, 0.27)
STATUS_HZ = 4  # status/model label refreshes per second, at most
TALK_HZ = 2  # conversation label refreshes per second, at most
PULSE_HZ = 20
RENDERS_PER_FRAME = 2  # throttled label refreshes per frame, all morphs together
CONFLICT = (0.55, 0.12, 0.12)
STATUS_COLOURS = {
    "idle": "9aa5b1",
    "queued": "e0c36c",
    "loading": "6cb6e0",
    "streaming": "7be07b",
    "error": "ff6b6b",
}


def dissonance_colour(level: float) -> tuple[float, float, float]:
    t = min(1.0, max(0.0, level))
    return tuple(c + (d - c) * t for c, d in zip(CALM, CONFLICT, strict=True))  # type: ignore[return-value]


INPUT_H = 34
COPY_W = 46


def last_answer(conversation: str, name: str) -> str:
    """The persona's latest answer in its conversation ("" when it has not answered)."""
    marks = [conversation.rfind(f"\n{name}: "), conversation.rfind(f"\n{name} (")]
    start = max(marks)
    if start < 0:
        return ""
    answer = conversation[start + 1 :].split(": ", 1)[1]
    for end in ("\nYou: ", "\n  sources: "):
        answer = answer.split(end, 1)[0]
    return answer.strip()


class AskInput(Field):
    """The question field: Enter sends, Shift+Enter is a new line, Esc cancels."""

    __events__ = ("on_send", "on_escape")

    def keyboard_on_key_down(self, window: Any, keycode: Any, text: Any, modifiers: Any) -> bool:
        key = keycode[1] if isinstance(keycode, tuple | list) else keycode
        if key in ("enter", "numpadenter") and "shift" not in modifiers:
            question = str(getattr(self, "text", "")).strip()
            if question:
                self.text = ""
                self.dispatch("on_send", question)
            return True
        if key == "escape":
            self.dispatch("on_escape")
            return True
        return bool(super().keyboard_on_key_down(window, keycode, text, modifiers))

    def on_send(self, text: str) -> None:
        pass

    def on_escape(self) -> None:
        pass


class TalkScroll(ScrollView):
    """The conversation's scroll view, whose bar turns inactive at once.

    Kivy's ScrollView fades its bar with an ``Animation`` half a second after every scroll,
    move or resize. A World opened, zoomed or scrolled moves every morph at once, and each
    morph's fade then updates its canvas on every frame for half a second: with 200 morphs,
    most of those frames' Python time (measured). No fade, no per-frame work."""

    def _bind_inactive_bar_color(self, *_: Any) -> None:
        self.funbind("bar_color", self._change_bar_color)
        self.fbind("bar_inactive_color", self._change_bar_color)
        self._bar_color = self.bar_inactive_color


class PersonaMorph(DraggableBehavior, Widget):
    model: PersonaModel = ObjectProperty(None, rebind=True)
    #: 0..1 glow strength, animated while ``model.busy``.
    glow = NumericProperty(0.0)
    #: The World's zoom: text and spacing scale with it (the World scales pos and size).
    zoom = NumericProperty(1.0)
    #: The World zooms persona morphs (and plots), not panels.
    zoomable = True

    __events__ = ("on_moved", "on_meta_click", "on_ask", "on_cancel_ask")

    def __init__(self, model: PersonaModel, **kwargs: Any) -> None:
        kwargs.setdefault("size_hint", (None, None))
        kwargs.setdefault("size", (380, 300))
        super().__init__(**kwargs)
        self.model = model
        # Only 1 px lines and filled shapes: a translucent Line wider than 1 px makes Kivy
        # clear the stencil buffer, twice per morph per frame.
        with self.canvas.before:
            self._glow_colour = Color(0.45, 0.8, 1.0, 0.0)
            self._glow = RoundedRectangle(radius=[15])
            self._fill_colour = Color(*CALM, 1)
            self._fill = RoundedRectangle(radius=[12])
            self._edge_colour = Color(0.42, 0.46, 0.52, 1)
            self._edge = Line(width=1)
        self._build_widgets(model)
        # Re-rendering label textures is the costly part of a frame, and streamed tokens and
        # status changes arrive many times a second for many morphs at once. So a morph
        # refreshes its text at most TEXT_HZ times a second, with its own random phase, which
        # spreads the work of a burst of events for many morphs over several frames.
        # The conversation (a word-wrapped label) is the dearest, so it refreshes least often.
        phase = 1 + random.random()  # noqa: S311 - jitter, not security
        self._header_soon = Clock.create_trigger(
            lambda _dt: _Renders.ask(self, "header"), phase / STATUS_HZ
        )
        self._talk_soon = Clock.create_trigger(
            lambda _dt: _Renders.ask(self, "talk"), phase / TALK_HZ
        )
        #: False while the World has taken the morph off the screen (``set_shown``): events
        #: then only mark what is stale, and ``set_shown(True)`` catches up.
        self.shown = True
        self._stale: set[str] = set()
        self.bind(pos=self._moved, size=self._moved)
        model.bind(
            name=lambda *_: self._refresh("header", self._render_header),
            role=lambda *_: self._refresh("header", self._render_header),
            model=lambda *_: self._refresh("header", self._header_soon),
            status=lambda *_: self._refresh("header", self._header_soon),
            conversation=lambda *_: self._refresh("talk", self._talk_soon),
            dissonance=lambda *_: self._refresh("fill", self._render_fill),
            busy=self._on_busy,
        )
        if self.zoom != 1:
            self.on_zoom(self, self.zoom)
        self._layout()
        self._render_header()
        self._render_talk()
        self._render_fill()

    def _build_widgets(self, model: PersonaModel) -> None:
        """The header, the scrolling conversation, the text field and the copy button."""
        # Name, role, status and model: one markup label, so one texture per morph.
        self._header = Label(markup=True, halign="left", valign="top", font_size="15sp")
        self._talk = Label(
            halign="left",
            valign="top",
            font_size="12sp",
            color=(0.92, 0.94, 0.97, 1),
            size_hint_y=None,
        )
        self._talk.bind(texture_size=self._talk_height)
        self._scroll = TalkScroll(do_scroll_x=False, bar_width=6, scroll_type=["bars"], scroll_y=0)
        self._scroll.add_widget(self._talk)
        self.input = AskInput(
            hint_text=f"ask {model.name}  (Enter sends, Shift+Enter: new line, Esc: cancel)",
            multiline=True,
            font_size="12sp",
            background_color=(0.1, 0.12, 0.16, 1),
            foreground_color=(0.93, 0.95, 0.98, 1),
            hint_text_color=(0.55, 0.6, 0.67, 1),
            cursor_color=(0.9, 0.9, 0.95, 1),
        )
        self.input.bind(
            on_send=lambda _i, text: self.dispatch("on_ask", text),
            on_escape=lambda _i: self.dispatch("on_cancel_ask"),
        )
        self.copy_button = Button(
            text="copy",
            font_size="11sp",
            background_normal="",
            background_color=(0.22, 0.27, 0.35, 1),
        )
        self.copy_button.bind(on_release=lambda _b: self.copy_answer())
        for widget in (self._header, self._scroll, self.input, self.copy_button):
            self.add_widget(widget)

    # -- off-screen -------------------------------------------------------------------------
    def _refresh(self, part: str, render: Any) -> None:
        """Render ``part`` now (or soon) when shown; only remember it is stale when not."""
        if self.shown:
            render()
        else:
            self._stale.add(part)

    def _moved(self, *_: Any) -> None:
        self._refresh("layout", self._layout)

    def set_shown(self, shown: bool) -> None:
        """The World shows or hides the morph as it scrolls in or out of view. Hidden, it is
        neither drawn (the World takes its canvas out) nor updated; shown again, it catches
        up with the latest state at once."""
        if shown == self.shown:
            return
        self.shown = shown
        if not shown:
            _Pulse.leave(self)
            self.glow = 0.0
            return
        if self.model.busy:
            _Pulse.join(self)
        stale, self._stale = self._stale, set()
        if "layout" in stale:
            self._layout()
        if "header" in stale:
            self._render_header()
        if "talk" in stale:
            self._render_talk()
        if "fill" in stale:
            self._render_fill()

    # -- rendering --------------------------------------------------------------------------
    def _origin(self) -> tuple[float, float]:
        """Where the canvas instructions start: the morph's position (a widget that draws in
        local coordinates, like a Scatter, returns (0, 0))."""
        return self.x, self.y

    def _layout(self, *_: Any) -> None:
        (x, y), w, h = self._origin(), self.width, self.height
        self._fill.pos, self._fill.size = (x, y), (w, h)
        self._edge.rounded_rectangle = (x, y, w, h, 12)
        self._place_glow()
        z = float(self.zoom)
        pad, copy_w, input_h = 10 * z, COPY_W * z, INPUT_H * z
        self._header.pos = (x + pad, y + h - 78 * z)
        self._header.size = (max(0, w - 2 * pad - copy_w), 70 * z)
        self._header.text_size = self._header.size
        self.copy_button.pos = (x + w - pad - copy_w + 4 * z, y + h - 74 * z)
        self.copy_button.size = (copy_w - 4 * z, 22 * z)
        self.input.pos, self.input.size = (x + pad, y + pad), (max(0, w - 2 * pad), input_h)
        talk_y = y + pad + input_h + 4 * z
        self._scroll.pos = (x + pad, talk_y)
        self._scroll.size = (max(0, w - 2 * pad), max(0, y + h - 84 * z - talk_y))
        self._talk.text_size = (self._scroll.width, None)

    def on_zoom(self, _instance: Any, zoom: float) -> None:
        """Text scales with the World's zoom (each label re-renders once)."""
        if not hasattr(self, "_header"):
            return  # set before the widgets exist: ``__init__`` lays them out with it
        self._header.font_size = sp(15) * zoom
        self._talk.font_size = self.input.font_size = sp(12) * zoom
        self.copy_button.font_size = sp(11) * zoom
        self._refresh("header", self._render_header)
        self._moved()

    def _render_header(self, *_: Any) -> None:
        """Name and role, then status and model, as one texture (status and model changes
        are throttled, see ``__init__``). The label re-renders only when the text changes."""
        m = self.model
        colour = STATUS_COLOURS.get(m.status, "ffffff")
        z = float(self.zoom)

        def size(points: float) -> int:
            return max(1, round(float(sp(points)) * z))

        self._header.text = (
            f"[b]{escape_markup(m.name)}[/b]  "
            f"[size={size(11)}][color=b8c2cc]{escape_markup(m.role)}[/color][/size]\n"
            f"[size={size(6)}] [/size]\n"
            f"[size={size(12)}][color={colour}]{m.status}[/color]  "
            f"[color=8899aa]{escape_markup(m.model or 'model: ?')}[/color][/size]"
        )

    def _render_talk(self, *_: Any) -> None:
        """The whole conversation, kept scrolled to its end unless the user scrolled up to
        read back (throttled, see ``__init__``)."""
        self._follow = self._scroll.scroll_y <= 0.01 or self._talk.height <= self._scroll.height
        self._talk.text = self.model.conversation.strip("\n")

    def _talk_height(self, label: Label, size: tuple[float, float]) -> None:
        label.height = size[1]
        if getattr(self, "_follow", True):
            self._scroll.scroll_y = 0

    def copy_answer(self) -> str:
        """Copy the persona's last answer to the clipboard; returns it."""
        from kivy.core.clipboard import Clipboard

        answer = last_answer(self.model.conversation, self.model.name)
        if answer:
            Clipboard.copy(answer)
        self.copy_button.text = "copied" if answer else "none"
        Clock.schedule_once(lambda _dt: setattr(self.copy_button, "text", "copy"), 1.5)
        return answer

    def _render_fill(self, *_: Any) -> None:
        self._fill_colour.rgb = dissonance_colour(self.model.dissonance)

    def _on_busy(self, _model: Any, busy: bool) -> None:
        if busy and self.shown:  # hidden, it joins when shown again (``set_shown``)
            _Pulse.join(self)
        else:
            _Pulse.leave(self)
            self.glow = 0.0

    def on_glow(self, _instance: Any, value: float) -> None:
        self._glow_colour.a = 0.8 * value
        if (value > 0) != (self._glow.size[0] > 0):
            self._place_glow()

    def _place_glow(self) -> None:
        """The glow's rectangle, empty while it does not glow (a transparent fill still costs
        its pixels to a software rasterizer)."""
        (x, y), w, h = self._origin(), self.width, self.height
        if self.glow > 0:
            self._glow.pos, self._glow.size = (x - 4, y - 4), (w + 8, h + 8)
        else:
            self._glow.pos, self._glow.size = (x, y), (0, 0)

    # -- events -----------------------------------------------------------------------------
    def on_moved(self) -> None:
        pass

    def on_meta_click(self, touch: Any) -> None:
        pass

    def on_ask(self, text: str) -> None:
        pass

    def on_cancel_ask(self) -> None:
        pass


class _Renders:
    """At most RENDERS_PER_FRAME throttled text refreshes per frame, for every morph
    together, first asked first served: on a slow frame (a software rasterizer, a loaded
    machine) the refreshes that fell due meanwhile spread over the next frames instead of
    all landing in one."""

    queue: ClassVar[dict[tuple[PersonaMorph, str], None]] = {}
    now: ClassVar[Any] = None  # a trigger for this frame, and one for the next
    later: ClassVar[Any] = None

    @classmethod
    def ask(cls, morph: PersonaMorph, part: str) -> None:
        cls.queue[(morph, part)] = None
        if cls.now is None:
            cls.now = Clock.create_trigger(cls.run, -1)  # before this frame is drawn
            cls.later = Clock.create_trigger(cls.run, 0.001)  # positive: not this frame
        cls.now()

    @classmethod
    def run(cls, _dt: float) -> None:
        for _ in range(min(RENDERS_PER_FRAME, len(cls.queue))):
            morph, part = next(iter(cls.queue))
            del cls.queue[(morph, part)]
            render = morph._render_header if part == "header" else morph._render_talk
            morph._refresh(part, render)  # off-screen meanwhile: only marked stale
        if cls.queue:
            cls.later()


class _Pulse:
    """One shared clock for every busy morph's glow, instead of one interval per morph."""

    morphs: ClassVar[weakref.WeakSet[PersonaMorph]] = weakref.WeakSet()
    event: ClassVar[Any] = None

    @classmethod
    def join(cls, morph: PersonaMorph) -> None:
        cls.morphs.add(morph)
        if cls.event is None:
            cls.event = Clock.schedule_interval(cls.tick, 1 / PULSE_HZ)

    @classmethod
    def leave(cls, morph: PersonaMorph) -> None:
        cls.morphs.discard(morph)

    @classmethod
    def tick(cls, _dt: float) -> bool:
        if not cls.morphs:
            cls.event = None
            return False  # unschedules the interval until a morph is busy again
        level = 0.5 + 0.5 * math.sin(Clock.get_boottime() * 4)
        for morph in list(cls.morphs):
            if morph.shown:  # an off-screen morph is not updated (see ``set_shown``)
                morph.glow = level
        return True
