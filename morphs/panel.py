"""Panel behaviour shared by every panel on the World (Inspector, Memory, Debugger, Learning,
Goals, Approvals, plots): a close box in the top-right corner.

The close box is drawn on the panel's ``canvas.after`` and hit-tested in ``on_touch_down``, so
it takes no place in the panel's own layout. Pressing it dispatches ``on_close``; the World
listens and removes the panel (``World.close_panel``), as Esc does for the front panel.
"""

from __future__ import annotations

from typing import Any

from kivy.core.text import Label as CoreLabel
from kivy.graphics import Color, Rectangle, RoundedRectangle

BOX = 20
INSET = 6
_GLYPH: Any = None


def _glyph() -> Any:
    """The "x" texture, rendered once for every close box."""
    global _GLYPH
    if _GLYPH is None:
        label = CoreLabel(text="\u00d7", font_size=16, color=(0.95, 0.95, 0.97, 1))
        label.refresh()
        _GLYPH = label.texture
    return _GLYPH


class ClosableBehavior:
    """Mix in first (before ``DraggableBehavior``); the class must list ``on_close`` in its
    ``__events__``."""

    def _init_close_box(self) -> None:
        with self.canvas.after:  # type: ignore[attr-defined]
            self._close_colour = Color(0.55, 0.22, 0.24, 0.95)
            self._close_bg = RoundedRectangle(radius=[4], size=(BOX, BOX))
            Color(1, 1, 1, 1)
            glyph = _glyph()
            self._close_x = Rectangle(texture=glyph, size=glyph.size)
        self.bind(pos=self._place_close_box, size=self._place_close_box)  # type: ignore[attr-defined]
        self._place_close_box()

    def close_box_rect(self) -> tuple[float, float, float, float]:
        """(x, y, w, h) of the close box in the parent's coordinates."""
        w: Any = self
        return (w.right - BOX - INSET, w.top - BOX - INSET, BOX, BOX)

    def _place_close_box(self, *_: Any) -> None:
        # canvas.after lies outside a RelativeLayout's own transform: parent coordinates.
        x, y, w, h = self.close_box_rect()
        self._close_bg.pos = (x, y)
        gw, gh = self._close_x.size
        self._close_x.pos = (x + (w - gw) / 2, y + (h - gh) / 2)

    def on_touch_down(self, touch: Any) -> bool:
        x, y, w, h = self.close_box_rect()
        inside = x <= touch.x <= x + w and y <= touch.y <= y + h
        if inside and getattr(touch, "button", None) in (None, "left"):
            self.dispatch("on_close")  # type: ignore[attr-defined]
            return True
        return bool(super().on_touch_down(touch))  # type: ignore[misc]

    def on_close(self) -> None:
        pass
