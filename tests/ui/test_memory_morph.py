"""MemoryMorph as a real widget (SDL2 offscreen): typing a search announces a SearchMemory,
hits render with score, source and persona, a click opens one; the store shows citations
in the persona's conversation and memory figures for the plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kivy.clock import Clock
from kivy.tests.common import UnitTestTouch

from morphs.memory import MEMORY_METRICS, MemoryMorph, hit_line
from morphs.menu import MenuMorph
from shared_api.commands import MemoryStats, SearchMemory
from shared_api.events import Citation, MemoryMetrics, PersonaReply
from shared_api.replies import MemoryHit, MemoryHits, MemoryStatsReply
from tests.ui.conftest import frames, screenshot
from tests.ui.test_workbench import morph_named, start_app, until
from ui.store import WorkbenchStore

HITS = MemoryHits(
    query="When does Falcon launch?",
    took_ms=12.4,
    exact=True,
    embedder="minilm-l6-v2-int8@8199be6f699a",
    hits=[
        MemoryHit(
            origin="document",
            id="cebac472:1",
            score=0.713,
            source="/home/me/notes/falcon.md",
            name="falcon.md",
            proto="BRICK",
            heading="Project Falcon > Deadlines",
            position=1,
            start=133,
            end=239,
            text="The Falcon launch date is the 14th of March. The migration of old invoices "
            "must finish two weeks earlier, on the 28th of February.",
            ts=1_795_000_000.0,
        ),
        MemoryHit(
            origin="conversation",
            id="req-7",
            score=0.52,
            source="conversation with ROBIN",
            proto="ROBIN",
            heading="embedded:smollm2-135m-instruct",
            text="Asked ROBIN: Is Falcon on time?\nROBIN answered: It launches in [March].",
            ts=1_795_000_100.0,
        ),
        MemoryHit(
            origin="document",
            id="cebac472:2",
            score=0.40,
            source="/home/me/notes/falcon.md",
            name="falcon.md",
            proto="BRICK",
            heading="Project Falcon > Team",
            text="Margaret Okafor leads Falcon.",
        ),
    ],
)
STATS = MemoryStatsReply(
    state="ready",
    embedder="minilm-l6-v2-int8@8199be6f699a",
    dim=384,
    schema_version=1,
    rows={"chunks": 1200, "interactions": 35, "documents": 4},
    index={"chunks": {"index": None}, "interactions": {"index": None}},
)


def memory_morph(window: Any) -> tuple[MemoryMorph, list[Any]]:
    morph = MemoryMorph(pos=(20, 20), size=(620, 640))
    intents: list[Any] = []
    morph.bind(on_intent=lambda _m, command: intents.append(command))
    window.add_widget(morph)
    frames(3)
    return morph, intents


def tap(widget: Any) -> None:
    x, y = widget.to_window(*widget.center)
    touch = UnitTestTouch(x, y)
    touch.touch_down()
    touch.touch_up()
    frames(2)


def test_search_announces_the_command_and_hits_render(window: Any) -> None:
    morph, intents = memory_morph(window)
    morph.refresh_stats()
    assert intents == [MemoryStats()]
    tap(morph.search_button)  # nothing typed: no command, a hint
    assert len(intents) == 1 and "type what to look for" in morph.message.text
    morph.search_box.text = "When does Falcon launch?"
    morph.persona_box.text = "BRICK"
    tap(morph.search_button)
    assert intents[-1] == SearchMemory(text="When does Falcon launch?", k=8, proto="BRICK")
    morph.persona_box.text = "not a persona!"
    tap(morph.search_button)
    assert isinstance(intents[-1], SearchMemory) and "not a persona name" in morph.message.text

    morph.show_hits(HITS)
    morph.show_stats(STATS)
    frames(4)
    assert len(morph.rows) == 3
    first = morph.rows[0].text
    assert (
        "0.71" in first and "falcon.md > Project Falcon > Deadlines" in first and "BRICK" in first
    )
    assert "conversation" in morph.rows[1].text and "ROBIN" in morph.rows[1].text
    assert "&bl;March&br;" in morph.rows[1].text  # user text never becomes markup
    assert "3 hits" in morph.title.text and "exact" in morph.title.text
    assert "1,200 chunks" in morph.stats.text and "35 interactions" in morph.stats.text
    assert morph.opened is HITS.hits[0]  # the best hit opens by itself

    tap(morph.rows[1])  # open the conversation
    assert morph.opened is HITS.hits[1]
    assert "ROBIN answered" in morph.detail.text and "conversation with ROBIN" in morph.detail.text
    tap(morph.rows[0])
    assert "28th of February" in morph.detail.text and "characters 133-239" in morph.detail.text
    assert "/home/me/notes/falcon.md" in morph.detail.text
    screenshot("memory_morph")

    plots: list[Any] = []
    morph.bind(on_plot=lambda _m: plots.append(True))
    tap(morph.plot_button)
    assert plots == [True]


def test_hit_line_escapes_markup() -> None:
    line = hit_line(HITS.hits[1])
    assert "[March]" not in line and "0.52" in line


def test_store_shows_citations_and_memory_metrics() -> None:
    store = WorkbenchStore()
    store.apply(
        PersonaReply(
            request_id="r1",
            proto="ROBIN",
            text="It launches on the 14th of March.",
            stop_reason="stop",
            backend="embedded",
            model="smollm2",
            citations=[
                Citation(
                    n=1,
                    origin="document",
                    id="a:1",
                    source="/notes/falcon.md",
                    heading="Project Falcon > Deadlines",
                    score=0.713,
                ),
                Citation(
                    n=2,
                    origin="conversation",
                    id="r0",
                    source="conversation with BRICK",
                    proto="BRICK",
                    score=0.52,
                ),
            ],
        )
    )
    assert (
        "sources: [1] falcon.md > Project Falcon > Deadlines (0.71); "
        "[2] conversation with BRICK (0.52)" in store.persona("ROBIN").conversation
    )
    store.apply(MemoryMetrics(op="search", took_ms=7.5, rows=120, hits=3))
    store.apply(
        MemoryMetrics(
            op="ingest",
            took_ms=900.0,
            rows=150,
            chunks=30,
            detail={"chunks_per_s": 33.3, "name": "falcon.md"},
        )
    )
    assert store.metrics["memory_search_ms"] == [7.5]
    assert store.metrics["memory_rows"] == [120.0, 150.0]
    assert store.metrics["memory_ingest_chunks_per_s"] == [33.3]
    assert store.memory_rows == 150 and store.toasts[-1] == "Remembered falcon.md: 30 chunks"


def test_workbench_drop_remembers_and_the_world_menu_opens_a_memory_search(
    window: Any, tmp_path: Path
) -> None:
    app = start_app(window, tmp_path / "home")
    try:
        doc = tmp_path / "falcon-notes.md"
        doc.write_text("# Falcon\n\nThe Falcon launch date is the 14th of March.\n")
        brick = morph_named(app, "BRICK")
        x, y = brick.center
        window.dispatch("on_drop_file", str(doc).encode(), x, window.height - y)
        until(lambda: any("Remembered falcon-notes.md" in t for t in app.store.toasts))
        assert app.store.memory_rows >= 1 and app.store.metrics["memory_rows"]

        app._world_menu(app.world, UnitTestTouch(300, 700))
        menu = next(m for m in app.world.children if isinstance(m, MenuMorph))
        menu.buttons["Memory"].dispatch("on_release")
        morph = next(m for m in app.world.children if isinstance(m, MemoryMorph))
        until(lambda: "1 document," in morph.stats.text)
        morph.search_box.text = "when is the launch?"
        morph.search()
        until(lambda: bool(morph.rows))
        assert morph.opened is not None and morph.opened.name == "falcon-notes.md"
        assert morph.opened.proto == "BRICK" and "14th of March" in morph.detail.text
        screenshot("workbench-memory")
        morph.dispatch("on_plot")
        assert any(p.metrics == list(MEMORY_METRICS) for p in app.plots())
    finally:
        app.on_stop()
        Clock.tick()
