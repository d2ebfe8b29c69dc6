"""The Kivy workbench: the World canvas, persona morphs, a status bar and toasts.

``main.py [--home DIR]`` runs it. The app owns the wiring: morphs announce intent, the app
turns intent into commands on the ``BackendLink`` and backend events into ``WorkbenchStore``
updates, which the morphs render.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kivy.app import App
from kivy.clock import Clock
from kivy.core.window import Window
from kivy.graphics import Color, Rectangle
from kivy.uix.floatlayout import FloatLayout
from kivy.uix.label import Label
from kivy.utils import escape_markup

from morphs.behaviors import ZOOM_KEYS
from morphs.inspector import InspectorMorph
from morphs.memory import MEMORY_METRICS, MemoryMorph
from morphs.menu import confirm_dismiss, open_menu
from morphs.persona import PersonaMorph
from morphs.world import World, clamp_zoom
from shared_api.commands import (
    AskDocument,
    AskPersona,
    CloneProto,
    Command,
    DescribeProto,
    ListProtos,
    ModelStatus,
    RemoveProto,
    SaveImage,
)
from shared_api.errors import EntropicError, ErrorReply
from shared_api.layout import Layout
from shared_api.replies import (
    AskAccepted,
    ImageSaved,
    MemoryHits,
    MemoryStatsReply,
    ModelStatusReply,
    ProtoDescription,
    ProtoList,
    ProtoUpdated,
    Reply,
)
from ui.dialogues import DialogueController
from ui.layout_io import (
    DEFAULT_LAYOUT,
    apply_layout,
    load_layout,
    load_startup_layout,
    save_layout,
)
from ui.learning import LearningController
from ui.link import CONNECTED, BackendLink, StartBackend, StartedBackend
from ui.store import WorkbenchStore
from ui.window import STATUS_H, TOAST_H

if TYPE_CHECKING:
    from morphs.plot import PlotMorph  # imports matplotlib: only once a plot is shown

log = logging.getLogger(__name__)

STATE_COLOURS = {"connected": "7be07b", "connecting": "e0c36c", "restarting": "e0c36c"}
TOAST_SECONDS = 6.0
#: The metrics a new plot shows (``morphs.plot.DEFAULT_METRICS``, without importing it).
PLOT_METRICS = ("tokens_per_s", "queue_wait_ms", "ttft_ms", "total_ms")
STRIP_COLOUR = (0.11, 0.125, 0.155, 1)


#: ``benchmarks/startup.py`` sets this to a file: the app appends its start-up milestones
#: there (``{"event": ..., "t": time.time()}``), and quits once it is ready for questions.
TRACE_ENV = "ENTROPIC_STARTUP_TRACE"


def trace(event: str) -> None:
    path = os.environ.get(TRACE_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"event": event, "t": time.time()}) + "\n")


def _strip(**kwargs: Any) -> Label:
    """An opaque one-line strip (the status bar, the message line). A text too long for it
    is cut at its end (an ellipsis), not wrapped into lines the strip would clip."""
    label = Label(
        size_hint=(None, None),
        markup=True,
        halign="left",
        valign="middle",
        shorten=True,
        shorten_from="right",
        **kwargs,
    )
    with label.canvas.before:
        Color(*STRIP_COLOUR)
        label.bg = Rectangle()
    label.bind(size=lambda lbl, size: setattr(lbl, "text_size", (size[0] - 16, size[1])))
    label.bind(
        pos=lambda lbl, pos: setattr(lbl.bg, "pos", pos),
        size=lambda lbl, size: setattr(lbl.bg, "size", size),
    )
    return label


class WorkbenchApp(App):
    def __init__(
        self,
        home: Path,
        *,
        link: BackendLink | None = None,
        start_backend: StartBackend | None = None,
        spawned: StartedBackend | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.home = home
        self.link = link
        self._start_backend = start_backend
        self._spawned = spawned
        self.store = WorkbenchStore()
        self.world = World()
        self.layout_path = home / "layout.json"
        self._populated = False

    # -- building ---------------------------------------------------------------------------
    def build(self) -> FloatLayout:
        self.title = f"Entropic OS - {self.home}"
        root = FloatLayout()
        # The World lies between two opaque strips and never under them.
        self.world.size_hint = (None, None)
        self.world.keep_in_view = True
        root.add_widget(self.world)
        self.status_bar = _strip(font_size="13sp", height=STATUS_H)
        self.toast_bar = _strip(font_size="13sp", height=TOAST_H, color=(1, 0.85, 0.45, 1))
        root.add_widget(self.status_bar)
        root.add_widget(self.toast_bar)
        root.bind(size=self._layout_root, pos=self._layout_root)
        self._layout_root(root)
        self.store.bind(connection=self._render_status, connection_detail=self._render_status)
        self.store.bind(progress=self._render_status)
        self.store.bind(toasts=self._show_toast)
        self.world.bind(
            on_intent=self._on_intent, on_notice=lambda _w, text: self.store.toast(text)
        )
        self.world.bind(on_halo_action=self._on_halo_action, on_background_click=self._world_menu)
        self.store.bind(on_change=self._on_proto_change)
        self.dialogues = DialogueController(
            self.link_send, self.store, self.world, self.open_inspector
        )
        self.learning = LearningController(self.link_send, self.store, self.world, self.add_plot)
        Window.bind(on_drop_file=self._on_drop_file, on_keyboard=self._on_key)
        self._memory_stats_soon: Any = Clock.create_trigger(lambda _dt: self._refresh_memory(), 0.5)
        self.store.bind(memory_rows=lambda *_: self._memory_stats_soon())
        if self.link is None:
            self.link = BackendLink(
                self.home,
                self.store.apply,
                self._on_connection,
                start_backend=self._start_backend,
                spawned=self._spawned,
            )
        self.link.start()
        self._render_status()
        Window.bind(on_draw=self._first_frame)
        return root

    def _first_frame(self, *_: Any) -> None:
        Window.unbind(on_draw=self._first_frame)
        trace("first_frame")

    def _layout_root(self, root: Any, *_: Any) -> None:
        w, h = root.size
        self.toast_bar.pos, self.toast_bar.size = root.pos, (w, TOAST_H)
        self.status_bar.pos = (root.x, root.top - STATUS_H)
        self.status_bar.size = (w, STATUS_H)
        self.world.pos = (root.x, root.y + TOAST_H)
        self.world.size = (w, max(1, h - STATUS_H - TOAST_H))

    def on_stop(self) -> None:
        if getattr(self, "_stopped", False):
            return
        self._stopped = True
        trace("quitting")
        started = time.monotonic()
        self.save_layout()
        if self.link is not None:
            self.link.stop(stop_backend=True)  # only a backend this app started itself
        log.info("workbench closed in %.2fs", time.monotonic() - started)
        trace("closed")

    def _on_key(self, _window: Any, key: int, _scancode: Any = None, _text: Any = None,
                modifiers: Any = ()) -> bool:  # fmt: skip
        """Esc closes the open menu, else the halo, else the panel in front; in a persona's
        text field it cancels that persona's answer (the field handles it). Ctrl+= (or +)
        zooms the world in, Ctrl+- out, Ctrl+0 back to 1."""
        if "ctrl" in (modifiers or ()) and key in ZOOM_KEYS:
            action = ZOOM_KEYS[key]
            if action == "in":
                self.world.zoom_in()
            elif action == "out":
                self.world.zoom_out()
            else:
                self.world.zoom_to(1.0)
            return True
        if key != 27:
            return False
        from kivy.uix.behaviors.focus import FocusBehavior

        if FocusBehavior._keyboards and any(FocusBehavior._keyboards.values()):
            return True  # a focused text field had it
        from morphs.menu import MenuMorph

        menus = [c for c in self.world.children if isinstance(c, MenuMorph)]
        if menus:
            menus[0].close()
        elif self.world.halo is not None:
            self.world.close_halo()
        else:
            self.world.close_front_panel()
        return True

    # -- backend ----------------------------------------------------------------------------
    def send(self, command: Command) -> None:
        assert self.link is not None
        self.link.send(command, self._on_reply)

    def _on_connection(self, state: str, detail: str) -> None:
        self.store.set_connection(state, detail)
        if state == CONNECTED and self.link is not None:
            trace("backend_ready")
            self.link.send(ListProtos(), self._populate)
            self.link.send(ModelStatus(), self._show_models)
            self.dialogues.refresh()

    def _show_models(self, reply: Reply) -> None:
        if isinstance(reply, ModelStatusReply):
            for name, selection in reply.selections.items():
                self.store.persona(name).model = f"{selection.backend}:{selection.model}"

    def _on_reply(self, reply: Reply) -> None:
        if isinstance(reply, ErrorReply):
            self.store.toast(reply.message)

    def _on_intent(self, _world: World, command: Command) -> None:
        if not isinstance(command, AskPersona | AskDocument):
            self.send(command)
            return
        persona = self.store.persona(command.proto)
        if isinstance(command, AskPersona):
            persona.say(f"\nYou: {command.text}\n")

        def accepted(reply: Reply) -> None:
            if isinstance(reply, AskAccepted):
                if reply.asked:  # a drop: the first line of the prompt names the document
                    persona.say(f"\nYou: {reply.asked}\n")
                persona.pending_request = reply.request_id
            else:
                self._on_reply(reply)

        self.link_send(command, accepted)

    def _on_drop_file(self, _window: Any, filename: bytes, x: float, y: float, *_: Any) -> bool:
        self.world.drop_file(filename, x, y)
        return True  # handled: Kivy's own relay to the deprecated on_dropfile is not run

    # -- halo actions -----------------------------------------------------------------------
    def _on_halo_action(self, _world: World, morph: Any, action: str) -> None:
        model = getattr(morph, "model", None)
        name = model.name if model is not None else getattr(morph, "persona", "")
        if action == "inspect" and name:
            self.open_inspector(name, (morph.right + 20, morph.top - 560))
        elif action == "debug" and name:
            self.dialogues.open_for_persona(name)
        elif action == "duplicate" and isinstance(morph, PersonaMorph):
            self.link_send(CloneProto(proto=name), lambda r: self._cloned(r, morph))
        elif action == "dismiss":
            if isinstance(morph, PersonaMorph):
                confirm_dismiss(
                    name,
                    on_close=lambda: self.world.remove_widget(morph),
                    on_delete=lambda: self._delete(morph),
                )
            else:
                self.world.remove_widget(morph)

    def _cloned(self, reply: Reply, original: PersonaMorph) -> None:
        if isinstance(reply, ProtoUpdated):
            self.store.persona(reply.proto, original.model.role).model = original.model.model
            self._add_persona(reply.proto, (original.x + 40, original.y - 40), tuple(original.size))
        else:
            self._on_reply(reply)

    def _delete(self, morph: PersonaMorph) -> None:
        def done(reply: Reply) -> None:
            if isinstance(reply, ProtoUpdated):
                self.world.remove_widget(morph)
                self.store.personas.pop(morph.model.name, None)
            else:
                self._on_reply(reply)

        self.link_send(RemoveProto(proto=morph.model.name), done)

    def link_send(self, command: Command, on_reply: Any) -> None:
        assert self.link is not None
        self.link.send(command, on_reply)

    # -- inspector --------------------------------------------------------------------------
    def open_inspector(self, persona: str, pos: tuple[float, float] = (60, 60)) -> InspectorMorph:
        inspector = InspectorMorph(persona, pos=(max(0, pos[0]), max(0, pos[1])))
        inspector.bind(on_intent=self._inspector_intent)
        model = self.store.persona(persona)
        inspector.show_forge(model.forge)
        model.bind(forge=lambda _m, text: inspector.show_forge(text))
        self.world.add_widget(inspector)
        self._refresh_inspectors(persona)
        return inspector

    def inspectors(self, persona: str | None = None) -> list[InspectorMorph]:
        return [
            m
            for m in self.world.children
            if isinstance(m, InspectorMorph) and persona in (None, m.persona)
        ]

    def _refresh_inspectors(self, persona: str) -> None:
        if not self.inspectors(persona):
            return

        def show(reply: Reply) -> None:
            if isinstance(reply, ProtoDescription):
                for inspector in self.inspectors(persona):
                    inspector.show(reply)

        self.link_send(DescribeProto(proto=persona), show)

    def _inspector_intent(self, inspector: InspectorMorph, command: Command, key: str) -> None:
        self.link_send(command, lambda reply: inspector.show_result(key, reply))

    def _on_proto_change(self, _store: WorkbenchStore, persona: str) -> None:
        self._refresh_inspectors(persona)

    # -- memory -----------------------------------------------------------------------------
    def open_memory(self, pos: tuple[float, float] = (80, 80)) -> MemoryMorph:
        morph = MemoryMorph(pos=(pos[0], pos[1] - 600))
        morph.bind(on_intent=self._memory_intent)
        morph.bind(
            on_plot=lambda m: self.add_plot((m.right + 20, m.y), metrics=list(MEMORY_METRICS))
        )
        self.world.add_widget(morph)
        morph.refresh_stats()
        return morph

    def memory_morphs(self) -> list[MemoryMorph]:
        return [m for m in self.world.children if isinstance(m, MemoryMorph)]

    def _refresh_memory(self) -> None:
        """New memories (an ingest, a recorded answer): the open memory panels' figures."""
        for morph in self.memory_morphs():
            morph.refresh_stats()

    def _memory_intent(self, morph: MemoryMorph, command: Command) -> None:
        def show(reply: Reply) -> None:
            if isinstance(reply, MemoryHits):
                morph.show_hits(reply)
                morph.refresh_stats()
            elif isinstance(reply, MemoryStatsReply):
                morph.show_stats(reply)
            elif isinstance(reply, ErrorReply):
                morph.show_error(reply.message)

        self.link_send(command, show)

    # -- world menu -------------------------------------------------------------------------
    #: Extra world-menu entries, ``touch -> [(text, action)]`` (e.g. from plots).
    world_menu_extra: Any = None

    def _world_menu(self, _world: World, touch: Any) -> None:
        items: list[tuple[str, Any]] = [
            (f"Inspect {name}", lambda n=name: self.open_inspector(n, touch.pos))
            for name in sorted(self.store.personas)
        ]
        layout = self.layout_path if self.layout_path.exists() else DEFAULT_LAYOUT
        items += [
            ("Memory", lambda: self.open_memory(touch.pos)),
            *self.dialogues.menu_items(touch),
            *self.learning.menu_items(touch),
            ("New plot", lambda: self.add_plot((touch.x, touch.y - 300))),
            ("Save image", lambda: self.link_send(SaveImage(), self._image_saved)),
            ("Save layout", self._save_layout_now),
            ("Load layout", lambda: self.load_layout(layout)),
            ("Quit", self.stop),
        ]
        if self.world_menu_extra is not None:
            items = self.world_menu_extra(touch) + items
        open_menu(self.world, touch.pos, items)

    def _image_saved(self, reply: Reply) -> None:
        if isinstance(reply, ImageSaved):
            self.store.toast(f"Image saved: generation {reply.generation} ({reply.bytes:,} bytes)")
        else:
            self._on_reply(reply)

    def _save_layout_now(self) -> None:
        self.save_layout()
        self.store.toast(f"Layout saved to {self.layout_path}")

    # -- layout -----------------------------------------------------------------------------
    def _populate(self, reply: Reply) -> None:
        if not isinstance(reply, ProtoList):
            self.store.toast(f"Could not list personas: {getattr(reply, 'message', reply)}")
            return
        for summary in reply.protos:
            self.store.persona(summary.name, summary.role).version = summary.version
        if not self._populated:
            self._populated = True
            self.load_layout(self.layout_path, startup=True)
            trace("ask_ready")  # the personas' text fields are on screen, connected
            if os.environ.get(TRACE_ENV):
                Clock.schedule_once(lambda _dt: self.stop(), 0.5)

    def load_layout(self, path: Path, startup: bool = False) -> None:
        """Rebuild the canvas from a layout file; a bad file leaves the canvas as it is (at
        startup: the default layout opens and the bad file is moved aside)."""
        try:
            layout, warnings = load_startup_layout(path) if startup else load_layout(path)
        except EntropicError as exc:
            self.store.toast(exc.message)
            return
        operations, skipped = apply_layout(layout, set(self.store.personas))
        self.world.close_halo()
        for morph in [*self.world.persona_morphs(), *self.world.panels()]:
            self.world.remove_widget(morph)
        # The saved geometry is the zoomed one: the zoom is restored, not applied again
        # (a layout from before zoom has no set_world: 1).
        worlds = [op for op in operations if op.op == "set_world"]
        self.world.zoom = clamp_zoom(worlds[-1].zoom if worlds else 1.0)
        placed: set[str] = set()
        plots = [op for op in operations if op.op == "create_plot_morph"]
        for op in operations:
            if op.op == "create_persona_morph" and op.persona not in placed:
                self._add_persona(op.persona, (op.x, op.y), (op.w, op.h))
                placed.add(op.persona)
            elif op.op == "create_inspector":
                self.open_inspector(op.persona, (op.x, op.y))
        for i, name in enumerate(sorted(set(self.store.personas) - placed)):
            self._add_persona(name, (40 + 30 * i, 40 + 30 * i), (380, 300))
        for warning in warnings + skipped:
            self.store.toast(warning)
        if plots:
            self._add_plots_soon(plots)

    def _add_plots_soon(self, operations: list[Any]) -> None:
        """Plots come last: Matplotlib takes seconds to import, so it is imported off the UI
        thread while the personas are already on screen, then the plots are placed."""

        def place(_dt: float) -> None:
            for op in operations:
                self.add_plot((op.x, op.y), (op.w, op.h), op.metrics, under_panels=True)

        def warm() -> None:
            import matplotlib.backends.backend_agg
            import matplotlib.figure  # noqa: F401

            Clock.schedule_once(place, 0)

        threading.Thread(target=warm, name="plot-import", daemon=True).start()

    def _add_persona(self, name: str, pos: tuple[float, float], size: tuple[float, float]) -> None:
        self.world.add_widget(PersonaMorph(self.store.persona(name), pos=pos, size=size))

    def plots(self) -> list[PlotMorph]:
        module = sys.modules.get("morphs.plot")  # no plot shown yet: matplotlib not loaded
        if module is None:
            return []
        return [m for m in self.world.children if isinstance(m, module.PlotMorph)]

    def add_plot(
        self,
        pos: tuple[float, float] = (880, 80),
        size: tuple[float, float] = (360, 300),
        metrics: list[str] | None = None,
        *,
        under_panels: bool = False,
    ) -> PlotMorph:
        """A new plot, on top; ``under_panels``: under every open panel (a plot of the
        restored layout arrives late and must not cover an Inspector opened meanwhile)."""
        from morphs.plot import PlotMorph

        plot = PlotMorph(self.store, metrics or list(PLOT_METRICS), pos=pos, size=size)
        if under_panels:
            self.world.add_under_panels(plot)
        else:
            self.world.add_widget(plot)
        return plot

    def current_layout(self) -> Layout:
        operations: list[dict[str, Any]] = []
        if Window is not None:
            w, h = Window.system_size
            operations.append({"op": "set_window", "w": w, "h": h})
            if getattr(Window, "left", None) is not None:
                operations[0] |= {"left": Window.left, "top": Window.top}
        operations.append({"op": "set_world", "zoom": float(self.world.zoom)})
        plots = self.plots()
        for m in reversed(self.world.children):  # bottom to top, so the stacking survives
            box = {"x": m.x, "y": m.y, "w": m.width, "h": m.height}
            if isinstance(m, PersonaMorph):
                operations.append({"op": "create_persona_morph", "persona": m.model.name, **box})
            elif m in plots:
                operations.append({"op": "create_plot_morph", "metrics": list(m.metrics), **box})
            elif isinstance(m, InspectorMorph):
                operations.append({"op": "create_inspector", "persona": m.persona, **box})
        return Layout.model_validate({"version": 1, "operations": operations})

    def save_layout(self) -> None:
        try:
            save_layout(self.layout_path, self.current_layout())
        except (OSError, EntropicError) as exc:
            log.error("could not save the layout: %s", exc)

    # -- status -----------------------------------------------------------------------------
    def _render_status(self, *_: Any) -> None:
        state = self.store.connection
        colour = STATE_COLOURS.get(state, "ff6b6b")
        detail = self.store.connection_detail
        busy = escape_markup("   ".join(self.store.progress.values()))
        if busy:
            detail = f"[color=e0c36c]{busy}[/color]   {detail}"
        self.status_bar.text = (
            f"  [b][color={colour}]{state.upper()}[/color][/b]  "
            f"[color=8899aa]{detail}   home {self.home}[/color]"
        )

    def _show_toast(self, *_: Any) -> None:
        if self.store.toasts:
            self.toast_bar.text = self.store.toasts[-1]
            Clock.unschedule(self._clear_toast)
            Clock.schedule_once(self._clear_toast, TOAST_SECONDS)

    def _clear_toast(self, _dt: float) -> None:
        self.toast_bar.text = ""


def run(
    home: Path, start_backend: StartBackend | None = None, spawned: StartedBackend | None = None
) -> int:
    """Run the workbench until Quit, the window's close or Ctrl-C (which quits the same way:
    the layout is saved and the backend this workbench started is stopped)."""
    from ui.window import fit_to_screen

    Window.clearcolor = (0.07, 0.08, 0.1, 1)
    fit_to_screen(Window)
    app = WorkbenchApp(home, start_backend=start_backend, spawned=spawned)

    def quit_soon(*_: Any) -> None:
        Clock.schedule_once(lambda _dt: app.stop(), 0)

    signal.signal(signal.SIGINT, quit_soon)
    signal.signal(signal.SIGTERM, quit_soon)
    app.run()
    app.on_stop()  # a no-op after a normal stop; covers an event loop that ended otherwise
    return 0
