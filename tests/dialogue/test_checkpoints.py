"""Checkpoint retention: per-dialogue pruning keeps the file bounded; old finished dialogues
are retired; the debugger says when history was pruned."""

from __future__ import annotations

from pathlib import Path

from backend.dialogue import checkpoints
from backend.protos import Proto
from tests.dialogue.conftest import close_system, make_system
from tests.dialogue.doubles import Scenario


def test_pruning_bounds_checkpoints_and_retires_old_dialogues(tmp_path: Path) -> None:
    previous = Proto.llm
    system = make_system(
        tmp_path / "home",
        Scenario(research=False),
        max_rounds=8,
        impasse_rounds=100,
        keep_checkpoints=10,
        prune_every=4,
        keep_dialogues=2,
    )
    try:
        service = system.service
        ids = []
        for n in range(3):
            ids.append(service.start_dialogue(f"Goal {n}").dialogue_id)
            system.wait(lambda e, i=ids[-1]: e.kind == "dialogue_finished" and e.dialogue_id == i)
        store = service.worker.engine().store
        assert isinstance(store, checkpoints.SqliteStore)
        assert store.count(ids[-1]) <= 10 + 4  # 8 rounds x 3 nodes + 2 made
        _, steps, truncated = service.history(ids[-1])
        assert truncated and steps[-1].node == "alfred" and len(steps) <= 14
        # keep_dialogues=2: the oldest finished dialogue is gone, checkpoints and all
        assert [d.dialogue_id for d in service.list_dialogues()] == ids[1:]
        assert store.count(ids[0]) == 0
        assert store.file_bytes() > 0
    finally:
        close_system(system)
        Proto.llm = previous


def test_dialogue_files_are_private(tmp_path: Path) -> None:
    import stat

    previous = Proto.llm
    system = make_system(tmp_path / "home", Scenario(research=False), max_rounds=1)
    try:
        system.service.start_dialogue("Speed or care?")
        system.wait(lambda e: e.kind == "dialogue_finished")
        folder = system.service.dir
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        files = sorted(folder.iterdir())
        assert {f.name for f in files} >= {
            "checkpoints.sqlite",
            "dialogues.sqlite",
            "checkpoints.sqlite-wal",
            "dialogues.sqlite-wal",
        }
        assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files), [
            (f.name, oct(f.stat().st_mode)) for f in files
        ]
    finally:
        close_system(system)
        Proto.llm = previous
