"""PlotMorph: live Matplotlib plots of the store's metrics, on the real offscreen window."""

from __future__ import annotations

from typing import Any

from kivy.clock import Clock
from kivy.tests.common import UnitTestTouch

from morphs.persona import PersonaMorph
from morphs.plot import NO_DATA, PAD, PlotMorph
from morphs.world import World
from shared_api.events import ModelMetrics
from tests.ui.conftest import frames, screenshot
from ui.store import WorkbenchStore


def plot_on_world(window: Any, store: WorkbenchStore, **kwargs: Any) -> PlotMorph:
    world = World(size_hint=(None, None), size=window.size)
    plot = PlotMorph(store, **kwargs)
    world.add_widget(plot)
    window.add_widget(world)
    frames(2)
    return plot


def run_for(seconds: float, each_frame: Any = None) -> float:
    """Advance real frames for ``seconds`` of clock time; returns the clock time that passed."""
    start = Clock.get_boottime()
    while Clock.get_boottime() - start < seconds:
        if each_frame is not None:
            each_frame()
        frames(1)
    return float(Clock.get_boottime() - start)


def metrics_event(i: int) -> ModelMetrics:
    return ModelMetrics(
        request_id=f"r{i}",
        proto="BRICK",
        backend="embedded",
        model="smollm2",
        queue_wait_ms=5.0 + (i * 7) % 30,
        load_ms=0.0,
        ttft_ms=150.0 + (i * 37) % 90,
        tokens_per_s=60.0 + (i * 13) % 17,
        total_ms=1400.0 + (i * 211) % 900,
        completion_tokens=64,
        resident="embedded:smollm2",
    )


def test_renders_with_no_data(window: Any) -> None:
    plot = plot_on_world(window, WorkbenchStore(), pos=(40, 40))
    assert tuple(plot.size) == (360, 300)
    assert plot.redraws == 1 and not plot.dirty
    texture = plot._plot.img_texture
    assert texture is not None and texture.width > 300 and texture.height > 200
    panels = plot._panels
    assert list(panels) == ["tokens_per_s", "queue_wait_ms", "ttft_ms", "total_ms"]
    for panel in panels.values():
        assert panel.empty.get_visible() and panel.empty.get_text() == NO_DATA
        assert panel.last.get_text() == ""


def test_metric_changes_only_mark_it_dirty_until_the_timer(window: Any) -> None:
    store = WorkbenchStore()
    plot = plot_on_world(window, store)
    before = plot.redraws
    for i in range(30):
        store.metrics["tokens_per_s"] = [*store.metrics.get("tokens_per_s", []), 60.0 + i]
    assert plot.dirty and plot.redraws == before  # no redraw per event
    run_for(0.6)
    assert plot.redraws == before + 1 and not plot.dirty
    panel = plot._panels["tokens_per_s"]
    assert list(panel.line.get_ydata()) == [60.0 + i for i in range(30)]
    assert panel.last.get_text() == "89.0" and not panel.empty.get_visible()
    assert plot._panels["ttft_ms"].empty.get_visible()  # still no data there
    run_for(0.6)
    assert plot.redraws == before + 1  # nothing changed: no redraw


def test_redraws_at_most_twice_a_second_under_a_flood(window: Any) -> None:
    store = WorkbenchStore()
    plot = plot_on_world(window, store)
    renders: list[float] = []
    draw = plot._plot.draw

    def counted_draw() -> None:
        renders.append(Clock.get_boottime())
        draw()

    plot._plot.draw = counted_draw
    before = plot.redraws
    sent = iter(range(100))

    def send_some() -> None:  # 100 metric events, several per frame
        for _ in range(4):
            i = next(sent, None)
            if i is not None:
                store.apply(metrics_event(i))

    elapsed = run_for(1.6, send_some)
    assert len(store.metrics["total_ms"]) == 100
    redraws = plot.redraws - before
    assert 1 <= redraws <= 2 * elapsed + 1, (redraws, elapsed)
    assert len(renders) == redraws  # every render of the figure went through the throttle
    run_for(0.6)
    assert plot._panels["total_ms"].last.get_text() == f"{metrics_event(99).total_ms:,.0f}"


def test_drag_moves_the_plot_without_rerendering(window: Any) -> None:
    store = WorkbenchStore()
    plot = plot_on_world(window, store, pos=(100, 100))
    renders: list[int] = []
    draw = plot._plot.draw

    def counted_draw() -> None:
        renders.append(1)
        draw()

    plot._plot.draw = counted_draw
    moved: list[int] = []
    plot.bind(on_moved=lambda *_: moved.append(1))
    touch = UnitTestTouch(200, 200)
    touch.touch_down()
    touch.touch_move(260, 240)
    touch.touch_move(330, 290)
    touch.touch_up()
    frames(2)
    assert tuple(plot.pos) == (230, 190)
    assert moved == [1]
    assert tuple(plot._plot.pos) == (PAD, PAD)  # the garden canvas never moves itself
    assert renders == []  # moving the parent re-renders nothing
    asked: list[Any] = []
    plot.bind(on_meta_click=lambda _m, t: asked.append(t))
    right = UnitTestTouch(300, 300)
    right.button = "right"
    right.touch_down()
    right.touch_up()
    assert len(asked) == 1 and tuple(plot.pos) == (230, 190)


def test_screenshot_beside_a_persona(window: Any) -> None:
    store = WorkbenchStore()
    world = World(size_hint=(None, None), size=window.size)
    persona = PersonaMorph(store.persona("BRICK", "the builder"), pos=(40, 300))
    empty = PlotMorph(WorkbenchStore(), pos=(860, 300))
    plot = PlotMorph(store, pos=(440, 300))
    for morph in (persona, empty, plot):
        world.add_widget(morph)
    window.add_widget(world)
    for i in range(30):
        store.apply(metrics_event(i))
    run_for(0.6)
    assert not plot.dirty and plot._panels["tokens_per_s"].last.get_text()
    touch = UnitTestTouch(600, 400)  # drag it a little: it must still look right
    touch.touch_down()
    touch.touch_move(620, 380)
    touch.touch_up()
    frames(2)
    assert tuple(plot.pos) == (460, 280)
    path = screenshot("plot-morph")
    assert path.stat().st_size > 10_000
