"""HaloMorph: the ring of handles a meta-click (right-click, or long-press) opens on a morph.

Move and resize act on the target widget directly (pure UI geometry). Every other handle
announces ``on_action(name)`` and the app decides what it means (inspect, duplicate on the
backend, dismiss with confirmation, debug).
"""

from __future__ import annotations

from typing import Any

from kivy.graphics import Color, Ellipse, Line
from kivy.properties import BooleanProperty, ObjectProperty, StringProperty
from kivy.uix.label import Label
from kivy.uix.widget import Widget

MARGIN = 22
HANDLE = 30
MIN_SIZE = (160, 120)

#: name -> (label, colour, anchor as fractions of the halo box)
HANDLES: dict[str, tuple[str, tuple[float, float, float], tuple[float, float]]] = {
    "dismiss": ("x", (0.85, 0.3, 0.3), (0.0, 1.0)),
    "move": ("M", (0.35, 0.6, 0.9), (0.35, 1.0)),
    "duplicate": ("D", (0.4, 0.75, 0.45), (0.65, 1.0)),
    "inspect": ("I", (0.8, 0.65, 0.3), (1.0, 1.0)),
    "debug": ("B", (0.55, 0.5, 0.6), (0.0, 0.0)),
    "resize": ("R", (0.6, 0.6, 0.65), (1.0, 0.0)),
}


class HaloHandle(Label):
    name = StringProperty("")
    #: False for actions not available yet (drawn dimmed; pressing explains why).
    available = BooleanProperty(True)

    def __init__(self, name: str, **kwargs: Any) -> None:
        label, colour, _ = HANDLES[name]
        super().__init__(
            text=label, bold=True, size_hint=(None, None), size=(HANDLE, HANDLE), **kwargs
        )
        self.name = name
        with self.canvas.before:
            self._colour = Color(*colour, 0.95)
            self._disc = Ellipse()
        self.bind(pos=self._redraw, size=self._redraw, available=self._redraw)

    def _redraw(self, *_: Any) -> None:
        self._disc.pos, self._disc.size = self.pos, self.size
        self._colour.a = 0.95 if self.available else 0.35


class HaloMorph(Widget):
    target: Any = ObjectProperty(None)

    __events__ = ("on_action",)

    def __init__(self, target: Widget, *, unavailable: tuple[str, ...] = (), **kwargs: Any) -> None:
        kwargs.setdefault("size_hint", (None, None))
        super().__init__(**kwargs)
        self.target = target
        with self.canvas.before:
            Color(1, 1, 1, 0.5)
            self._ring = Line(width=1.2, dash_length=6, dash_offset=4)
        self.handles = {
            name: HaloHandle(name, available=name not in unavailable) for name in HANDLES
        }
        for handle in self.handles.values():
            self.add_widget(handle)
        target.bind(pos=self._follow, size=self._follow)
        self._follow()

    def _follow(self, *_: Any) -> None:
        t = self.target
        self.pos = (t.x - MARGIN, t.y - MARGIN)
        self.size = (t.width + 2 * MARGIN, t.height + 2 * MARGIN)
        self._ring.rectangle = (self.x, self.y, self.width, self.height)
        area = self.parent
        for name, handle in self.handles.items():
            fx, fy = HANDLES[name][2]
            x, y = self.x + fx * self.width, self.y + fy * self.height
            if area is not None and area.width > HANDLE and area.height > HANDLE:
                # a morph at the edge of the world keeps every handle within reach
                x = min(max(x, area.x + HANDLE / 2), area.right - HANDLE / 2)
                y = min(max(y, area.y + HANDLE / 2), area.top - HANDLE / 2)
            handle.center = (x, y)

    def on_parent(self, *_: Any) -> None:
        self._follow()

    def detach(self) -> None:
        self.target.unbind(pos=self._follow, size=self._follow)

    # -- input ------------------------------------------------------------------------------
    def handle_at(self, x: float, y: float) -> HaloHandle | None:
        for handle in self.handles.values():
            if handle.collide_point(x, y):
                return handle
        return None

    def collide_point(self, x: float, y: float) -> bool:
        return self.handle_at(x, y) is not None

    def on_touch_down(self, touch: Any) -> bool:
        handle = self.handle_at(*touch.pos)
        if handle is None:
            return False
        if handle.name in ("move", "resize") and handle.available:
            touch.grab(self)
            touch.ud["halo"] = (
                handle.name,
                tuple(self.target.pos),
                tuple(self.target.size),
                touch.pos,
            )
        else:
            self.dispatch("on_action", handle.name)
        return True

    def on_touch_move(self, touch: Any) -> bool:
        if touch.grab_current is not self:
            return False
        name, (x0, y0), (w0, h0), (tx, ty) = touch.ud["halo"]
        dx, dy = touch.x - tx, touch.y - ty
        if name == "move":
            self.target.pos = (x0 + dx, y0 + dy)
        else:  # resize from the bottom-right corner: the top edge stays put
            w = max(MIN_SIZE[0], w0 + dx)
            h = max(MIN_SIZE[1], h0 - dy)
            self.target.size = (w, h)
            self.target.y = y0 + h0 - h
        return True

    def on_touch_up(self, touch: Any) -> bool:
        if touch.grab_current is not self:
            return False
        touch.ungrab(self)
        name = touch.ud["halo"][0]
        self.dispatch("on_action", "moved" if name == "move" else "resized")
        return True

    def on_action(self, name: str) -> None:
        pass
