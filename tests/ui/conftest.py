"""Real Kivy widgets, rendered by SDL2's offscreen driver (no Xvfb, never the mock GL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ui.headless import configure

configure(1280, 800)  # before anything imports kivy.core.window

from kivy.base import EventLoop  # noqa: E402
from kivy.core.window import Window  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def frames(count: int = 3) -> None:
    """Advance the real event loop: tick the clock, dispatch input, draw."""
    for _ in range(count):
        EventLoop.idle()


def settle(seconds: float) -> None:
    """Run frames until ``seconds`` have passed on Kivy's clock (for Clock-throttled
    updates). On a loaded machine the clock's time runs behind the wall's, so this waits
    on the clock itself, for at most ten times as long in real time."""
    import time

    from kivy.clock import Clock

    start, deadline = Clock.get_time(), time.monotonic() + 10 * seconds
    while Clock.get_time() - start < seconds and time.monotonic() < deadline:
        frames(1)
        time.sleep(0.01)


def screenshot(name: str) -> Path:
    """Save the window to ``artifacts/NAME.png`` (after drawing a few frames)."""
    ARTIFACTS.mkdir(exist_ok=True)
    frames(3)
    target = ARTIFACTS / f"{name}.png"
    written = Window.screenshot(str(ARTIFACTS / f"{name}-.png"))
    Path(written).replace(target)
    return target


@pytest.fixture(scope="session")
def kivy_window() -> Any:
    EventLoop.ensure_window()
    if EventLoop.status != "started":
        EventLoop.start()
    assert type(Window).__name__ == "WindowSDL", type(Window)
    return Window


@pytest.fixture
def window(kivy_window: Any) -> Iterator[Any]:
    yield kivy_window
    for child in kivy_window.children[:]:
        kivy_window.remove_widget(child)
    frames(1)
