"""The whole workbench against a real backend subprocess: connect, lay out the personas,
drop a document on BRICK and watch the streamed reply arrive in BRICK's morph."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kivy.clock import Clock

from backend.launcher import starter
from morphs.persona import PersonaMorph
from tests.ui.conftest import frames, screenshot
from ui.app import WorkbenchApp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the workbench"
        frames(1)
        time.sleep(0.01)


def test_drop_a_document_and_see_the_streamed_reply(window: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    nobody = f"http://127.0.0.1:{free_port()}"  # no Ollama: the embedded model answers
    (home / "config.toml").write_text(f'[models]\nollama_host = "{nobody}"\nmax_tokens = 24\n')
    app = WorkbenchApp(home, start_backend=starter(home, f"workbench pid {os.getpid()}"))
    root = app.build()
    root.size = window.size
    window.add_widget(root)
    try:
        until(lambda: app.store.connection == "connected")
        until(lambda: len(app.world.persona_morphs()) == 4)
        morphs = {m.model.name: m for m in app.world.persona_morphs()}
        assert set(morphs) == {"BRICK", "ROBIN", "BABS", "ALFRED"}
        assert "CONNECTED" in app.status_bar.text
        until(lambda: all(m.model.model.startswith("embedded:") for m in morphs.values()))
        screenshot("workbench-default")

        doc = tmp_path / "question.txt"
        doc.write_text("What colour is the sky on a clear day?\n")
        brick: PersonaMorph = morphs["BRICK"]
        x, y = brick.center
        window.dispatch("on_drop_file", str(doc).encode(), x, window.height - y)
        until(lambda: brick.model.status == "streaming" or "BRICK:" in brick.model.conversation)
        until(lambda: brick.model.status == "idle" and "BRICK:" in brick.model.conversation)
        assert "You: Document: question.txt" in brick.model.conversation
        reply = brick.model.conversation.split("BRICK:", 1)[1].strip()
        assert reply  # real tokens from the embedded model
        assert brick.model.model.startswith("embedded:")
        assert app.store.metrics["tokens_per_s"]  # the plots' data arrived too
        until(lambda: bool(app.plots()))
        plot = app.plots()[0]
        first = plot.redraws
        until(lambda: plot.redraws > first or not plot.dirty, timeout=10)
        until(lambda: plot.redraws > 1, timeout=10)
        screenshot("workbench-after-drop")

        inspector = app.open_inspector("BRICK")
        until(lambda: inspector.description is not None and bool(inspector.description.history))
        assert "question.txt" in inspector.description.history[-1]["prompt"]  # the document is kept
        app.save_layout()
        assert (home / "layout.json").exists()
    finally:
        app.on_stop()
        Clock.tick()


def start_app(
    window: Any, home: Path, ollama_host: str | None = None, config: str = ""
) -> WorkbenchApp:
    """The workbench on ``home``, connected, its personas laid out; no Ollama unless
    ``ollama_host`` names one (e.g. a FakeOllama); ``config`` adds config.toml sections."""
    home.mkdir(parents=True, exist_ok=True)
    host = ollama_host or f"http://127.0.0.1:{free_port()}"
    (home / "config.toml").write_text(
        f'[models]\nollama_host = "{host}"\nmax_tokens = 16\n{config}'
    )
    app = WorkbenchApp(home, start_backend=starter(home, f"workbench pid {os.getpid()}"))
    root = app.build()
    root.size = window.size
    window.add_widget(root)
    until(lambda: app.store.connection == "connected")
    until(lambda: len(app.world.persona_morphs()) == 4)
    return app


def morph_named(app: WorkbenchApp, name: str) -> PersonaMorph:
    return next(m for m in app.world.persona_morphs() if m.model.name == name)


def test_halo_inspect_edit_duplicate_and_delete(window: Any, tmp_path: Path) -> None:
    app = start_app(window, tmp_path / "home")
    try:
        brick = morph_named(app, "BRICK")
        app.world.open_halo(brick)
        app.world.halo.dispatch("on_action", "inspect")
        until(
            lambda: (
                bool(app.inspectors("BRICK")) and app.inspectors("BRICK")[0].description is not None
            )
        )
        inspector = app.inspectors("BRICK")[0]
        # a new state value, accepted by the backend; the inspector refreshes live
        inspector.inputs["state:+new:path"].text = "mood.level"
        inspector.inputs["state:+new"].text = "3"
        inspector.edit_state("state:+new", None, None, new=True)
        until(lambda: "state:mood.level" in inspector.inputs)
        assert inspector.inputs["state:mood.level"].text == "3"
        # broken method source: the compile error is shown inline and nothing is applied
        inspector.inputs["method:+new:name"].text = "greet"
        inspector.inputs["method:+new"].text = "def greet(self):\n    return (1\n"
        inspector.define_method("method:+new", None)
        until(lambda: "line 2" in inspector.results["method:+new"].text)
        assert "greet" not in (inspector.description.methods if inspector.description else {})
        screenshot("workbench-inspector")
        # duplicate: a clone on the backend and a new morph on the canvas
        app.world.open_halo(brick)
        app.world.halo.dispatch("on_action", "duplicate")
        until(lambda: len(app.world.persona_morphs()) == 5)
        clone = morph_named(app, "BRICK-2")
        # dismiss with confirmation, deleting the clone from the image
        app._delete(clone)
        until(lambda: len(app.world.persona_morphs()) == 4)
        assert "BRICK-2" not in app.store.personas
    finally:
        app.on_stop()
        Clock.tick()


def test_backend_death_is_shown_and_recovered_without_losing_the_canvas(
    window: Any, tmp_path: Path
) -> None:
    app = start_app(window, tmp_path / "home")
    try:
        robin = morph_named(app, "ROBIN")
        robin.pos = (700, 100)  # the user's arrangement
        assert app.link is not None and app.link.process is not None
        first_pid = app.link.process.proc.pid  # type: ignore[union-attr]
        app.link.process.kill()  # kill -9
        until(lambda: app.store.connection in ("lost", "restarting"), timeout=30)
        assert "LOST" in app.status_bar.text or "RESTARTING" in app.status_bar.text
        until(lambda: app.store.connection == "connected", timeout=60)
        assert app.link.process.proc.pid != first_pid  # type: ignore[union-attr]
        assert tuple(morph_named(app, "ROBIN").pos) == (700, 100)
        assert len(app.world.persona_morphs()) == 4  # nothing lost from the canvas
    finally:
        app.on_stop()
        Clock.tick()


def test_layout_round_trip_and_malformed_layout(window: Any, tmp_path: Path) -> None:
    app = start_app(window, tmp_path / "home")
    try:
        until(lambda: len(app.plots()) == 1)  # the default layout has a live metrics plot
        plot = app.plots()[0]
        plot.pos = (900, 100)  # in view: a panel out of view would be moved back into it
        babs = morph_named(app, "BABS")
        babs.pos, babs.size = (600, 50), (300, 200)
        app.save_layout()
        babs.pos = (10, 10)
        app.load_layout(app.layout_path)
        babs = morph_named(app, "BABS")
        assert tuple(babs.pos) == (600, 50) and tuple(babs.size) == (300, 200)
        assert len(app.world.persona_morphs()) == 4
        until(lambda: [tuple(p.pos) for p in app.plots()] == [(900, 100)])  # placed last

        broken = tmp_path / "broken.json"
        broken.write_text('{"version": 1, "operations": 7}')
        app.load_layout(broken)
        assert "operations" in app.store.toasts[-1]
        assert tuple(morph_named(app, "BABS").pos) == (600, 50)  # the canvas stayed

        unknown = tmp_path / "unknown.json"
        unknown.write_text(
            '{"version": 1, "operations": [{"op": "create_persona_morph", "persona": "GHOST", "x": 1, "y": 1, "w": 100, "h": 100}]}'
        )
        app.load_layout(unknown)
        assert "GHOST" in " ".join(app.store.toasts)
        app.open_inspector("BRICK")
        until(lambda: app.inspectors("BRICK")[0].description is not None)
    finally:
        app.on_stop()
        Clock.tick()
