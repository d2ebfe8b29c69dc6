"""MemoryMorph: search the episodic memory, see each hit's score, source and persona, and
open a hit to read it whole.

Like the inspector, it only announces intent: ``on_intent(command)`` with a ``SearchMemory``
or ``MemoryStats`` for the app to send, ``on_plot()`` for a plot of the memory's figures. The
app hands the replies back through ``show_hits``, ``show_stats`` and ``show_error``.
"""

from __future__ import annotations

import time
from typing import Any

from kivy.graphics import Color, Line, RoundedRectangle
from kivy.properties import NumericProperty, ObjectProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.gridlayout import GridLayout
from kivy.uix.label import Label
from kivy.uix.scrollview import ScrollView
from kivy.utils import escape_markup

from morphs.behaviors import DraggableBehavior
from morphs.field import Field
from morphs.panel import ClosableBehavior
from shared_api.commands import MemoryStats, SearchMemory
from shared_api.replies import MemoryHit, MemoryHits, MemoryStatsReply
from shared_api.types import ProtoName

ROW = 30
#: What the "plot" button plots (``WorkbenchStore.metrics`` keys).
MEMORY_METRICS = ("memory_search_ms", "memory_rows", "memory_ingest_chunks_per_s")
ORIGIN_COLOURS = {"document": "6cb6e0", "conversation": "e0c36c"}
EXCERPT = 160


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def hit_line(hit: MemoryHit) -> str:
    """One result: score, where it comes from, whose it is, and the start of its text."""
    colour = ORIGIN_COLOURS.get(hit.origin, "ffffff")
    where = hit.name or hit.source
    if hit.heading and hit.origin == "document":
        where += f" > {hit.heading}"
    persona = f"  [color=b59cf0]{escape_markup(hit.proto)}[/color]" if hit.proto else ""
    excerpt = escape_markup(" ".join(hit.text.split())[:EXCERPT])
    return (
        f"[b][color=7be07b]{hit.score:.2f}[/color][/b]  [color={colour}]{hit.origin}[/color]  "
        f"{escape_markup(where)}{persona}\n[color=dfe5ec]{excerpt}[/color]"
    )


def hit_detail(hit: MemoryHit) -> str:
    """An opened hit: its whole text, with where it lives."""
    lines = [f"[b]{escape_markup(hit.name or hit.source)}[/b]  score {hit.score:.3f}"]
    lines.append(f"[color=8899aa]{escape_markup(hit.source)}[/color]")
    if hit.heading:
        lines.append(f"[color=8899aa]at {escape_markup(hit.heading)}[/color]")
    if hit.origin == "document" and hit.start >= 0:
        span = f"chunk {hit.position}, characters {hit.start}-{hit.end}"
        lines.append(f"[color=8899aa]{span}[/color]")
    if hit.ts:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(hit.ts))
        lines.append(f"[color=8899aa]{hit.proto or 'nobody'}, {when}[/color]")
    body: str = escape_markup(hit.text)
    return "\n".join(lines) + "\n\n" + body


def stats_line(stats: MemoryStatsReply) -> str:
    if stats.state not in ("ready", "reembedding"):
        return f"[color=ff6b6b]{stats.state}[/color]"
    rows = stats.rows
    indexed = [t for t in ("chunks", "interactions") if (stats.index.get(t) or {}).get("index")]
    search = f"ANN on {', '.join(indexed)}" if indexed else "exact search"
    return (
        f"[color=8899aa]{_count(rows.get('documents', 0), 'document')}, "
        f"{_count(rows.get('chunks', 0), 'chunk')}, "
        f"{_count(rows.get('interactions', 0), 'interaction')} · {search} · {stats.state}[/color]"
    )


def _label(text: str, **kwargs: Any) -> Label:
    kwargs.setdefault("size_hint_y", None)
    kwargs.setdefault("height", ROW)
    label = Label(text=text, halign="left", valign="top", markup=True, font_size="12sp", **kwargs)
    label.bind(width=lambda lbl, w: setattr(lbl, "text_size", (w, None)))
    label.bind(texture_size=lambda lbl, ts: setattr(lbl, "height", max(ROW, ts[1] + 8)))
    return label


class HitRow(Button):
    """A result; pressing it opens the hit (``MemoryMorph.open_hit``)."""

    hit: MemoryHit = ObjectProperty(None)

    def __init__(self, hit: MemoryHit, **kwargs: Any) -> None:
        super().__init__(
            text=hit_line(hit),
            markup=True,
            halign="left",
            valign="top",
            font_size="12sp",
            size_hint_y=None,
            background_normal="",
            background_color=(0.15, 0.18, 0.24, 1),
            **kwargs,
        )
        self.hit = hit
        self.bind(width=lambda b, w: setattr(b, "text_size", (w - 12, None)))
        self.bind(texture_size=lambda b, ts: setattr(b, "height", max(2 * ROW, ts[1] + 12)))


class MemoryMorph(ClosableBehavior, DraggableBehavior, BoxLayout):
    #: Results asked for per search.
    k = NumericProperty(8)
    #: The query of the hits shown ("" before the first search).
    query = StringProperty("")
    #: The hit opened in the detail pane, if any.
    opened: MemoryHit | None = ObjectProperty(None, allownone=True)

    __events__ = ("on_intent", "on_plot", "on_moved", "on_meta_click", "on_close")

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("size_hint", (None, None))
        kwargs.setdefault("size", (520, 600))
        super().__init__(orientation="vertical", padding=8, spacing=4, **kwargs)
        with self.canvas.before:
            Color(0.11, 0.13, 0.17, 1)
            self._bg = RoundedRectangle(radius=[10])
            Color(0.42, 0.71, 0.88, 0.8)
            self._edge = Line(width=1.2)
        self.bind(pos=self._redraw, size=self._redraw)
        self.title = _label("[b]Memory[/b]", height=26)
        self.stats = _label("[color=8899aa]...[/color]", height=22)
        bar = BoxLayout(size_hint_y=None, height=ROW, spacing=4)
        self.search_box = Field(
            hint_text="search everything the personas read and said",
            multiline=False,
            font_size="12sp",
        )
        self.search_box.bind(on_text_validate=lambda _i: self.search())
        self.persona_box = Field(
            hint_text="persona", multiline=False, font_size="12sp", size_hint_x=None, width=80
        )
        self.persona_box.bind(on_text_validate=lambda _i: self.search())
        self.search_button = Button(text="search", size_hint_x=None, width=62, font_size="12sp")
        self.search_button.bind(on_release=lambda _b: self.search())
        self.plot_button = Button(text="plot", size_hint_x=None, width=44, font_size="12sp")
        self.plot_button.bind(on_release=lambda _b: self.dispatch("on_plot"))
        for widget in (self.search_box, self.persona_box, self.search_button, self.plot_button):
            bar.add_widget(widget)
        self.message = _label("", color=(1, 0.55, 0.55, 1), height=0)
        self.results = GridLayout(cols=1, size_hint_y=None, spacing=3)
        self.results.bind(minimum_height=self.results.setter("height"))
        results_scroll = ScrollView(do_scroll_x=False, size_hint_y=0.55)
        results_scroll.add_widget(self.results)
        self.detail = _label("[color=8899aa]open a hit to read it whole[/color]")
        detail_scroll = ScrollView(do_scroll_x=False, size_hint_y=0.45)
        detail_scroll.add_widget(self.detail)
        for widget in (self.title, self.stats, bar, self.message, results_scroll, detail_scroll):
            self.add_widget(widget)
        self.rows: list[HitRow] = []
        self._redraw()
        self._init_close_box()

    def _redraw(self, *_: Any) -> None:
        self._bg.pos, self._bg.size = self.pos, self.size
        self._edge.rounded_rectangle = (self.x, self.y, self.width, self.height, 10)

    # -- intent -----------------------------------------------------------------------------
    def search(self) -> None:
        text = self.search_box.text.strip()
        persona = self.persona_box.text.strip() or None
        if not text:
            self.show_error("type what to look for")
            return
        if persona is not None:
            try:
                SearchMemory(text=text, proto=persona)
            except ValueError:
                self.show_error(f"{persona!r} is not a persona name")
                return
        self.show_error("")
        proto: ProtoName | None = persona
        self.dispatch("on_intent", SearchMemory(text=text, k=int(self.k), proto=proto))

    def refresh_stats(self) -> None:
        self.dispatch("on_intent", MemoryStats())

    # -- replies ----------------------------------------------------------------------------
    def show_hits(self, reply: MemoryHits) -> None:
        self.query = reply.query
        self.results.clear_widgets()
        self.rows = []
        for hit in reply.hits:
            row = HitRow(hit)
            row.bind(on_release=lambda r: self.open_hit(r.hit))
            self.rows.append(row)
            self.results.add_widget(row)
        how = "exact" if reply.exact else "ANN"
        self.title.text = (
            f"[b]Memory[/b]  [color=8899aa]{_count(len(reply.hits), 'hit')} for "
            f"\u201c{escape_markup(reply.query[:40])}\u201d in {reply.took_ms:.0f} ms "
            f"({how})[/color]"
        )
        self.show_error("" if reply.hits else "nothing remembered matches that yet")
        if reply.hits:
            self.open_hit(reply.hits[0])

    def open_hit(self, hit: MemoryHit) -> None:
        self.opened = hit
        self.detail.text = hit_detail(hit)
        for row in self.rows:
            row.background_color = (0.22, 0.3, 0.4, 1) if row.hit is hit else (0.15, 0.18, 0.24, 1)

    def show_stats(self, stats: MemoryStatsReply) -> None:
        self.stats.text = stats_line(stats)
        if stats.error:
            self.show_error(stats.error)

    def show_error(self, text: str) -> None:
        self.message.text = escape_markup(text)
        self.message.height = ROW if text else 0

    # -- events -----------------------------------------------------------------------------
    def on_intent(self, command: Any) -> None:
        pass

    def on_plot(self) -> None:
        pass

    def on_moved(self) -> None:
        pass

    def on_meta_click(self, touch: Any) -> None:
        pass
