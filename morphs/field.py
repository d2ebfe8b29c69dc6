"""The workbench's text field: a ``TextInput`` that lets the zoom keys through.

A focused field gets the keys before the workbench does (Kivy binds the focused widget's
keyboard last, so it is called first), and under SDL Ctrl+= still arrives as text. Without
this, Ctrl+= typed "=" into an Inspector field instead of zooming the world.
"""

from __future__ import annotations

from typing import Any

from kivy.uix.textinput import TextInput

from morphs.behaviors import ZOOM_KEYS


class Field(TextInput):
    def keyboard_on_key_down(self, window: Any, keycode: Any, text: Any, modifiers: Any) -> bool:
        code = keycode[0] if isinstance(keycode, tuple | list) else None
        if "ctrl" in modifiers and code in ZOOM_KEYS:
            return False  # the workbench's zoom keys
        return bool(super().keyboard_on_key_down(window, keycode, text, modifiers))

    def keyboard_on_textinput(self, keyboard: Any, text: str) -> None:
        from kivy.core.window import Window

        if "ctrl" in Window.modifiers:
            return  # Ctrl+- and the like are the workbench's keys: they type nothing here
        super().keyboard_on_textinput(keyboard, text)
