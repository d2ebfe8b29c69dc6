"""Zooming the world, on real widgets (offscreen SDL2): Ctrl+wheel about the pointer, Ctrl+=
/ Ctrl+- / Ctrl+0 on the app, persona morphs and plots scale with their text while panels
keep their size, and the zoom survives a saved layout (an old layout opens at 1). The app's
backend link is a RECORDING TEST DOUBLE (tests/ui/test_stale_state.py): nothing is sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kivy.core.window import Window
from kivy.tests.common import UnitTestTouch

from morphs.goals import GoalsMorph
from morphs.persona import PersonaMorph
from morphs.world import ZOOM_MAX, ZOOM_STEP, World
from tests.ui.conftest import frames, screenshot
from tests.ui.test_stale_state import an_app
from ui.store import WorkbenchStore


def wheel(x: float, y: float, button: str) -> None:
    touch = UnitTestTouch(x, y)
    touch.button = button
    touch.profile.append("button")
    touch.touch_down()
    touch.touch_up()


def test_ctrl_wheel_zooms_the_morphs_about_the_pointer_not_the_panels(window: Any) -> None:
    store = WorkbenchStore()
    world = World(size_hint=(None, None), size=window.size)
    brick = PersonaMorph(store.persona("BRICK", "the logician"), pos=(100, 200))
    world.add_widget(brick)
    panel = GoalsMorph(pos=(700, 100))
    world.add_widget(panel)
    window.add_widget(world)
    frames(2)
    panel_box = (*panel.pos, *panel.size)
    height = brick._header.texture_size[1]
    pivot = (120.0, 220.0)  # a point on BRICK, under the pointer
    Window._modifiers = ["ctrl"]
    try:
        wheel(*pivot, "scrolldown")  # the wheel turned up: closer
    finally:
        Window._modifiers = []
    assert world.zoom == pytest.approx(ZOOM_STEP) and brick.zoom == world.zoom
    assert tuple(brick.size) == pytest.approx((380 * ZOOM_STEP, 300 * ZOOM_STEP))
    assert tuple(brick.pos) == pytest.approx((100 - 20 * 0.25, 200 - 20 * 0.25))  # pivot stays
    assert (*panel.pos, *panel.size) == panel_box  # panels keep their size and place
    frames(3)
    assert brick._header.texture_size[1] > height * 1.15  # the text grew too
    screenshot("ui-zoomed-in")
    before = tuple(brick.pos)
    wheel(*pivot, "scrolldown")  # without Ctrl: over a morph, it scrolls it or does nothing
    assert world.zoom == pytest.approx(ZOOM_STEP) and tuple(brick.pos) == before
    wheel(window.width - 20, 20, "scrolldown")  # over the empty canvas it pans
    assert brick.y == pytest.approx(before[1] - world.pan_step)
    for _ in range(12):
        world.zoom_in()
    assert world.zoom == ZOOM_MAX  # bounded
    world.zoom_to(1.0)
    assert tuple(brick.size) == pytest.approx((380, 300)) and brick.zoom == 1.0


def test_app_keys_zoom_and_the_layout_keeps_the_zoom(window: Any, tmp_path: Path) -> None:
    app, _ = an_app(window, tmp_path)
    app.store.persona("BRICK", "the logician")
    layout = tmp_path / "old.json"
    old = {"version": 1, "operations": [
        {"op": "create_persona_morph", "persona": "BRICK", "x": 40, "y": 60, "w": 380, "h": 300},
    ]}  # fmt: skip
    layout.write_text(json.dumps(old))
    app.load_layout(layout)
    brick = app.world.persona_morphs()[0]
    assert app.world.zoom == 1.0  # a layout from before zoom opens at 1
    assert app._on_key(Window, 45, 0, "-", ["ctrl"])  # Ctrl+-
    assert app.world.zoom == pytest.approx(1 / ZOOM_STEP)
    assert brick.width == pytest.approx(380 / ZOOM_STEP)
    assert not app._on_key(Window, 45, 0, "-", [])  # a plain - is the text field's
    brick.input.focus = True  # a focused persona's field lets the zoom keys through
    assert not brick.input.keyboard_on_key_down(Window, (45, "-"), None, ["ctrl"])
    Window._modifiers = ["ctrl"]
    try:
        brick.input.keyboard_on_textinput(None, "-")  # SDL still sends the "-" as text
    finally:
        Window._modifiers = []
    frames(1)
    assert brick.input.text == ""  # and it types nothing
    brick.input.keyboard_on_textinput(None, "-")  # from the keyboard, not the Window
    frames(1)
    assert brick.input.text == "-"  # a plain - does
    brick.input.focus = False
    saved = app.current_layout().model_dump()
    assert {"op": "set_world", "zoom": pytest.approx(1 / ZOOM_STEP), "background": None} in (
        saved["operations"]
    )
    layout.write_text(json.dumps(saved))
    app.world.zoom_to(2.0)
    app.load_layout(layout)  # restored as saved: not zoomed twice
    brick = app.world.persona_morphs()[0]
    assert app.world.zoom == pytest.approx(1 / ZOOM_STEP) and brick.zoom == app.world.zoom
    assert brick.width == pytest.approx(380 / ZOOM_STEP)
    assert app._on_key(Window, 48, 0, "0", ["ctrl"])  # Ctrl+0: back to 1
    assert app.world.zoom == 1.0 and brick.width == pytest.approx(380)
    assert app._on_key(Window, 61, 0, "=", ["ctrl"])  # Ctrl+=
    assert app.world.zoom == pytest.approx(ZOOM_STEP)


def test_every_panel_field_lets_the_zoom_keys_through(window: Any, tmp_path: Path) -> None:
    """A focused Inspector or Memory field gets the keys first (Kivy calls the focused
    keyboard first): Ctrl+- must reach the workbench and type nothing into the field."""
    from kivy.uix.textinput import TextInput

    from morphs.field import Field

    app, _ = an_app(window, tmp_path)
    app.store.persona("BRICK", "the logician")
    inspector, memory = app.open_inspector("BRICK", (420, 20)), app.open_memory((100, 400))
    frames(2)
    fields = [w for panel in (inspector, memory) for w in panel.walk() if isinstance(w, TextInput)]
    assert len(fields) >= 3 and all(isinstance(f, Field) for f in fields), fields
    for field in fields:
        field.focus, field.text = True, ""
        if field.keyboard_on_key_down(Window, (45, "-"), None, ["ctrl"]):
            raise AssertionError(f"{field!r} kept Ctrl+-")
        Window._modifiers = ["ctrl"]
        try:
            field.keyboard_on_textinput(None, "-")  # SDL still sends the "-" as text
        finally:
            Window._modifiers = []
        frames(1)
        assert field.text == "", field  # typed nothing
        field.focus = False
    assert app._on_key(Window, 45, 0, "-", ["ctrl"])  # and the workbench zooms
    assert app.world.zoom == pytest.approx(1 / ZOOM_STEP)


def test_a_plot_s_text_and_lines_scale_with_the_zoom(window: Any) -> None:
    from morphs.plot import DPI, PlotMorph

    store = WorkbenchStore()
    store.metrics = {"tokens_per_s": [10.0, 12.0, 11.0], "ttft_ms": [200.0, 180.0, 190.0]}
    world = World(size_hint=(None, None), size=window.size)
    plot = PlotMorph(store, pos=(100, 100))
    world.add_widget(plot)
    window.add_widget(world)
    frames(2)
    plot.redraw()

    def text_heights() -> tuple[float, float]:
        renderer = plot._figure.canvas.get_renderer()
        tick = plot._figure.axes[0].yaxis.get_ticklabels()[0]
        return tick.get_window_extent(renderer).height, plot._title.texture_size[1]

    tick, title = text_heights()
    world.zoom_in()
    frames(3)
    plot.redraw()
    assert plot.zoom == pytest.approx(ZOOM_STEP) and plot._figure.dpi == pytest.approx(
        DPI * ZOOM_STEP
    )
    assert tuple(plot.size) == pytest.approx((360 * ZOOM_STEP, 300 * ZOOM_STEP))
    zoomed_tick, zoomed_title = text_heights()
    assert zoomed_tick > tick * 1.15 and zoomed_title > title * 1.15  # the text grew with it
    # the figure fills the plot at the new dpi: its inches times dpi are the widget's pixels
    w, h = plot._plot.size
    assert plot._figure.get_size_inches() * plot._figure.dpi == pytest.approx((w, h), abs=1)
    screenshot("ui-plot-zoomed-in")
    world.zoom_to(1.0)
    frames(3)
    plot.redraw()
    assert text_heights()[0] == pytest.approx(tick, rel=0.05)
