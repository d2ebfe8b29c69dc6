"""Debugger latency with the dialogue checkpoints on PostgreSQL vs SQLite, in one run.

In-process (a real Runtime, LangGraph and store; the personas' model is the instant scripted
double, so the store is what is measured): one dialogue, then ``samples`` times

- a whole step: ``debug_step`` until the dialogue has paused again (one node run: its
  checkpoint written and read back, the step announced);
- ``debug_update_state`` (a fork: one checkpoint written before it returns);
- ``debug_history`` of the last 50 steps (reads).

PostgreSQL is the server ``.ci/run`` started (``ENTROPIC_TEST_POSTGRES``) or a throwaway
cluster started here, on 127.0.0.1 either way, with ``fsync`` on like a real one.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import log, percentile, summary
from tests.servers import start_postgres, stop_postgres

KINDS = ("step", "update_state", "history")


def _measure(home: Path, spec: str, samples: int) -> dict[str, list[float]]:
    from backend.protos import Proto
    from tests.dialogue.conftest import close_system, make_system
    from tests.dialogue.doubles import Scenario

    previous = Proto.llm
    system = make_system(
        home,
        Scenario(research=False),
        max_rounds=100,
        impasse_rounds=100,
        dissonance_threshold=0.99,
        checkpoints=spec,
    )
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    try:
        service = system.service
        did = service.start_dialogue("Speed or care?", paused=True).dialogue_id
        system.wait(lambda e: e.kind == "dialogue_paused", timeout=60)
        for i in range(samples):
            mark = system.mark()
            started = time.perf_counter()
            service.step(did)
            system.wait(lambda e: e.kind == "dialogue_paused" and e.reason == "step", after=mark)
            times["step"].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            service.update_state(did, {"research": f"note {i}"})
            times["update_state"].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            service.history(did, limit=50)
            times["history"].append((time.perf_counter() - started) * 1000)
    finally:
        close_system(system)
        Proto.llm = previous
    return times


def _database(admin_url: str) -> str:
    import psycopg

    name = f"bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def run(quick: bool = False) -> dict[str, Any]:
    samples = 20 if quick else 150
    figures: dict[str, Any] = {"benchmark": "checkpoints_pg", "samples": samples}
    tmp = Path(tempfile.mkdtemp(prefix="entropic-bench-pg-"))
    server = Path(tempfile.mkdtemp(prefix="entropic-bench-pgserver-"))  # chowned to postgres
    admin = os.environ.get("ENTROPIC_TEST_POSTGRES", "")
    try:
        if not admin:
            _, admin = start_postgres(server, fsync=True)
        results = {
            "sqlite": _measure(tmp / "home-sqlite", "", samples),
            "postgres": _measure(tmp / "home-pg", _database(admin), samples),
        }
    finally:
        stop_postgres(server)
        shutil.rmtree(server, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    for store, times in results.items():
        for kind in KINDS:
            figures[f"{store}_{kind}_ms"] = {
                **summary(times[kind], 2),
                "p95": round(percentile(times[kind], 95), 2),
            }
    for kind in KINDS:
        pg, lite = (percentile(results[s][kind], 95) for s in ("postgres", "sqlite"))
        figures[f"{kind}_p95_ratio_pg_over_sqlite"] = round(pg / lite, 2)
        log(f"{kind} p95: PostgreSQL {pg:.1f} ms vs SQLite {lite:.1f} ms ({pg / lite:.2f}x)")
    return figures
