"""Real Kivy widgets on SDL2's offscreen driver: the shared headless set-up and fixtures."""

from __future__ import annotations

from tests.ui.conftest import kivy_window, window  # noqa: F401 - fixtures, and configure() first
