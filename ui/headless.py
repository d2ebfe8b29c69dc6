"""Kivy set-up for running without a screen (tests, benchmarks): SDL2's offscreen driver.

Call ``configure`` before anything imports ``kivy.core.window``. The mock GL backend is
refused: it renders nothing, so widget tests would pass vacuously and figures would lie.
"""

from __future__ import annotations

import os
import tempfile


def configure(width: int, height: int, **graphics: str) -> None:
    if os.environ.get("KIVY_GL_BACKEND") == "mock":
        raise RuntimeError("KIVY_GL_BACKEND=mock renders nothing; unset it")
    os.environ["KIVY_NO_ARGS"] = "1"
    os.environ["KIVY_USE_DEFAULTCONFIG"] = "1"
    os.environ["KIVY_NO_FILELOG"] = "1"
    os.environ["KIVY_NO_CONSOLELOG"] = "1"
    os.environ.setdefault("KIVY_HOME", tempfile.mkdtemp(prefix="kivy-home-"))
    from kivy.config import Config

    Config.set("graphics", "width", str(width))
    Config.set("graphics", "height", str(height))
    for key, value in graphics.items():
        Config.set("graphics", key, value)
    for key, _ in Config.items("input"):  # no real input devices: tests synthesize touches
        Config.remove_option("input", key)
