"""Behaviour mixins for morphs: dragging, and the meta-click that asks for a halo."""

from __future__ import annotations

from typing import Any

from kivy.clock import Clock
from kivy.properties import BooleanProperty

LONG_PRESS_S = 0.6


class DraggableBehavior:
    """Drag the widget with the primary button. Dispatches ``on_moved`` when a drag ends.

    Mix in before ``Widget``; the widget must register the ``on_moved`` event type.
    """

    #: True while a drag is in progress.
    dragging = BooleanProperty(False)

    def on_touch_down(self, touch: Any) -> bool:
        if not self.collide_point(*touch.pos):  # type: ignore[attr-defined]
            return False
        if getattr(touch, "button", "left") == "right":
            self.dispatch("on_meta_click", touch)  # type: ignore[attr-defined]
            return True
        if super().on_touch_down(touch):  # type: ignore[misc]
            return True  # a child (e.g. a button) took it
        if getattr(touch, "is_mouse_scrolling", False):
            return True  # the wheel over a morph never drags it nor pans the world
        touch.grab(self)
        touch.ud["drag_start"] = (tuple(self.pos), touch.pos)
        touch.ud["long_press"] = Clock.schedule_once(
            lambda _dt: self._long_press(touch), LONG_PRESS_S
        )
        return True

    def _long_press(self, touch: Any) -> None:
        if touch.grab_current is None and not self.dragging:
            touch.ungrab(self)
            self.dispatch("on_meta_click", touch)  # type: ignore[attr-defined]

    def on_touch_move(self, touch: Any) -> bool:
        if touch.grab_current is not self:
            return bool(super().on_touch_move(touch))  # type: ignore[misc]
        (x0, y0), (tx0, ty0) = touch.ud["drag_start"]
        dx, dy = touch.x - tx0, touch.y - ty0
        if not self.dragging and abs(dx) + abs(dy) > 4:
            self.dragging = True
            touch.ud["long_press"].cancel()
        if self.dragging:
            self.pos = (x0 + dx, y0 + dy)
        return True

    def on_touch_up(self, touch: Any) -> bool:
        if touch.grab_current is not self:
            return bool(super().on_touch_up(touch))  # type: ignore[misc]
        touch.ungrab(self)
        touch.ud["long_press"].cancel()
        if self.dragging:
            self.dragging = False
            self.dispatch("on_moved")
        return True


#: Ctrl + these keys zoom the world: = and + (and the keypad's +) in, - out, 0 back to 1. A
#: text field lets them through to the workbench (they type nothing with Ctrl held).
ZOOM_KEYS = {61: "in", 43: "in", 270: "in", 45: "out", 269: "out", 48: "reset", 256: "reset"}
