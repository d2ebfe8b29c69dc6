"""PlotMorph: live Matplotlib plots of the system's own metrics (``WorkbenchStore.metrics``).

Rendering a figure with Agg costs tens of milliseconds, so the morph never redraws per event:
a change of ``store.metrics`` only marks it dirty, and a 0.5 s Clock interval redraws when
dirty, i.e. at most 2 Hz however fast metrics arrive.

kivy-garden.matplotlib traps (see STACK.md): its canvas crashes when created with size/pos,
and moving it by ``pos`` leaves a stale background; so it is created bare, placed once and
then only sized, inside this RelativeLayout, which is what moves when the morph is dragged.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

from kivy.clock import Clock
from kivy.graphics import Color, Line, RoundedRectangle
from kivy.metrics import sp
from kivy.properties import BooleanProperty, ListProperty, NumericProperty, ObjectProperty
from kivy.uix.label import Label
from kivy.uix.relativelayout import RelativeLayout
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from morphs.behaviors import DraggableBehavior
from morphs.panel import ClosableBehavior
from morphs.persona import CALM
from ui.store import WorkbenchStore

with warnings.catch_warnings():
    # kivy-garden.matplotlib imports distutils' LooseVersion (deprecated, gone in 3.12).
    warnings.simplefilter("ignore", DeprecationWarning)
    from kivy_garden.matplotlib.backend_kivyagg import (  # type: ignore[import-untyped]
        FigureCanvasKivyAgg,
    )

DEFAULT_METRICS = ("tokens_per_s", "queue_wait_ms", "ttft_ms", "total_ms")
#: Human titles for the known metrics; others show their own name.
TITLES = {
    "tokens_per_s": "tokens/s",
    "queue_wait_ms": "queue wait ms",
    "ttft_ms": "first token ms",
    "total_ms": "total ms",
    "memory_search_ms": "memory search ms",
    "memory_rows": "memories",
    "memory_ingest_chunks_per_s": "ingest chunks/s",
}
LINE_COLOURS = ("#6cb6e0", "#e0c36c", "#7be07b", "#e07bb6", "#b59cf0", "#f09c6c")
TEXT = "#dfe5ec"
DIM = "#8899aa"
AXES_BG = "#1b2230"
EDGE = "#3a4658"
TITLE_H = 30
PAD = 8
#: The figure's dots per inch at zoom 1; the zoom scales it, and so the plot's text and lines.
DPI = 100
RADIUS = 12
NO_DATA = "no data yet"


def _hex(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgb)


def _tick(value: float, _pos: Any = None) -> str:
    """Short y tick labels: 1500 -> 1.5k."""
    if abs(value) >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


class _Panel(NamedTuple):
    """The artists of one metric's subplot."""

    ax: Any
    line: Any
    dot: Any
    last: Any
    empty: Any

    def show(self, series: list[float]) -> None:
        n = len(series)
        self.line.set_data(range(n), series)
        self.dot.set_data([n - 1], series[-1:])
        self.empty.set_visible(not series)
        self.last.set_text(_fmt(series[-1]) if series else "")
        self.ax.yaxis.set_visible(bool(series))
        if series:
            low, high = min(series), max(series)
            span = high - low or max(1.0, abs(high) * 0.1)
            self.ax.set_ylim(low - span * 0.12, high + span * 0.15)
            self.ax.set_xlim(-0.5, max(1, n - 1) + 0.5)


class PlotMorph(ClosableBehavior, DraggableBehavior, RelativeLayout):
    """One small subplot per metric, the last value annotated; dark, like the persona morphs."""

    #: The store whose ``metrics`` are plotted.
    store: WorkbenchStore = ObjectProperty(None)
    #: The metric names plotted, one subplot each (keys of ``store.metrics``).
    metrics = ListProperty(list(DEFAULT_METRICS))
    #: Seconds between redraws at most (0.5: at most 2 Hz); read when the morph is added.
    redraw_interval = NumericProperty(0.5)
    #: True when the store changed since the figure was last drawn.
    dirty = BooleanProperty(True)
    #: How many times the figure was redrawn with new data (for tests and benchmarks).
    redraws = NumericProperty(0)

    #: The World zooms plots with persona morphs (a plot scales by its size).
    zoomable = True
    zoom = NumericProperty(1.0)

    __events__ = ("on_moved", "on_meta_click", "on_close")

    def __init__(
        self, store: WorkbenchStore, metrics: Sequence[str] = DEFAULT_METRICS, **kwargs: Any
    ) -> None:
        kwargs.setdefault("size_hint", (None, None))
        kwargs.setdefault("size", (360, 300))
        self._timer: Any = None
        self._bound_store: WorkbenchStore | None = None
        super().__init__(**kwargs)
        with self.canvas.before:
            Color(*CALM, 0.97)
            self._fill = RoundedRectangle(radius=[RADIUS])
            Color(1, 1, 1, 0.25)
            self._edge = Line(width=1.2)
        self._title = Label(
            markup=True,
            halign="left",
            valign="middle",
            font_size="14sp",
            size_hint=(None, None),
        )
        self.add_widget(self._title)
        self._figure = Figure(facecolor=_hex(CALM), dpi=DPI)
        self._panels: dict[str, _Panel] = {}
        self.metrics = list(metrics)
        self._build_axes()
        # Created bare (no size/pos kwargs), placed once, then only resized: see module doc.
        self._plot = FigureCanvasKivyAgg(self._figure)
        self._plot.size_hint = (None, None)
        self._plot.is_focusable = False  # a click on the plot must not take the keyboard
        self._plot.pos = (PAD, PAD)
        self.add_widget(self._plot)
        self.bind(size=self._layout, metrics=self._on_metrics_list)
        self.store = store
        self._show_data()
        if not self._layout():  # sizing the garden canvas renders the figure...
            self._plot.draw()  # ...unless it already had that size
        self.dirty = False
        self.redraws = 1
        self._init_close_box()

    # -- layout -----------------------------------------------------------------------------
    def _layout(self, *_: Any) -> bool:
        """Place the children; True when the plot was resized (and so re-rendered)."""
        w, h, z = self.width, self.height, float(self.zoom)
        pad, title_h = PAD * z, TITLE_H * z
        self._fill.pos, self._fill.size = (0, 0), (w, h)
        self._edge.rounded_rectangle = (0, 0, w, h, RADIUS)
        self._title.pos = (pad + 2, h - title_h - 2)
        self._title.size = self._title.text_size = (w - 2 * pad, title_h)
        self._plot.pos = (pad, pad)
        size = (max(1, w - 2 * pad), max(1, h - title_h - 2 * pad))
        if tuple(self._plot.size) == size:
            return False
        self._plot.size = size  # the garden canvas re-renders the figure on resize
        return True

    def _build_axes(self) -> None:
        self._figure.clear()
        self._panels = {}
        count = len(self.metrics)
        cols = 1 if count <= 1 else 2
        rows = max(1, math.ceil(count / cols))
        for i, name in enumerate(self.metrics):
            ax = self._figure.add_subplot(rows, cols, i + 1)
            ax.set_facecolor(AXES_BG)
            # Titles as plain texts: ``set_title`` re-lays itself out on every draw (slow).
            ax.text(
                0.0, 1.03, TITLES.get(name, name), transform=ax.transAxes, ha="left",
                va="bottom", color=TEXT, fontsize=8,
            )  # fmt: skip
            ax.xaxis.set_visible(False)  # x is just "the last N calls"
            ax.yaxis.set_major_locator(MaxNLocator(nbins=3))
            ax.yaxis.set_major_formatter(FuncFormatter(_tick))
            ax.tick_params(axis="y", colors=DIM, labelsize=6, length=2, pad=1)
            for spine in ax.spines.values():
                spine.set_color(EDGE)
            colour = LINE_COLOURS[i % len(LINE_COLOURS)]
            (line,) = ax.plot([], [], color=colour, linewidth=1.3)
            (dot,) = ax.plot([], [], "o", color=colour, markersize=3)
            last = ax.text(
                1.0, 1.03, "", transform=ax.transAxes, ha="right", va="bottom",
                color=colour, fontsize=8, fontweight="bold",
            )  # fmt: skip
            empty = ax.text(
                0.5, 0.5, NO_DATA, transform=ax.transAxes, ha="center", va="center",
                color=DIM, fontsize=7, style="italic",
            )  # fmt: skip
            self._panels[name] = _Panel(ax, line, dot, last, empty)
        self._figure.subplots_adjust(
            left=0.1, right=0.97, bottom=0.04, top=0.91, wspace=0.28, hspace=0.32
        )

    # -- data -> figure ---------------------------------------------------------------------
    def on_store(self, _instance: Any, store: WorkbenchStore | None) -> None:
        if self._bound_store is not None:
            self._bound_store.unbind(metrics=self._mark_dirty)
        self._bound_store = store
        if store is not None:
            store.bind(metrics=self._mark_dirty)
        self._mark_dirty()

    def _on_metrics_list(self, *_: Any) -> None:
        self._build_axes()
        self._mark_dirty()

    def _mark_dirty(self, *_: Any) -> None:
        # Never draw here: metrics can change many times a frame.
        self.dirty = True

    def _show_data(self) -> None:
        data = self.store.metrics if self.store is not None else {}
        calls = 0
        for name, panel in self._panels.items():
            series = [float(v) for v in data.get(name, ())]
            panel.show(series)
            calls = max(calls, len(series))
        detail = f"last {calls} calls" if calls else "waiting for the first model call"
        small = round(sp(11) * float(self.zoom))
        self._title.text = f"[b]Metrics[/b]  [size={small}][color=b8c2cc]{detail}[/color][/size]"

    def on_parent(self, _instance: Any, parent: Any) -> None:
        # The redraw timer runs only while the morph is on a canvas.
        if parent is not None and self._timer is None:
            self._timer = Clock.schedule_interval(self._maybe_redraw, self.redraw_interval)
        elif parent is None and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def on_zoom(self, _instance: Any, zoom: float) -> None:
        """The title, the figure's text and its lines scale with the World's zoom (the World
        scales the size): the figure keeps its inches and gains dots per inch."""
        self._title.font_size = sp(14) * zoom
        self._figure.set_dpi(DPI * zoom)
        if not self._layout():  # a new size re-renders the figure at the new dpi...
            w, h = self._plot.size  # ...else it keeps its pixels, in fewer inches
            self._figure.set_size_inches(w / (DPI * zoom), h / (DPI * zoom), forward=False)
        self._mark_dirty()  # the title's markup, and the figure at the next tick

    def _maybe_redraw(self, _dt: float) -> None:
        if self.dirty and self.get_root_window() is not None:
            self.redraw()

    def redraw(self) -> None:
        """Render the figure from the store now (the timer calls this when dirty)."""
        self._show_data()
        self._plot.draw()
        self.dirty = False
        self.redraws += 1

    # -- events -----------------------------------------------------------------------------
    def on_moved(self) -> None:
        pass

    def on_meta_click(self, touch: Any) -> None:
        pass
