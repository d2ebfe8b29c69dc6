"""Small pop-up choices: the world menu, and the confirmation before a backend delete."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kivy.graphics import Color, RoundedRectangle
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.label import Label
from kivy.uix.popup import Popup
from kivy.uix.widget import Widget

from morphs.tooltip import ellipsize, set_tooltip

ITEM_H = 30
ITEM_CHARS = 28  # what fits on a menu line at 13sp; longer entries end in "…"


class MenuMorph(BoxLayout):
    """A column of buttons at a point; any choice (or a click elsewhere) closes it."""

    def __init__(self, items: list[tuple[str, Callable[[], Any]]], **kwargs: Any) -> None:
        super().__init__(
            orientation="vertical",
            size_hint=(None, None),
            width=220,
            height=ITEM_H * len(items) + 8,
            padding=4,
            spacing=0,
            **kwargs,
        )
        with self.canvas.before:
            Color(0.12, 0.14, 0.18, 0.98)
            self._bg = RoundedRectangle(radius=[6])
        self.bind(pos=self._redraw, size=self._redraw)
        self.buttons: dict[str, Button] = {}
        for text, action in items:
            shown = ellipsize(text, ITEM_CHARS)
            button = Button(
                text=shown,
                font_size="13sp",
                background_normal="",
                background_color=(0.18, 0.21, 0.27, 1),
            )
            button.bind(on_release=lambda _b, act=action: self._choose(act))
            if shown != text:
                set_tooltip(button, text)
            self.buttons[text] = button
            self.add_widget(button)
        self._redraw()

    def _redraw(self, *_: Any) -> None:
        self._bg.pos, self._bg.size = self.pos, self.size

    def _choose(self, action: Callable[[], Any]) -> None:
        self.close()
        action()

    def close(self) -> None:
        if self.parent is not None:
            self.parent.remove_widget(self)

    def on_touch_down(self, touch: Any) -> bool:
        if not self.collide_point(*touch.pos):
            self.close()
            return False
        super().on_touch_down(touch)
        return True


def open_menu(
    parent: Widget, pos: tuple[float, float], items: list[tuple[str, Callable[[], Any]]]
) -> MenuMorph:
    for child in list(parent.children):
        if isinstance(child, MenuMorph):
            child.close()
    menu = MenuMorph(items)
    x = min(pos[0], parent.right - menu.width)
    y = max(parent.y, pos[1] - menu.height)
    menu.pos = (x, y)
    parent.add_widget(menu)
    return menu


PANEL = (0.11, 0.13, 0.17, 1)
BUTTON = (0.18, 0.21, 0.27, 1)
ACCENT = (0.42, 0.71, 0.88, 1)


def themed_popup(title: str, content: Widget, size: tuple[float, float]) -> Popup:
    """A pop-up in the workbench's own colours (not Kivy's stock grey); its buttons should
    come from ``themed_button``."""
    return Popup(
        title=title,
        content=content,
        size_hint=(None, None),
        size=size,
        background="",
        background_color=PANEL,
        separator_color=ACCENT,
        title_color=(0.92, 0.94, 0.97, 1),
        overlay_color=(0, 0, 0, 0.45),
    )


def themed_button(text: str, **kwargs: Any) -> Button:
    kwargs.setdefault("font_size", "13sp")
    return Button(text=text, background_normal="", background_color=BUTTON, **kwargs)


def confirm_dismiss(
    name: str, *, on_close: Callable[[], Any], on_delete: Callable[[], Any]
) -> Popup:
    """Closing a morph is harmless; deleting the persona from the image needs a second click."""
    box = BoxLayout(orientation="vertical", spacing=6, padding=6)
    box.add_widget(Label(text=f"Dismiss {name}?", size_hint_y=None, height=28))
    popup = themed_popup("Dismiss", box, (380, 230))
    for text, action in (
        ("Close the morph (the persona lives on)", on_close),
        (f"Delete {name} from the image", on_delete),
        ("Cancel", lambda: None),
    ):
        button = themed_button(text, size_hint_y=None, height=36)
        button.bind(on_release=lambda _b, act=action: (popup.dismiss(), act()))
        box.add_widget(button)
    popup.open()
    return popup
