"""Dialogues: what the Live Debugger's commands cost, and what checkpoints cost on disk.

1. Command latency, model time excluded: a real backend (``main.py backend``) whose personas
   talk to a scripted Ollama double (``tests/dialogue/doubles.py``; a benchmark double: the
   model's time is not what is measured). A dialogue with a breakpoint on every node, so
   ``debug_continue`` runs exactly one node, like ``debug_step``. Each sample is the round trip
   of one command, from send to typed reply; the node it starts runs after the reply and is
   waited for, untimed, before the next sample. ``debug_update_state`` is measured whole (it
   forks the checkpoint in SQLite before it replies); ``debug_history`` and
   ``dialogue_status`` (what the debugger reads after each step) are reported too.
   Target: step, continue and edit p95 <= 50 ms.
2. Checkpoints: one in-process dialogue of ~1,000 node runs (an instant scripted model),
   with pruning on (``keep_checkpoints`` 400, the default) and off (0). Reports the bytes of a
   checkpoint (its row: state blob + metadata) per step, and the database's size on disk after
   the run (WAL checkpointed), pruning on vs off.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from backend.bus import EventBus
from backend.config import Config, DialogueConfig, ModelsConfig, MotivatorConfig
from backend.dialogue.service import DialogueService
from backend.home import Home
from backend.launcher import BackendProcess
from backend.llm.ollama_backend import OllamaBackend
from backend.llm.service import PersonaLLM
from backend.protos import Proto
from backend.runtime import Runtime
from benchmarks._common import log, percentile, summary, verdict
from shared_api import commands as c
from shared_api.transport import Client
from tests.dialogue.doubles import Scenario, ScriptedModel, ScriptedOllama

TARGET_P95_MS = 50.0
ALL_NODES = ["brick", "babs", "robin", "alfred", "impasse", "amend"]


def run(quick: bool = False) -> dict[str, Any]:
    figures: dict[str, Any] = {"benchmark": "dialogue", "quick": quick}
    figures.update(command_latency(30 if quick else 120))  # 2 nodes each; 100 rounds at most
    figures.update(checkpoint_sizes(60 if quick else 334))
    return figures


# -- 1. debugger command latency ----------------------------------------------------------------
def _timed(client: Client, command: c.Command) -> tuple[float, Any]:
    started = time.perf_counter()
    reply = client.request(command)
    return (time.perf_counter() - started) * 1000, reply


def _wait_paused(client: Client, dialogue_id: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = client.request(c.DialogueStatus(dialogue_id=dialogue_id))
        if status.dialogue.status != "running":  # type: ignore[union-attr]
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"dialogue {dialogue_id} did not pause")
        time.sleep(0.005)


def command_latency(samples: int) -> dict[str, Any]:
    scenario = Scenario(research=False)
    times: dict[str, list[float]] = {
        k: [] for k in ("debug_step", "debug_continue", "debug_update_state", "debug_history",
                        "dialogue_status", "set_breakpoints")
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, ScriptedOllama(scenario) as fake:
        home = Path(tmp) / "home"
        home.mkdir()
        (home / "config.toml").write_text(
            fake.config_toml(max_rounds=100, impasse_rounds=100, dissonance_threshold=0.99)
        )
        backend = BackendProcess(home)
        backend.start()
        try:
            with backend.client() as client:
                started = time.perf_counter()
                accepted = client.request(c.StartDialogue(goal="Speed or care?", paused=True))
                did = accepted.dialogue.dialogue_id  # type: ignore[union-attr]
                _wait_paused(client, did, timeout=60)
                log(
                    f"first dialogue command + LangGraph load: {time.perf_counter() - started:.1f}s"
                )
                client.request(c.SetBreakpoints(dialogue_id=did, nodes=ALL_NODES))
                for i in range(samples):
                    for kind, command in (
                        ("debug_step", c.DebugStep(dialogue_id=did)),
                        ("debug_continue", c.DebugContinue(dialogue_id=did)),
                    ):
                        ms, _ = _timed(client, command)
                        times[kind].append(ms)
                        _wait_paused(client, did)  # the node runs: not timed
                    edit = c.DebugUpdateState(dialogue_id=did, values={"research": f"note {i}"})
                    times["debug_update_state"].append(_timed(client, edit)[0])
                    times["debug_history"].append(
                        _timed(client, c.DebugHistory(dialogue_id=did, limit=50))[0]
                    )
                    times["dialogue_status"].append(
                        _timed(client, c.DialogueStatus(dialogue_id=did))[0]
                    )
                    bp = c.SetBreakpoints(dialogue_id=did, nodes=ALL_NODES)
                    times["set_breakpoints"].append(_timed(client, bp)[0])
        finally:
            backend.stop()
    figures: dict[str, Any] = {
        f"{kind}_ms": {**summary(v, 2), "p95": round(percentile(v, 95), 2)}
        for kind, v in times.items()
    }
    worst = max(percentile(times[k], 95) for k in ("debug_step", "debug_continue",
                                                    "debug_update_state"))  # fmt: skip
    figures["target_debugger_p95_met"] = worst <= TARGET_P95_MS
    log(
        "step/continue/edit p95: "
        + ", ".join(f"{k} {percentile(times[k], 95):.1f} ms" for k in
                    ("debug_step", "debug_continue", "debug_update_state"))
        + f" (target <= {TARGET_P95_MS:.0f} ms: {verdict(worst <= TARGET_P95_MS)})"
    )  # fmt: skip
    return figures


# -- 2. checkpoint sizes ------------------------------------------------------------------------
def checkpoint_sizes(rounds: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for label, keep in (("pruning_on", 400), ("pruning_off", 0)):
        figures[label] = _one_dialogue(rounds, keep)
        f = figures[label]
        log(
            f"{label}: {f['steps']} steps in {f['seconds']}s, {f['checkpoints']} checkpoints "
            f"kept, {f['checkpoint_bytes_per_step']:.0f} B per checkpoint, file "
            f"{f['db_bytes'] / 1e6:.2f} MB"
        )
    on, off = figures["pruning_on"]["db_bytes"], figures["pruning_off"]["db_bytes"]
    figures["db_bytes_ratio_on_vs_off"] = round(on / off, 3) if off else None
    return figures


def _one_dialogue(rounds: int, keep: int) -> dict[str, Any]:
    previous = Proto.llm
    with tempfile.TemporaryDirectory() as tmp:
        home = Home(Path(tmp) / "home").ensure()
        config = Config(
            dialogue=DialogueConfig(
                impasse_rounds=100, dissonance_threshold=0.99, keep_checkpoints=keep
            ),
            motivator=MotivatorConfig(enabled=False),
        )
        config.backend.autosave_interval_s = 0
        bus = EventBus()
        runtime = Runtime(home, config.backend, bus)
        llm = PersonaLLM(
            runtime,
            ModelsConfig(backend="embedded"),
            bus,
            backends={
                "ollama": OllamaBackend("http://127.0.0.1:9", 1.0),
                "embedded": ScriptedModel(Scenario(research=False)),
            },
        )
        Proto.llm = llm
        runtime.start()
        service = DialogueService(runtime, config, bus, home.root)
        done: list[str] = []
        bus.subscribe(lambda e, _p: done.append(e.kind) if e.kind == "dialogue_finished" else None)
        try:
            started = time.perf_counter()
            did = service.start_dialogue("Speed or care?", max_rounds=rounds).dialogue_id
            while not done:
                time.sleep(0.05)
            seconds = time.perf_counter() - started
            path = service.dir / "checkpoints.sqlite"
            with sqlite3.connect(path) as db:
                rows = db.execute(
                    "SELECT COUNT(*), AVG(LENGTH(checkpoint) + LENGTH(metadata)) FROM checkpoints "
                    "WHERE thread_id = ?",
                    (did,),
                ).fetchone()
                steps = rounds * 3
            engine = service.worker.engine()
            from langgraph.checkpoint.sqlite import SqliteSaver

            saver = engine.saver
            assert isinstance(saver, SqliteSaver)
            with saver.lock:
                saver.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return {
                "steps": steps,
                "seconds": round(seconds, 1),
                "ms_per_step": round(seconds * 1000 / steps, 2),
                "checkpoints": rows[0],
                "checkpoint_bytes_per_step": round(rows[1] or 0, 1),
                "db_bytes": path.stat().st_size,
                "keep_checkpoints": keep,
            }
        finally:
            service.close()
            llm.close()
            runtime.close(save=False)
            Proto.llm = previous
