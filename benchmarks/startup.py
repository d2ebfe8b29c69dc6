"""Start-up of the workbench, as a user starts it (``main.py``), against a bare Kivy window.

Each run spawns ``main.py`` with ``ENTROPIC_STARTUP_TRACE`` set: the app appends its
milestones to that file (``ui.app.trace``) and quits once it is ready. Measured from the
moment the process is spawned:

- ``first_frame``: the first frame is drawn (target <= 2 s);
- ``backend_ready``: the backend answers and the workbench is connected (target <= 2.5 s);
- ``ask_ready``: the personas are laid out, connected: a question can be typed and sent;
- ``quit_s``: from Quit to the process's exit (the backend it started saved and stopped;
  target <= 3 s).

The baseline is ``python -c "import kivy ..."`` opening a bare window, timed to its first
frame the same way. One cold start (a new home: a new image, the memory created), then warm
starts on the same home, alternating with the baseline; medians are reported. Under Xvfb
when it is installed (a real X window), else SDL2's offscreen driver.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import log, verdict

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"first_frame": 2.0, "backend_ready": 2.5, "quit_s": 3.0}
BASELINE = """
import json, os, sys, time
from kivy.app import App
from kivy.core.window import Window
from kivy.uix.label import Label

class Bare(App):
    def load_kv(self, *args, **kwargs):  # no .kv file beside a -c script
        return False

    def build(self):
        Window.bind(on_draw=self.drawn)
        return Label(text="bare kivy")

    def drawn(self, *_):
        Window.unbind(on_draw=self.drawn)
        with open(os.environ["ENTROPIC_STARTUP_TRACE"], "a") as out:
            out.write(json.dumps({"event": "first_frame", "t": time.time()}) + "\\n")
        self.stop()

Bare().run()
"""


def _display() -> tuple[dict[str, str], subprocess.Popen[bytes] | None]:
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    env["KIVY_NO_ARGS"] = "1"
    if shutil.which("Xvfb") is None:
        return env, None
    number = 90 + os.getpid() % 300
    while Path(f"/tmp/.X11-unix/X{number}").exists():
        number += 1
    xvfb = subprocess.Popen(
        ["Xvfb", f":{number}", "-screen", "0", "1366x768x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not Path(f"/tmp/.X11-unix/X{number}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    env["DISPLAY"] = f":{number}"
    return env, xvfb


def _run(argv: list[str], env: dict[str, str], work: Path, timeout: float = 120) -> dict[str, Any]:
    """Spawn ``argv``; the seconds from the spawn to each milestone it traced."""
    trace = work / f"trace-{time.monotonic_ns()}.jsonl"
    env = {**env, "ENTROPIC_STARTUP_TRACE": str(trace)}
    started = time.time()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, timeout=timeout)
    exited = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[1]} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    times = {e["event"]: round(e["t"] - started, 3) for e in events}
    if "quitting" in times:
        times["quit_s"] = round(exited - started - times["quitting"], 3)
    return times


def run(quick: bool = False) -> dict[str, Any]:
    warm_runs = 1 if quick else 3
    env, xvfb = _display()
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    home = work / "home"
    home.mkdir()
    (home / "config.toml").write_text('[models]\nbackend = "embedded"\n')
    env["ENTROPIC_HOME"] = str(home)
    env["HOME"] = str(work)  # a fresh Kivy configuration, as for a new user
    workbench = [sys.executable, "main.py"]
    baseline_cmd = [sys.executable, "-c", BASELINE]
    try:
        cold = _run(workbench, env, work)
        log(f"cold start (new home): {cold}")
        warm: list[dict[str, Any]] = []
        bare: list[dict[str, Any]] = []
        for i in range(warm_runs):
            bare.append(_run(baseline_cmd, env, work))
            warm.append(_run(workbench, env, work))
            log(f"warm start {i + 1}: {warm[-1]}; bare kivy window: {bare[-1]}")
    finally:
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait()
        shutil.rmtree(work, ignore_errors=True)

    def median(runs: list[dict[str, Any]], key: str) -> float | None:
        values = [r[key] for r in runs if key in r]
        return round(statistics.median(values), 3) if values else None

    figures: dict[str, Any] = {
        "benchmark": "startup",
        "display": "xvfb" if xvfb is not None else "offscreen",
        "baseline_first_frame_s": median(bare, "first_frame"),
        "cold": cold,
    }
    for key in ("first_frame", "backend_ready", "ask_ready", "quit_s"):
        figures[f"{key}_s" if not key.endswith("_s") else key] = median(warm, key)
    for key, target in TARGETS.items():
        name = f"{key}_s" if not key.endswith("_s") else key
        value = figures[name]
        figures[f"{name}_target"] = f"<= {target} s: " + verdict(
            value is not None and value <= target
        )
    return figures


if __name__ == "__main__":
    from benchmarks._common import emit

    emit(run(quick="--quick" in sys.argv))
