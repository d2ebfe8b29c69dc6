"""Shortened labels and their tooltips.

``ellipsize`` cuts a text to a width in characters, at a word where it can, and ends it in
"…". ``set_tooltip`` gives a widget its full text: resting the mouse on it for a moment shows
the text in a small box beside the pointer (one box for the whole window).
"""

from __future__ import annotations

import weakref
from typing import Any, ClassVar

from kivy.clock import Clock
from kivy.core.window import Window
from kivy.graphics import Color, Rectangle
from kivy.uix.label import Label

ELLIPSIS = "\u2026"
DELAY_S = 0.5


def ellipsize(text: str, max_chars: int) -> str:
    """``text`` if it fits in ``max_chars``, else its start ending in "…"."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text[: max(1, max_chars - 1)]
    space = cut.rfind(" ")
    if space >= max_chars // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:.-") + ELLIPSIS


class _Tips:
    widgets: ClassVar[weakref.WeakKeyDictionary[Any, str]] = weakref.WeakKeyDictionary()
    box: ClassVar[Label | None] = None
    bound: ClassVar[bool] = False
    check: ClassVar[Any] = None

    @classmethod
    def ensure_bound(cls) -> None:
        if not cls.bound:
            cls.bound = True
            cls.check = Clock.create_trigger(cls._show, DELAY_S)
            Window.bind(mouse_pos=cls._moved)

    @classmethod
    def _moved(cls, _window: Any, _pos: Any) -> None:
        cls._hide()
        if cls.widgets and cls.check is not None:
            cls.check()

    @classmethod
    def _under(cls, x: float, y: float) -> tuple[Any, str] | None:
        for widget, text in list(cls.widgets.items()):
            if widget.get_root_window() is None or not text:
                continue
            wx, wy = widget.to_window(*widget.pos)
            if wx <= x <= wx + widget.width and wy <= y <= wy + widget.height:
                return widget, text
        return None

    @classmethod
    def _show(cls, *_: Any) -> None:
        x, y = Window.mouse_pos
        hit = cls._under(x, y)
        if hit is None:
            return
        box = cls.box = Label(text=hit[1], font_size="12sp", size_hint=(None, None), halign="left")
        box.text_size = (min(520, Window.width - 20), None)
        box.texture_update()
        box.size = (box.texture_size[0] + 12, box.texture_size[1] + 8)
        with box.canvas.before:
            Color(0.2, 0.23, 0.3, 0.97)
            bg = Rectangle(pos=box.pos, size=box.size)
        box.bind(pos=lambda b, p: setattr(bg, "pos", p))
        box.pos = (min(x + 12, Window.width - box.width), max(0, y - box.height - 12))
        Window.add_widget(box)

    @classmethod
    def _hide(cls) -> None:
        if cls.box is not None:
            Window.remove_widget(cls.box)
            cls.box = None


def set_tooltip(widget: Any, text: str) -> None:
    """Show ``text`` when the mouse rests on ``widget`` ("" removes the tooltip)."""
    _Tips.ensure_bound()
    if text:
        _Tips.widgets[widget] = text
    else:
        _Tips.widgets.pop(widget, None)
    widget.tooltip = text


def shown_tooltip() -> str:
    """The text of the tooltip on screen ("" when none is): for tests."""
    return _Tips.box.text if _Tips.box is not None else ""
