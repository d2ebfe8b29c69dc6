"""Stale state, on the real workbench app and widgets (offscreen SDL2): a persona's
dissonance tint fades once its dialogue ends, and an open Memory panel refreshes its
figures after an ingest. The backend link is a RECORDING TEST DOUBLE (it sends nothing):
these are about what the UI does with events, which the store receives as from the link."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared_api.commands import MemoryStats
from shared_api.dialogue import DialogueSummary
from shared_api.events import MemoryMetrics
from tests.ui.conftest import settle
from ui.app import WorkbenchApp


class RecordingLink:
    """TEST DOUBLE for ``BackendLink``: records the commands, answers none."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def start(self) -> None:
        pass

    def stop(self, *, stop_backend: bool = False) -> None:
        pass

    def send(self, command: Any, on_reply: Any = None) -> None:
        self.sent.append(command)


def an_app(window: Any, tmp_path: Path) -> tuple[WorkbenchApp, RecordingLink]:
    link = RecordingLink()
    app = WorkbenchApp(tmp_path, link=link)  # type: ignore[arg-type]
    root = app.build()
    root.size = window.size
    window.add_widget(root)
    return app, link


def test_the_dissonance_tint_fades_once_the_dialogue_ends(window: Any, tmp_path: Path) -> None:
    app, _ = an_app(window, tmp_path)
    brick, robin = app.store.persona("BRICK"), app.store.persona("ROBIN")
    brick.dissonance = robin.dissonance = 0.9
    summary = DialogueSummary(
        dialogue_id="d-1",
        goal="Speed or care?",
        status="running",
        personas={"logic": "BRICK", "empathy": "ROBIN"},
    )
    app.dialogues.store.remember(summary)
    settle(0.5)
    assert brick.dissonance == 0.9  # still arguing: still red
    app.dialogues.store.remember(summary.model_copy(update={"status": "finished"}))
    settle(5.0)
    assert brick.dissonance < 0.05 and robin.dissonance < 0.05


def test_the_memory_panel_refreshes_its_figures_after_an_ingest(
    window: Any, tmp_path: Path
) -> None:
    app, link = an_app(window, tmp_path)
    app.open_memory((100, 700))
    asked = sum(isinstance(c, MemoryStats) for c in link.sent)
    app.store.apply(MemoryMetrics(op="ingest", took_ms=5, rows=3, chunks=3))
    settle(1.0)
    assert sum(isinstance(c, MemoryStats) for c in link.sent) == asked + 1
    assert "Remembered a document: 3 chunks" in app.store.toasts
