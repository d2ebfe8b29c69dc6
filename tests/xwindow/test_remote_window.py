"""The workbench in a real X window attached to a remote backend over CURVE, as the README's
"Scaling out" starts it: the backend runs in a home of its own on tcp with CURVE; the
"laptop" home holds only a copy of its connection file and an authorized client key. A
question typed into BRICK is answered there, and quitting the workbench leaves the remote
backend running (it did not start it)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.launcher import BackendProcess
from tests.integration.test_curve import keys
from tests.xwindow.conftest import ROOT, Screen, Workbench, small_model, until
from tests.xwindow.test_workbench_window import MORPHS, Geometry, _answered, bright, count

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_a_laptop_workbench_on_a_remote_curve_backend(screen: Screen, tmp_path: Path) -> None:
    server = tmp_path / "server"
    server.mkdir()
    (server / "config.toml").write_text(
        '[backend]\ntransport = "tcp"\nip = "127.0.0.1"\ncurve = true\n'
        f'[models]\nbackend = "embedded"\nembedded_model = "{small_model()}"\nmax_tokens = 24\n'
        "[memory]\nretrieval_k = 0\n[learning]\ncurator_interval_s = 0\n"
        "[motivator]\ncuriosity_interval_s = 0\n"
    )
    laptop = tmp_path / "laptop"
    keys(server)
    keys(server, Path(keys(laptop)["client_public_key_file"]))
    backend = BackendProcess(server)
    backend.start()
    log_path = tmp_path / "workbench.log"
    try:
        shutil.copyfile(server / "connection.json", laptop / "connection.json")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "main.py", "--home", str(laptop)],
                cwd=ROOT, env={**screen.env, "HOME": str(tmp_path)}, stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        bench = Workbench(screen, laptop, proc, log_path)
        try:
            until(lambda: any(t.startswith("Entropic OS") for t, *_ in screen.windows()), 60,
                  "window")  # fmt: skip
            geo = Geometry(bench)
            brick = geo.morph("BRICK")
            title = (brick[0] + 8, brick[1] + 8, brick[0] + 80, brick[1] + 30)
            until(
                lambda: count(screen.screenshot("xwindow-remote-00"), title, bright) > 20,
                90,
                "BRICK's morph, laid out from the remote backend's personas",
            )
            talk = (brick[0] + 12, brick[1] + 90, brick[2] - 12, brick[3] - 50)
            before = count(screen.screenshot("xwindow-remote-01"), talk, bright)
            question = "Name the colour of the sky on a clear day."
            screen.click(*geo.kivy(MORPHS["BRICK"]["x"] + 150, MORPHS["BRICK"]["y"] + 27))
            screen.type(question)
            screen.key("Return")
            reply = until(lambda: _answered(bench, question), 240, "BRICK's answer")
            time.sleep(1.5)  # the conversation label refreshes twice a second at most
            shot = screen.screenshot("xwindow-remote-02-answered")
            assert count(shot, talk, bright) > before + 200, "no answer appeared in BRICK"
            assert reply.strip()
            bench.quit_with_ctrl_c()
            assert proc.returncode == 0, bench.log()[-3000:]
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=30)
        assert backend.alive  # not the workbench's to stop
        assert not (laptop / "backend.log").exists()  # and none was started on the laptop
        assert "Traceback" not in bench.log()
    finally:
        backend.stop()
