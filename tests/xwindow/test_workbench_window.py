"""The workbench in a real X window, used as a person uses it: its window fits the layout,
a question typed into BRICK is answered in BRICK's morph, the halo opens the Inspector
(no red dot where the right-click was), the wheel scrolls the Inspector, a real Esc key
closes it and so does its close box, Ctrl+- / Ctrl+0 / Ctrl+wheel zoom the world, and Ctrl-C
in the terminal quits (the layout saved with its zoom, the backend stopped)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.xwindow.conftest import ROOT, SCREEN, Workbench, until

# Real windows, a real model on 2 shared cores: minutes, not the suite's default 120 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

LAYOUT = json.loads((ROOT / "layouts" / "default.json").read_text())
MORPHS = {op["persona"]: op for op in LAYOUT["operations"] if op["op"] == "create_persona_morph"}
STATUS_H, TOAST_H = 26, 28  # ui.window's strips
STRIP = (28, 32, 40)  # ui.app.STRIP_COLOUR in 8 bits
INSPECTOR_BG = (28, 33, 43)  # morphs.inspector's fill
HANDLE_I = (204, 166, 77)  # the halo's inspect handle
WORLD_BG = (18, 20, 26)  # morphs.world's canvas


def count(image: Any, box: tuple[int, int, int, int], test: Any) -> int:
    """How many pixels in ``box`` (left, top, right, bottom) pass ``test`` (on an array)."""
    pixels = np.asarray(image.crop(box), dtype=np.int16)
    return int(np.count_nonzero(test(pixels)))


def near(colour: tuple[int, int, int], tol: int = 6) -> Any:
    return lambda p: (np.abs(p - np.array(colour)) <= tol).all(axis=-1)


def bright(p: Any) -> Any:
    return p.min(axis=-1) > 170  # text on the dark morphs


def red_dot(p: Any) -> Any:
    return (p[..., 0] > 150) & (p[..., 1] < 90) & (p[..., 2] < 90)


class Geometry:
    """Window-space rectangles of the layout's morphs, on the screen."""

    def __init__(self, bench: Workbench) -> None:
        self.x, self.y, self.w, self.h = bench.origin()

    def morph(self, name: str) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) on the screen of a layout morph (Kivy's y is up)."""
        op = MORPHS[name]
        left, top = self.x + op["x"], self.y + self.h - (op["y"] + op["h"])
        return int(left), int(top), int(left + op["w"]), int(top + op["h"])

    def kivy(self, x: float, y: float) -> tuple[int, int]:
        """Screen coordinates of a point in Kivy's window coordinates."""
        return int(self.x + x), int(self.y + self.h - y)


def test_type_to_brick_inspect_scroll_close_and_quit(workbench: Workbench) -> None:
    screen = workbench.screen
    until(lambda: (workbench.home / "connection.json").exists(), 60, "the backend")
    until(lambda: "CONNECTED" in _status(workbench), 60, "the backend to answer")
    geo = Geometry(workbench)
    brick = geo.morph("BRICK")
    title = (brick[0] + 8, brick[1] + 8, brick[0] + 80, brick[1] + 30)
    until(  # the personas are laid out once the backend's list arrives
        lambda: count(screen.screenshot("xwindow-00-starting"), title, bright) > 20,
        60,
        "BRICK's morph",
    )

    # The window fits the screen and the layout: every morph lies inside it, below the
    # opaque status strip and above the message strip.
    assert geo.w <= SCREEN[0] and geo.h <= SCREEN[1], (geo.w, geo.h)
    assert geo.x >= 0 and geo.y >= 0
    for name in MORPHS:
        left, top, right, bottom = geo.morph(name)
        assert left >= geo.x and right <= geo.x + geo.w, name
        assert top >= geo.y + STATUS_H and bottom <= geo.y + geo.h - TOAST_H, name
    shot = screen.screenshot("xwindow-01-opened")
    strip = (geo.x + geo.w - 200, geo.y + 2, geo.x + geo.w - 20, geo.y + STATUS_H - 2)
    assert count(shot, strip, near(STRIP)) > 0.9 * 180 * (STATUS_H - 4)

    left, top = brick[2] + 20, brick[1]  # where the Inspector will open
    inside = (left + 40, top + 60, left + 420, top + 500)
    empty = count(shot, inside, near(INSPECTOR_BG))  # text fields share its colour

    # Right-click BRICK: the halo opens, and no red multitouch dot is left where we clicked.
    click = (brick[0] + 200, brick[1] + 160)
    screen.click(*click, button=3)
    # the halo's I, at the top-right corner, kept below the status strip
    inspect_handle = (brick[2] + 22, max(brick[1] - 22, geo.y + STATUS_H + 15))
    shot = until(
        lambda: _shot_if(screen, "xwindow-02-halo", _box(inspect_handle, 10), HANDLE_I, 50),
        30,
        "the halo",
    )
    around = (click[0] - 25, click[1] - 25, click[0] + 25, click[1] + 25)
    assert count(shot, around, red_dot) == 0, "a red dot was left by the right-click"

    # I: the Inspector opens beside BRICK, in view.
    screen.click(*inspect_handle)
    shot = until(
        lambda: _shot_if(screen, "xwindow-03-inspector", inside, INSPECTOR_BG, empty + 20_000),
        60,
        "the Inspector",
    )
    time.sleep(2)  # its description arrives from the backend
    shot = screen.screenshot("xwindow-03-inspector")

    # The wheel scrolls the Inspector's contents.
    screen.wheel(left + 230, top + 300, 6)
    time.sleep(1)
    scrolled = screen.screenshot("xwindow-04-inspector-scrolled")
    assert shot.crop(inside).tobytes() != scrolled.crop(inside).tobytes(), "did not scroll"

    # A real Esc key closes the panel in front.
    screen.key("Escape")
    time.sleep(1)
    shot = screen.screenshot("xwindow-05-inspector-esc")
    assert count(shot, inside, near(INSPECTOR_BG)) < empty + 2_000, "Esc did not close it"

    # Opened again from the halo, its close box closes it.
    screen.click(*click, button=3)
    until(
        lambda: _shot_if(screen, "xwindow-05-halo-again", _box(inspect_handle, 10), HANDLE_I, 50),
        30,
        "the halo again",
    )
    screen.click(*inspect_handle)
    until(
        lambda: _shot_if(screen, "xwindow-05-reopened", inside, INSPECTOR_BG, empty + 20_000),
        60,
        "the Inspector again",
    )
    screen.click(left + 460 - 16, top + 16)
    time.sleep(1)
    shot = screen.screenshot("xwindow-05-inspector-closed")
    assert count(shot, inside, near(INSPECTOR_BG)) < empty + 2_000, "still open"

    # Type a question into BRICK's text field; Enter sends it, the answer streams in.
    talk = (brick[0] + 12, brick[1] + 90, brick[2] - 12, brick[3] - 50)
    before = count(screen.screenshot("xwindow-06-before-typing"), talk, bright)
    question = "Name the colour of the sky on a clear day."
    screen.click(*geo.kivy(MORPHS["BRICK"]["x"] + 150, MORPHS["BRICK"]["y"] + 27))
    screen.type(question)
    screen.screenshot("xwindow-07-typed")
    screen.key("Return")
    reply = until(lambda: _answered(workbench, question), 240, "BRICK's answer")
    time.sleep(1.5)  # the conversation label refreshes twice a second at most
    shot = screen.screenshot("xwindow-08-answered")
    assert count(shot, talk, bright) > before + 200, "no conversation text appeared in BRICK"
    assert reply.strip()

    _zoom_with_keys_and_wheel(screen, brick)

    # Ctrl-C in the terminal quits like the menu's Quit: layout saved, backend stopped.
    backend = workbench.backend_pid()
    took = workbench.quit_with_ctrl_c()
    assert workbench.proc.returncode == 0, workbench.log()[-3000:]
    until(lambda: not _alive(backend), 30, "the backend to stop")
    saved = json.loads((workbench.home / "layout.json").read_text())
    window = next(op for op in saved["operations"] if op["op"] == "set_window")
    assert (window["w"], window["h"]) == (geo.w, geo.h)
    world = next(op for op in saved["operations"] if op["op"] == "set_world")
    assert world["zoom"] == pytest.approx(1.25)  # the zoom the Ctrl+wheel left
    print(f"quit took {took:.2f}s")
    _clean_terminal(workbench.log())


def _steady_bright(screen: Any, box: tuple[int, int, int, int]) -> int:
    """The bright pixels in ``box`` that stay: the least over shots taken back to back for
    1.2 s (one shot takes ~0.1 s). A focused field's cursor blinks, on 0.5 s and off 0.5 s,
    and alone it counts ~15 pixels; typed text does not blink."""
    least, started = None, time.monotonic()
    while least is None or time.monotonic() - started < 1.2:
        found = count(screen.screenshot("xwindow-11-field"), box, bright)
        least = found if least is None else min(least, found)
    return least


def _zoom_with_keys_and_wheel(screen: Any, brick: tuple[int, int, int, int]) -> None:
    """Ctrl+- zooms the world out (about its centre), Ctrl+0 resets it, Ctrl+wheel zooms in
    about the pointer: seen in the pixels at BRICK's left edge."""
    mid = (brick[1] + brick[3]) // 2
    inner = (brick[0] + 8, mid - 40, brick[0] + 24, mid + 40)  # just inside BRICK's left edge
    outer = (brick[0] - 30, mid - 40, brick[0] - 14, mid + 40)  # the canvas left of it
    area = 16 * 80
    shot = screen.screenshot("xwindow-09-before-zoom")
    assert count(shot, inner, near(WORLD_BG)) < 0.1 * area
    assert count(shot, outer, near(WORLD_BG)) > 0.9 * area
    screen.key("ctrl+minus")
    time.sleep(1)
    shot = screen.screenshot("xwindow-10-zoomed-out")
    assert count(shot, inner, near(WORLD_BG)) > 0.9 * area, "Ctrl+- did not zoom out"
    screen.key("ctrl+0")
    time.sleep(1)
    shot = screen.screenshot("xwindow-11-zoom-reset")
    assert count(shot, inner, near(WORLD_BG)) < 0.1 * area, "Ctrl+0 did not reset the zoom"
    field = (brick[0] + 14, brick[3] - 42, brick[2] - 14, brick[3] - 12)  # BRICK's text field
    assert _steady_bright(screen, field) < 10, "a zoom key typed into the focused field"
    screen.x("xdotool", "mousemove", str((brick[0] + brick[2]) // 2), str(mid))
    screen.x("xdotool", "keydown", "ctrl", "click", "4", "keyup", "ctrl")  # the wheel, up
    time.sleep(1)
    shot = screen.screenshot("xwindow-12-ctrl-wheel-zoomed-in")
    assert count(shot, outer, near(WORLD_BG)) < 0.1 * area, "Ctrl+wheel did not zoom in"


def _shot_if(
    screen: Any, name: str, box: tuple[int, int, int, int], colour: tuple[int, int, int], n: int
) -> Any:
    """A screenshot, if at least ``n`` pixels in ``box`` are near ``colour`` (else None)."""
    shot = screen.screenshot(name)
    return shot if count(shot, box, near(colour, 30 if colour == HANDLE_I else 6)) > n else None


def _box(centre: tuple[int, int], r: int) -> tuple[int, int, int, int]:
    return centre[0] - r, centre[1] - r, centre[0] + r, centre[1] + r


def _status(bench: Workbench) -> str:
    try:
        bench.call("ping", timeout=5)
    except (AssertionError, ValueError, OSError):
        return ""
    return "CONNECTED"


def _answered(bench: Workbench, question: str) -> str | None:
    history = bench.call("describe_proto", {"proto": "BRICK"})["history"]
    for item in history:
        if item.get("prompt") == question and item.get("reply"):
            return str(item["reply"])
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return (
        Path(f"/proc/{pid}").exists()
        and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    )


def _clean_terminal(log: str) -> None:
    """Each line once, no tracebacks for optional providers, no DEBUG lines."""
    assert "Traceback" not in log, log[-3000:]
    assert " DEBUG " not in log
    assert "on_dropfile" not in log
    lines = [line for line in log.splitlines() if line.strip()]
    assert len(lines) == len(set(lines)), "a line was printed twice"
