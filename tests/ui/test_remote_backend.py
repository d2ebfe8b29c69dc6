"""The workbench attached to a remote backend over CURVE, as the README's "Scaling out"
walkthrough sets it up (on loopback): the backend in its own home on tcp with CURVE, the
workbench in another home holding a copy of the backend's connection file and its own client
keypair (``main.py keys``). Authorized, it asks BRICK and the streamed answer arrives; not
authorized, or without a keypair, it says why in the status bar and starts no backend."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kivy.clock import Clock

from backend.launcher import MAIN, BackendProcess
from main import _spawn_backend as spawn_backend
from shared_api.connection import read_connection_file
from tests.ui.conftest import frames, screenshot
from tests.ui.test_daily_use import key
from tests.ui.test_workbench import free_port, morph_named, until
from ui.app import WorkbenchApp
from ui.link import StartedBackend


def keys(home: Path, *authorize: Path) -> dict[str, str]:
    argv = [sys.executable, str(MAIN), "keys", "--home", str(home)]
    if authorize:
        argv += ["--authorize", *map(str, authorize)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return dict(json.loads(done.stdout))


def never_start() -> StartedBackend:
    raise AssertionError("the workbench started a backend in place of the remote one")


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[BackendProcess]:
    """The backend's machine: its home on tcp 127.0.0.1 with CURVE, the laptop's key
    authorized (``tmp_path/laptop``)."""
    server = tmp_path / "server"
    server.mkdir()
    nobody = f"http://127.0.0.1:{free_port()}"  # no Ollama: the embedded model answers
    (server / "config.toml").write_text(
        '[backend]\ntransport = "tcp"\nip = "127.0.0.1"\ncurve = true\n\n'
        f'[models]\nollama_host = "{nobody}"\nmax_tokens = 12\n'
    )
    keys(server)
    laptop = keys(tmp_path / "laptop")
    keys(server, Path(laptop["client_public_key_file"]))
    proc = BackendProcess(server)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def attach(window: Any, home: Path, server: Path) -> WorkbenchApp:
    """The workbench of ``home`` after copying the backend's connection file there."""
    home.mkdir(exist_ok=True)
    shutil.copyfile(server / "connection.json", home / "connection.json")
    app = WorkbenchApp(home, start_backend=never_start)
    root = app.build()
    root.size = window.size
    window.add_widget(root)
    return app


def refused(window: Any, home: Path, server: Path, says: str) -> None:
    app = attach(window, home, server)
    try:
        until(lambda: app.store.connection == "lost" and says in app.store.connection_detail)
        frames(2)
        assert says in app.status_bar.text and "Traceback" not in app.status_bar.text
        screenshot(f"workbench-remote-{home.name}")
        assert app.link is not None and app.link.process is None  # nothing started here
        assert read_connection_file(home).home == str(server)  # the copy is kept as it was
    finally:
        app.on_stop()
        for child in window.children[:]:
            window.remove_widget(child)
        Clock.tick()


def test_workbench_on_a_remote_curve_backend(
    window: Any, tmp_path: Path, remote: BackendProcess
) -> None:
    server = remote.home
    # a laptop with no keypair at all, then one whose key the backend does not know
    refused(window, tmp_path / "keyless", server, "Run `main.py keys --home HOME`")
    keys(tmp_path / "stranger")
    refused(window, tmp_path / "stranger", server, "refused this home's CURVE key")
    app = attach(window, tmp_path / "laptop", server)
    assert spawn_backend(tmp_path / "laptop", never_start) is None  # main.py starts none
    try:
        until(lambda: app.store.connection == "connected", timeout=120)
        assert app.store.connection_detail.startswith("tcp://127.0.0.1:")
        until(lambda: len(app.world.persona_morphs()) == 4)
        brick = morph_named(app, "BRICK")
        until(lambda: brick.model.model.startswith("embedded:"))
        brick.input.focus = True
        brick.input.text = "What colour is the sky on a clear day?"
        key(brick.input, "enter")  # as a user asks: typed, then Enter
        until(
            lambda: brick.model.status == "idle" and "BRICK:" in brick.model.conversation,
            timeout=180,  # a loaded 2-core machine
        )
        answer = brick.model.conversation.split("BRICK:", 1)[1].strip()
        assert answer and "[error" not in answer  # streamed tokens, over CURVE events
        assert app.store.metrics["tokens_per_s"]  # metrics events arrived too
        screenshot("workbench-remote-curve")
        assert app.link is not None and app.link.process is None
    finally:
        app.on_stop()
        Clock.tick()
    assert remote.alive  # the workbench leaves the remote backend running
