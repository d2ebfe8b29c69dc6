"""Restart time of a real backend after a crash that left 100,000 unsaved journal records.

The home runs with ``autosave_records = 0`` and no autosave timer, the worst case (by
default an image is saved every 10,000 records, so a crash never leaves more). Steps:

1. Start a backend on a fresh home, stop it (its image is saved, the journal is empty).
2. Baseline: restart that home as it is (image, empty journal), ``kill -9``; repeated.
3. Append 100,000 signed ``set_state`` records to its journal (``Journal.append_many``,
   exactly what acknowledged edits leave behind, written in batches to save time).
4. Ours: restart the same home (the image, then the 100,000 records replayed), ``kill -9``;
   repeated. Each restart replays the same records, since it is killed before any save.

A restart is timed from spawning ``main.py backend`` until it answers ``ping`` (the launcher
polls every 50 ms). The state after the replay is checked. Target: <= 30 s.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import log, verdict

NAME = "restart"
TARGET_S = 30.0
KEYS = 1_000


def _restart(home: Path) -> tuple[float, Any]:
    from backend.launcher import BackendProcess

    proc = BackendProcess(home)
    started = time.perf_counter()
    try:
        proc.start(timeout=300)
        took = time.perf_counter() - started
        with proc.client(timeout=60) as client:
            status = client.call("status", {})
            probe = client.call("get_state", {"proto": "BRICK"}).value.get("bench")  # type: ignore[attr-defined]
    finally:
        proc.kill()  # a crash, and never a backend left running
    return took, (status, probe)


def _write_journal(home: Path, records: int) -> int:
    """Append ``records`` signed set_state records after the image; returns the last seq."""
    from backend.home import Home
    from backend.image import ImageStore
    from backend.journal import Journal

    h = Home(home)
    key = h.image_key()
    journal = Journal(h.journal_dir, key)
    image_seq = ImageStore(h.image_dir, key).list_generations()[-1][1]
    journal.open(journal.replay(image_seq).last_seq)  # after whatever the restarts added
    batch = 10_000
    for start in range(0, records, batch):
        journal.append_many(
            [
                {"op": "set_state", "proto": "BRICK", "path": f"bench.k{i % KEYS}", "value": i}
                for i in range(start, min(start + batch, records))
            ]
        )
    journal.close()
    return journal.seq


def run(quick: bool = False) -> dict[str, Any]:
    from backend.launcher import BackendProcess

    records = 10_000 if quick else 100_000
    rounds = 2 if quick else 3
    with tempfile.TemporaryDirectory(prefix="bench-restart-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        (home / "config.toml").write_text(
            "[backend]\nautosave_interval_s = 0\nautosave_records = 0\n"
        )
        first = BackendProcess(home)
        first.start(timeout=300)
        first.stop()
        baseline = []
        for n in range(rounds):
            took, _ = _restart(home)
            baseline.append(took)
            log(f"{NAME}: baseline (empty journal) restart {n + 1}: {took:.2f}s")
        started = time.perf_counter()
        last_seq = _write_journal(home, records)
        log(f"{NAME}: wrote {records} journal records in {time.perf_counter() - started:.1f}s")
        ours = []
        state_ok = True
        replayed = 0
        for n in range(rounds):
            took, (status, probe) = _restart(home)
            ours.append(took)
            replayed = status.image.replayed_records
            expected = {f"k{k}": max(i for i in range(k, records, KEYS)) for k in range(KEYS)}
            state_ok = state_ok and probe == expected and replayed >= records
            log(
                f"{NAME}: restart {n + 1} with {replayed} records replayed: {took:.2f}s "
                f"(journal seq {last_seq})"
            )
    p50 = statistics.median(ours)
    base = statistics.median(baseline)
    met = p50 <= TARGET_S and state_ok
    log(
        f"{NAME}: {records} records: p50 {p50:.2f}s vs baseline {base:.2f}s "
        f"(target <= {TARGET_S:.0f}s): {verdict(met)}"
    )
    return {
        "benchmark": NAME,
        "records": records,
        "restart_s": [round(t, 2) for t in ours],
        "restart_s_p50": round(p50, 2),
        "baseline": "the same home restarted with an empty journal",
        "baseline_restart_s": [round(t, 2) for t in baseline],
        "baseline_restart_s_p50": round(base, 2),
        "replay_cost_s": round(p50 - base, 2),
        "replayed_records": replayed,
        "state_ok": state_ok,
        "target_s": TARGET_S,
        "target_met": met,
    }
