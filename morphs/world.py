"""The World: the canvas that holds the morphs.

It hit-tests file drops and background clicks and *announces* what the user meant, as Kivy
events: ``on_intent(command)`` for something the backend should do, ``on_notice(text)`` for
something the user should read. The app decides what to do with them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kivy.clock import Clock
from kivy.core.window import Window
from kivy.graphics import Color, Rectangle
from kivy.properties import BooleanProperty, NumericProperty, ObjectProperty
from kivy.uix.widget import Widget

from morphs.halo import HaloMorph
from morphs.persona import PersonaMorph
from shared_api.commands import AskDocument, AskPersona, Cancel

DROP_HINT = "Drop documents onto a persona to send them to it."
ZOOM_MIN, ZOOM_MAX = 0.4, 2.5
ZOOM_STEP = 1.25  # per Ctrl+wheel notch or Ctrl+= / Ctrl+-


def clamp_zoom(zoom: float) -> float:
    return min(ZOOM_MAX, max(ZOOM_MIN, round(float(zoom), 4)))


class World(Widget):
    #: Largest document accepted by a drop, in bytes.
    max_document_bytes = NumericProperty(5 * 1024 * 1024)
    #: How many characters of a document go into the persona's prompt.
    prompt_budget_chars = NumericProperty(6000)

    #: The open halo, if any.
    halo: Any = ObjectProperty(None, allownone=True)
    #: Halo handles drawn dimmed because their feature has not landed yet.
    unavailable_handles: tuple[str, ...] = ()
    #: Move every morph added into the visible area (the workbench sets it; a World used
    #: as a plain container, e.g. by a benchmark larger than the window, leaves it off).
    keep_in_view = BooleanProperty(False)
    #: Pixels the world pans per wheel notch over the empty canvas.
    pan_step = NumericProperty(60)
    #: The world's zoom: persona morphs and plots are drawn ``zoom`` times their size
    #: (their text too); panels, menus and the halo keep theirs, so they stay readable.
    zoom = NumericProperty(1.0)
    #: Take persona morphs outside the window off the draw tree and stop updating them
    #: until they scroll back into view (a benchmark's baseline turns it off).
    cull_offscreen = BooleanProperty(True)

    __events__ = ("on_intent", "on_notice", "on_background_click", "on_halo_action")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        with self.canvas.before:
            Color(0.07, 0.08, 0.1, 1)
            self._bg = Rectangle()
        self.bind(pos=self._redraw, size=self._redraw)
        self._redraw()
        #: Persona morphs whose canvas is out of the draw tree (off-screen).
        self._hidden: set[PersonaMorph] = set()
        self._view = (0.0, 0.0, 0.0, 0.0)
        #: Taken off its parent: nothing of it drawn or updated (``_parent_changed``).
        self._parked = False
        self._cull_all_soon = Clock.create_trigger(lambda _dt: self.cull_all(), -1)
        self.bind(pos=self._view_changed, size=self._view_changed, parent=self._parent_changed)
        self.bind(cull_offscreen=self._view_changed)
        Window.bind(size=self._view_changed)

    def _redraw(self, *_: Any) -> None:
        self._bg.pos, self._bg.size = self.pos, self.size

    # -- morphs -----------------------------------------------------------------------------
    def persona_morphs(self) -> list[PersonaMorph]:
        return [c for c in self.children if isinstance(c, PersonaMorph)]

    def morph_at(self, x: float, y: float) -> Widget | None:
        """The topmost morph under (x, y) in window coordinates."""
        for child in self.children:  # children[0] is drawn last, i.e. on top
            if child.collide_point(x, y):
                return child
        return None

    def panels(self) -> list[Widget]:
        """The closable panels, front first."""
        return [c for c in self.children if "on_close" in getattr(c, "__events__", ())]

    def add_under_panels(self, widget: Widget) -> None:
        """Add ``widget`` under every open panel (still above the rest): what arrives late
        must not cover a panel the user opened meanwhile."""
        index = max((self.children.index(p) + 1 for p in self.panels()), default=0)
        self.add_widget(widget, index=index)  # children[0] is drawn last, i.e. on top

    def add_widget(self, widget: Widget, *args: Any, **kwargs: Any) -> None:
        if self.keep_in_view and widget is not self.halo:
            self.clamp(widget)
        if self._hidden and (args or kwargs):
            self._show_all()  # Kivy places a widget by its neighbours' canvases
        super().add_widget(widget, *args, **kwargs)
        if getattr(widget, "zoomable", False):
            widget.zoom = self.zoom  # its geometry is already the zoomed one (a layout's)
        if isinstance(widget, PersonaMorph):
            widget.fbind("pos", self._cull_one)
            widget.fbind("size", self._cull_one)
            self._view = self.visible_area()
            self._cull_one(widget)
        if args or kwargs:
            self._cull_all_soon()
        events = getattr(widget, "__events__", ())
        if "on_meta_click" in events and not widget.get_property_observers("on_meta_click"):
            widget.bind(on_meta_click=lambda morph, _touch: self.open_halo(morph))
        if "on_close" in events and not widget.get_property_observers("on_close"):
            widget.bind(on_close=self.close_panel)
        if isinstance(widget, PersonaMorph) and not widget.get_property_observers("on_ask"):
            widget.bind(on_ask=self._ask, on_cancel_ask=self._cancel_ask)

    def _ask(self, morph: PersonaMorph, text: str) -> None:
        self.dispatch("on_intent", AskPersona(proto=morph.model.name, text=text))

    def _cancel_ask(self, morph: PersonaMorph) -> None:
        request = morph.model.pending_request or morph.model.streaming_request
        if request:
            self.dispatch("on_intent", Cancel(request_id=request))
            self.dispatch("on_notice", f"cancelling {morph.model.name}'s answer")
        else:
            morph.input.focus = False

    def remove_widget(self, widget: Widget, *args: Any, **kwargs: Any) -> None:
        if isinstance(widget, PersonaMorph) and widget.parent is self:
            widget.funbind("pos", self._cull_one)
            widget.funbind("size", self._cull_one)
            self._hidden.discard(widget)  # Kivy skips a canvas that is not in the tree
            super().remove_widget(widget, *args, **kwargs)
            widget.set_shown(True)
            return
        super().remove_widget(widget, *args, **kwargs)

    # -- what is on the screen ----------------------------------------------------------------
    def _view_changed(self, *_: Any) -> None:
        self._cull_all_soon()

    def _parent_changed(self, *_: Any) -> None:
        """Taken off its parent, the World parks: none of its persona morphs is drawn or
        updated (no glow, no text refresh) until it is back. A removed World otherwise lived
        on until a full garbage collection, its morphs still pulsing at every tick (measured:
        142 of them, making the next frames slower)."""
        self._parked = self.parent is None
        if self._parked:
            self.cull_all()  # every morph hidden: ``_cull_one`` shows none while parked
        else:
            self._cull_all_soon()

    def visible_area(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of the window, in the morphs' coordinates."""
        left, bottom = self.to_widget(0, 0)
        right, top = self.to_widget(*Window.size)
        return left, bottom, right, top

    def cull_all(self) -> None:
        """Show the persona morphs in the window, hide the others (see ``_cull_one``)."""
        self._view = self.visible_area()
        for child in self.children:
            if isinstance(child, PersonaMorph):
                self._cull_one(child)

    def _cull_one(self, morph: PersonaMorph, *_: Any) -> None:
        """Take ``morph``'s canvas out of the draw tree when it lies outside the window (and
        stop its updates); put it back, caught up and in its place, when it comes back."""
        if morph.parent is not self:
            return
        left, bottom, right, top = self._view
        margin = 8  # the glow
        shown = not self._parked and (
            not self.cull_offscreen
            or (
                morph.x - margin < right
                and morph.right + margin > left
                and morph.y - margin < top
                and morph.top + margin > bottom
            )
        )
        if shown and morph in self._hidden:
            self._hidden.discard(morph)
            self._insert_canvas(morph)
            morph.set_shown(True)
        elif not shown and morph not in self._hidden:
            self._hidden.add(morph)
            self.canvas.remove(morph.canvas)
            morph.set_shown(False)

    def _insert_canvas(self, morph: Widget) -> None:
        """Put ``morph``'s canvas back where its place among the children draws it."""
        index = self.children.index(morph)
        for above in reversed(self.children[:index]):  # the next one drawn after it
            at = self.canvas.indexof(above.canvas)
            if at >= 0:
                self.canvas.insert(at, morph.canvas)
                return
        self.canvas.add(morph.canvas)

    def _show_all(self) -> None:
        for morph in [c for c in reversed(self.children) if c in self._hidden]:
            self._hidden.discard(morph)
            self._insert_canvas(morph)
            morph.set_shown(True)

    def close_panel(self, widget: Widget) -> None:
        if self.halo is not None and self.halo.target is widget:
            self.close_halo()
        if widget.parent is self:
            self.remove_widget(widget)

    def close_front_panel(self) -> bool:
        """Esc: close the panel in front (the one used last); False when none is open."""
        panels = self.panels()
        if not panels:
            return False
        self.close_panel(panels[0])
        return True

    def clamp(self, widget: Widget) -> None:
        """Move ``widget`` so that it lies in the World's area; one larger than the area
        keeps its top-left corner (title and close box) in view."""
        if self.width <= 1 or self.height <= 1 or widget.size_hint != [None, None]:
            return
        x = min(max(widget.x, self.x), self.right - widget.width)
        top = max(min(widget.top, self.top), self.y + widget.height)
        widget.pos = (max(self.x, x), min(self.top, top) - widget.height)

    def pan(self, dx: float, dy: float) -> None:
        """Scroll the canvas: move every morph (a layout larger than the window is reached
        with the wheel over the empty canvas; Shift+wheel pans sideways)."""
        for child in self.children:
            if child is not self.halo:
                child.pos = (child.x + dx, child.y + dy)

    # -- zoom -----------------------------------------------------------------------------
    def zoomable(self) -> list[Widget]:
        """The world's morphs that zoom: persona morphs and plots (``zoomable``)."""
        return [c for c in self.children if getattr(c, "zoomable", False)]

    def zoom_to(self, zoom: float, pivot: tuple[float, float] | None = None) -> None:
        """Zoom the world's morphs to ``zoom`` (clamped to ZOOM_MIN..ZOOM_MAX) about
        ``pivot`` (the window's centre by default), which stays where it is on the screen."""
        zoom = clamp_zoom(zoom)
        factor = zoom / float(self.zoom)
        if abs(factor - 1) < 1e-6:
            return
        px, py = pivot if pivot is not None else self.center
        self.close_halo()
        self.zoom = zoom
        for child in self.zoomable():
            child.pos = (px + (child.x - px) * factor, py + (child.y - py) * factor)
            child.size = (child.width * factor, child.height * factor)
            child.zoom = zoom

    def zoom_in(self, pivot: tuple[float, float] | None = None) -> None:
        self.zoom_to(float(self.zoom) * ZOOM_STEP, pivot)

    def zoom_out(self, pivot: tuple[float, float] | None = None) -> None:
        self.zoom_to(float(self.zoom) / ZOOM_STEP, pivot)

    def bring_to_front(self, morph: Widget) -> None:
        if morph is self.halo or self.children[0] is morph:
            return
        super().remove_widget(morph)
        super().add_widget(morph)
        if morph in self._hidden:  # off-screen, it stays out of the draw tree
            self.canvas.remove(morph.canvas)
        if self.halo is not None:  # the halo stays above everything
            super().remove_widget(self.halo)
            super().add_widget(self.halo)

    # -- halo -------------------------------------------------------------------------------
    def open_halo(self, morph: Widget) -> HaloMorph:
        self.close_halo()
        halo = HaloMorph(morph, unavailable=self.unavailable_handles)
        halo.bind(on_action=lambda _h, name: self._halo_action(morph, name))
        super().add_widget(halo)
        self.halo = halo
        return halo

    def close_halo(self) -> None:
        if self.halo is not None:
            self.halo.detach()
            super().remove_widget(self.halo)
            self.halo = None

    def _halo_action(self, morph: Widget, name: str) -> None:
        if name in self.unavailable_handles:
            self.dispatch(
                "on_notice", f"'{name}' is not available yet: it arrives with the Live Debugger."
            )
            return
        if name not in ("moved", "resized"):
            self.close_halo()
        self.dispatch("on_halo_action", morph, name)

    # -- input ------------------------------------------------------------------------------
    def drop_file(self, filename: bytes | str, x: float, y_from_top: float) -> None:
        """Handle an OS file drop (``Window.on_drop_file``: y counts from the top)."""
        target = self.morph_at(x, Window.height - y_from_top)
        if not isinstance(target, PersonaMorph):
            self.dispatch("on_notice", DROP_HINT)
            return
        name = filename.decode("utf-8", "replace") if isinstance(filename, bytes) else filename
        # The backend reads the file, remembers it and asks with its text (off this thread).
        self.dispatch(
            "on_intent",
            AskDocument(
                proto=target.model.name,
                path=str(Path(name).absolute()),
                max_bytes=int(self.max_document_bytes),
                budget_chars=int(self.prompt_budget_chars),
            ),
        )

    def on_touch_down(self, touch: Any) -> bool:
        if getattr(touch, "is_mouse_scrolling", False):
            return self._wheel(touch)
        if super().on_touch_down(touch):
            for child in self.children:
                if child.collide_point(*touch.pos):
                    self.bring_to_front(child)
                    break
            return True
        if self.collide_point(*touch.pos):
            if self.halo is not None:
                self.close_halo()
            else:
                self.dispatch("on_background_click", touch)
            return True
        return False

    def _wheel(self, touch: Any) -> bool:
        if not self.collide_point(*touch.pos):
            return False
        if "ctrl" in Window.modifiers and touch.button in ("scrolldown", "scrollup"):
            # Ctrl+wheel zooms about the pointer; the wheel turned up ("scrolldown") comes closer
            (self.zoom_in if touch.button == "scrolldown" else self.zoom_out)(tuple(touch.pos))
            return True
        if super().on_touch_down(touch):
            return True  # a morph scrolled (its conversation, a panel's list)
        if self.morph_at(*touch.pos) is not None:
            return True  # over a morph or panel already scrolled to its end: never a pan
        step = float(self.pan_step)
        # Kivy names the wheel by the content's motion: "scrolldown" is the wheel turned up.
        delta = {"scrolldown": -step, "scrollup": step, "scrollleft": step, "scrollright": -step}
        amount = delta.get(touch.button, 0.0)
        sideways = touch.button in ("scrollleft", "scrollright") or "shift" in Window.modifiers
        self.pan(amount if sideways else 0.0, 0.0 if sideways else amount)
        return True

    # -- default handlers -------------------------------------------------------------------
    def on_intent(self, command: Any) -> None:
        pass

    def on_notice(self, text: str) -> None:
        pass

    def on_background_click(self, touch: Any) -> None:
        pass

    def on_halo_action(self, morph: Widget, name: str) -> None:
        pass
