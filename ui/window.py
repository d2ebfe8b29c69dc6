"""The workbench's window: Kivy's settings before the window exists, and a size that fits the
layout within the screen.

``configure_kivy`` runs before anything imports ``kivy``: one log handler (Python's, so each
line prints once), no multitouch emulation (a right-click would leave a red dot), Esc does
not quit, no touch-device probes (libmtdev) and SDL2's clipboard (no xclip/xsel probes). A
pen or touch user still opens the halo with a long press.

``initial_geometry`` reads the layout the workbench will restore: its saved window (the
``set_window`` operation) or the bounding box of its morphs. ``fit_to_screen`` shrinks and
moves the window into the screen's usable area once SDL knows it.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The opaque strips above (connection) and below (messages) the World.
STATUS_H = 26
TOAST_H = 28
MARGIN = 20
MIN_SIZE = (640, 480)
FALLBACK_SIZE = (1240, 760)


def configure_kivy() -> None:
    """Kivy's settings for the workbench; call before the first ``import kivy``."""
    os.environ.setdefault("KIVY_NO_ARGS", "1")  # our CLI, not Kivy's, owns sys.argv
    os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")  # our handler only: each line once
    os.environ.setdefault("KIVY_CLIPBOARD", "sdl2")  # no xclip/xsel probing
    os.environ.setdefault("KIVY_NO_FILELOG", "1")
    kivy_log = logging.getLogger("kivy")
    if not kivy_log.level:  # Kivy's start-up banner is INFO; keep the terminal readable
        kivy_log.setLevel(logging.WARNING)
    kivy_log.addFilter(_drop_probe_noise)
    from kivy.config import Config

    Config.set("kivy", "exit_on_escape", "0")  # Esc closes the front panel instead
    Config.set("kivy", "log_level", "warning")
    for key, _ in Config.items("input"):  # probesysfs/mtdev: tracebacks without libmtdev
        Config.remove_option("input", key)
    Config.set("input", "mouse", "mouse,disable_multitouch")
    Config.set("graphics", "multisamples", "0")


#: Kivy's reports of optional providers it probed and could not load (not errors for us).
PROBE_NOISE = ("Input: MTDev is not supported", "Clipboard: Unable to find", "CutBuffer:")


def _drop_probe_noise(record: logging.LogRecord) -> bool:
    """Kivy's start-up banner (INFO, logged while Kivy resets its own level) and its probe
    reports stay out of the terminal unless the root logger is at DEBUG."""
    if logging.getLogger().level <= logging.DEBUG:
        return True
    message = str(record.msg)
    if record.levelno < logging.WARNING or message.startswith(PROBE_NOISE):
        logging.getLogger(__name__).debug("kivy: %s", message)
        return False
    return True


def layout_geometry(path: Path) -> tuple[int, int, int | None, int | None]:
    """(width, height, left, top) for the window from a layout file; left/top are None
    unless the layout saved them. Anything unreadable gives the fallback size."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        operations = [op for op in data.get("operations", []) if isinstance(op, dict)]
    except (OSError, ValueError, AttributeError, RecursionError):
        return (*FALLBACK_SIZE, None, None)
    for op in operations:
        if op.get("op") == "set_window":
            try:
                return (
                    int(op["w"]),
                    int(op["h"]),
                    _int_or_none(op.get("left")),
                    _int_or_none(op.get("top")),
                )
            except (KeyError, TypeError, ValueError, OverflowError):
                break
    right = top = 0.0
    for op in operations:
        try:
            right = max(right, float(op["x"]) + float(op["w"]))
            top = max(top, float(op["y"]) + float(op["h"]))
        except (KeyError, TypeError, ValueError):
            continue
    if not right or not top:
        return (*FALLBACK_SIZE, None, None)
    return (int(right + MARGIN), int(top + MARGIN + STATUS_H + TOAST_H), None, None)


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def initial_geometry(path: Path) -> None:
    """Open the window at the layout's size (within reason) and saved position."""
    from kivy.config import Config

    width, height, left, top = layout_geometry(path)
    width = min(max(width, MIN_SIZE[0]), 8192)
    height = min(max(height, MIN_SIZE[1]), 8192)
    Config.set("graphics", "width", str(width))
    Config.set("graphics", "height", str(height))
    if left is not None and top is not None:
        Config.set("graphics", "position", "custom")
        Config.set("graphics", "left", str(max(0, left)))
        Config.set("graphics", "top", str(max(0, top)))


class _Rect(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("w", ctypes.c_int), ("h", ctypes.c_int)]


def screen_area() -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of the display's usable area, from the SDL2 library Kivy loaded."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    paths = {line.split()[-1] for line in maps.splitlines() if "libSDL2" in line}
    for lib_path in sorted(paths):
        try:
            sdl = ctypes.CDLL(lib_path)
            rect = _Rect()
            if sdl.SDL_GetDisplayUsableBounds(0, ctypes.byref(rect)) == 0 and rect.w > 0:
                return rect.x, rect.y, rect.w, rect.h
        except (OSError, AttributeError):
            continue
    return None


def fit_to_screen(window: Any) -> None:
    """Shrink the window to the screen's usable area, and move it back onto the screen."""
    area = screen_area()
    if area is None:
        return
    x0, y0, sw, sh = area
    w, h = window.system_size
    fitted = (min(w, sw), min(h, sh))
    if fitted != (w, h):
        log.info("window %dx%d shrunk to the screen's %dx%d", w, h, *fitted)
        window.system_size = fitted
    left = min(max(window.left, x0), x0 + sw - fitted[0])
    top = min(max(window.top, y0), y0 + sh - fitted[1])
    if (left, top) != (window.left, window.top):
        window.left, window.top = left, top
