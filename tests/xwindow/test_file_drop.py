"""The product's signature gesture, for real: a file dragged from another application (a
GTK drag source speaking XDND) and dropped onto BABS in the workbench's X window. The X
server carries the drop; SDL and Kivy receive it; BABS remembers the document and answers."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.xwindow.conftest import Workbench, until
from tests.xwindow.test_workbench_window import Geometry, bright, count

# Real windows, a real model on 2 shared cores: minutes, not the suite's default 120 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SOURCE = Path(__file__).with_name("xdnd_source.py")
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with python3-gi (not the project's venv)
TOAST = (255, 217, 115)  # ui.app's message strip text colour


def _require_gtk() -> None:
    probe = (
        subprocess.run(
            [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('Gtk', '3.0')"],
            capture_output=True,
            check=False,
        )
        if shutil.which(SYSTEM_PYTHON)
        else None
    )
    if probe is None or probe.returncode != 0:
        import os

        why = "no GTK for the drag source: apt-get install python3-gi gir1.2-gtk-3.0"
        if os.environ.get("ENTROPIC_REQUIRE_ALL") == "1":
            pytest.fail(f"{why} (ENTROPIC_REQUIRE_ALL=1)")
        pytest.skip(why)


def test_a_file_dragged_from_another_app_onto_babs(workbench: Workbench, tmp_path: Path) -> None:
    _require_gtk()
    screen = workbench.screen
    geo = Geometry(workbench)
    babs = geo.morph("BABS")
    title = (babs[0] + 8, babs[1] + 8, babs[0] + 80, babs[1] + 30)
    until(lambda: count(screen.screenshot("xdnd-00-starting"), title, bright) > 20, 90, "BABS")
    doc = tmp_path / "launch-notes.md"
    doc.write_text("# Launch\n\nThe launch of the Orion probe is on a Tuesday in May.\n")

    source = subprocess.Popen(
        [SYSTEM_PYTHON, str(SOURCE), str(doc), "0", "690"],
        env=screen.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert source.stdout is not None
        assert source.stdout.readline().strip() == "ready", "the drag source did not start"
        screen.screenshot("xdnd-01-source")
        target = ((babs[0] + babs[2]) // 2, (babs[1] + babs[3]) // 2)
        screen.x("xdotool", "mousemove", "60", "720")
        time.sleep(0.3)
        screen.x("xdotool", "mousedown", "1")
        for i in range(1, 21):  # a drag is a motion with the button held
            x = 60 + (target[0] - 60) * i / 20
            y = 720 + (target[1] - 720) * i / 20
            screen.x("xdotool", "mousemove", str(int(x)), str(int(y)))
            time.sleep(0.05)
        time.sleep(0.5)
        screen.screenshot("xdnd-02-dragging")
        screen.x("xdotool", "mouseup", "1")
        source.wait(timeout=30)
        assert "sent" in (source.stdout.read() or ""), "BABS's window never took the data"
    finally:
        if source.poll() is None:
            source.kill()
            source.wait()
        if source.stdout is not None:
            source.stdout.close()

    # Remembered: a toast in the message strip, and the document in the memory.
    def remembered() -> bool:
        strip = (geo.x + 8, geo.y + geo.h - 26, geo.x + 700, geo.y + geo.h - 2)
        shot = screen.screenshot("xdnd-03-remembered")
        yellow = np.all(np.abs(np.asarray(shot.crop(strip), dtype=np.int16) - TOAST) < 40, -1)
        return int(np.count_nonzero(yellow)) > 30

    until(remembered, 120, "the 'Remembered launch-notes.md' message")
    stats = workbench.call("memory_stats")
    assert stats["rows"]["documents"] == 1

    # And BABS answers the document.
    def answered() -> str | None:
        for item in workbench.call("describe_proto", {"proto": "BABS"})["history"]:
            if "launch-notes.md" in item.get("prompt", "") and item.get("reply"):
                return str(item["reply"])
        return None

    assert until(answered, 240, "BABS's answer").strip()
    time.sleep(1.5)
    shot = screen.screenshot("xdnd-04-answered")
    talk = (babs[0] + 12, babs[1] + 90, babs[2] - 12, babs[3] - 50)
    assert count(shot, talk, bright) > 200, "no conversation text in BABS's morph"
