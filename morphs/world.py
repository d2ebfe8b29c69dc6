"""The World: the canvas that holds the morphs.

It hit-tests file drops and background clicks and *announces* what the user meant, as Kivy
events: ``on_intent(command)`` for something the backend should do, ``on_notice(text)`` for
something the user should read. The app decides what to do with them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kivy.core.window import Window
from kivy.graphics import Color, Rectangle
from kivy.properties import NumericProperty, ObjectProperty
from kivy.uix.widget import Widget

from morphs.halo import HaloMorph
from morphs.persona import PersonaMorph
from shared_api.commands import AskPersona, IngestDocument
from shared_api.errors import DocumentError
from ui.documents import prompt_for, read_document

DROP_HINT = "Drop documents onto a persona to send them to it."


class World(Widget):
    #: Largest document accepted by a drop, in bytes.
    max_document_bytes = NumericProperty(5 * 1024 * 1024)
    #: How many characters of a document go into the persona's prompt.
    prompt_budget_chars = NumericProperty(6000)

    #: The open halo, if any.
    halo: Any = ObjectProperty(None, allownone=True)
    #: Halo handles drawn dimmed because their feature has not landed yet.
    unavailable_handles: tuple[str, ...] = ()

    __events__ = ("on_intent", "on_notice", "on_background_click", "on_halo_action")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        with self.canvas.before:
            Color(0.07, 0.08, 0.1, 1)
            self._bg = Rectangle()
        self.bind(pos=self._redraw, size=self._redraw)
        self._redraw()

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

    def add_widget(self, widget: Widget, *args: Any, **kwargs: Any) -> None:
        super().add_widget(widget, *args, **kwargs)
        if "on_meta_click" in getattr(
            widget, "__events__", ()
        ) and not widget.get_property_observers("on_meta_click"):
            widget.bind(on_meta_click=lambda morph, _touch: self.open_halo(morph))

    def bring_to_front(self, morph: Widget) -> None:
        if morph is self.halo or self.children[0] is morph:
            return
        super().remove_widget(morph)
        super().add_widget(morph)
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
        try:
            document = read_document(Path(name), int(self.max_document_bytes))
        except DocumentError as exc:
            self.dispatch("on_notice", exc.message)
            return
        text = prompt_for(document, int(self.prompt_budget_chars))
        # Remembered too (in the background; the same content twice adds nothing).
        path = str(document.path.resolve())
        self.dispatch("on_intent", IngestDocument(path=path, proto=target.model.name, wait=False))
        self.dispatch("on_intent", AskPersona(proto=target.model.name, text=text))

    def on_touch_down(self, touch: Any) -> bool:
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

    # -- default handlers -------------------------------------------------------------------
    def on_intent(self, command: Any) -> None:
        pass

    def on_notice(self, text: str) -> None:
        pass

    def on_background_click(self, touch: Any) -> None:
        pass

    def on_halo_action(self, morph: Widget, name: str) -> None:
        pass
