"""One conformance suite for every dialogue checkpoint store (SQLite in the home, PostgreSQL):
resume after kill -9, time travel, forks, pruning, a pending approval surviving a restart,
and the tamper rule. Real LangGraph, real stores (the PostgreSQL server is the session's, see
``tests/servers.py``); only the personas' model is the scripted TEST DOUBLE."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ormsgpack
import pytest

from backend.dialogue.checkpoint_reads import read_checkpoints
from backend.dialogue.serde import SignedSerializer, checkpoint_key
from backend.home import Home
from backend.protos import Proto
from shared_api import commands as c
from shared_api.errors import CheckpointTamperedError, ErrorCode, RemoteError
from tests.dialogue.conftest import EventLog, Spawn, System, close_system, make_system
from tests.dialogue.doubles import CONCEDE_MARKER, Scenario, ScriptedOllama
from tests.dialogue.test_flow import GOAL, history, wait_status, write_config

Tamper = Callable[[Path, str, ormsgpack.Ext, bool], None]  # (home, dialogue, value, signed)


@dataclass
class Store:
    name: str
    spec: str  # [dialogue] checkpoints
    tamper: Tamper  # replaces the newest checkpoint's goal with a stored payload


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> Store:
    if request.param == "sqlite":
        return Store("sqlite", "", _tamper_sqlite)
    url = request.getfixturevalue("postgres_url")
    return Store("postgres", url, lambda *a: _tamper_postgres(url, *a))


@pytest.fixture
def systems(tmp_path: Path, store: Store) -> Iterator[Callable[..., System]]:
    """``open(scenario, **dialogue)``: an in-process system on the test's home and store;
    each is closed at teardown (or when the next one opens: a restart)."""
    previous = Proto.llm
    opened: list[System] = []

    def open_system(scenario: Scenario, **dialogue: Any) -> System:
        if opened:
            close_system(opened.pop())
        opened.append(make_system(tmp_path / "home", scenario, checkpoints=store.spec, **dialogue))
        return opened[-1]

    yield open_system
    for system in opened:
        close_system(system)
    Proto.llm = previous


CONCEDING = f"def dialogue_prompt(self, default):\n    return default + ' {CONCEDE_MARKER}'\n"


def test_time_travel_and_forks(systems: Callable[..., System]) -> None:
    system = systems(Scenario(research=False), max_rounds=4, impasse_rounds=100)
    service = system.service
    did = service.start_dialogue("Speed or care?", breakpoints=["alfred"]).dialogue_id
    system.wait(lambda e: e.kind == "dialogue_paused" and e.reason == "breakpoint")
    _, steps, _ = service.history(did)
    assert [s.node for s in steps if s.index >= 1] == ["brick", "robin"]
    first, old_tip = steps[-2], steps[-1].checkpoint_id
    # a fork: an edit makes a new checkpoint on top of the current one
    _, forked, values = service.update_state(did, {"robin_view": "edited by the user"})
    assert values["robin_view"] == "edited by the user"
    _, steps, _ = service.history(did)
    assert steps[-1].checkpoint_id == forked and steps[-1].before == old_tip
    # time travel: back before BRICK's first turn, then a new branch from there
    service.set_breakpoints(did, [])
    system.runtime.commit(
        {"op": "define_method", "proto": "BRICK", "name": "dialogue_prompt", "source": CONCEDING}
    )
    mark = system.mark()
    service.rewind(did, first.before, resume=True)
    assert system.wait(lambda e: e.kind == "dialogue_finished", after=mark).status == "converged"
    _, steps, _ = service.history(did)
    ids = {s.checkpoint_id for s in steps}
    assert first.before in ids and old_tip not in ids and forked not in ids  # another branch
    assert CONCEDE_MARKER in next(s for s in steps if s.node == "brick").record["prompt"]
    # the abandoned branch is still stored: travel back to it
    service.rewind(did, forked)
    _, steps, _ = service.history(did)
    assert steps[-1].checkpoint_id == forked and steps[-1].record["node"] == "edit"
    # the history's batched read (one query on PostgreSQL) gives what reads one by one give,
    # in the order asked, across both branches, a missing id left out
    store = service.worker.engine().store
    config = {"configurable": {"thread_id": did, "checkpoint_ns": ""}}
    every = [t.config["configurable"]["checkpoint_id"] for t in store.saver.list(config)]
    asked = [*every[::2], "1f0-no-such-checkpoint", *every[1::2]]
    batched = read_checkpoints(store, did, asked)
    one_by_one = [
        store.saver.get_tuple({"configurable": {**config["configurable"], "checkpoint_id": i}})
        for i in every[::2] + every[1::2]
    ]
    assert len(batched) == len(every) > 8 and None not in one_by_one
    assert any(t.pending_writes for t in batched)  # writes come back too
    assert [(t.config, t.checkpoint, t.metadata, t.parent_config, t.pending_writes)
            for t in batched] == [
        (t.config, t.checkpoint, t.metadata, t.parent_config, t.pending_writes)
        for t in one_by_one if t is not None
    ]  # fmt: skip


def test_pruning_bounds_a_thread_and_retires_old_dialogues(
    systems: Callable[..., System],
) -> None:
    system = systems(
        Scenario(research=False),
        max_rounds=6,
        impasse_rounds=100,
        keep_checkpoints=6,
        prune_every=3,
        keep_dialogues=1,
    )
    service = system.service
    ids = []
    for n in range(2):
        ids.append(service.start_dialogue(f"Goal {n}").dialogue_id)
        system.wait(lambda e, i=ids[-1]: e.kind == "dialogue_finished" and e.dialogue_id == i)
    store = service.worker.engine().store
    assert store.count(ids[-1]) <= 6 + 3  # 6 rounds x 3 nodes, pruned every 3 steps
    _, steps, truncated = service.history(ids[-1])
    assert truncated and steps[-1].node == "alfred"
    status, values, _ = service.status(ids[-1])  # what is kept still loads whole
    assert values["round"] == 6 and status.status == "finished"
    assert [d.dialogue_id for d in service.list_dialogues()] == ids[1:]
    assert store.count(ids[0]) == 0
    blobs = getattr(store, "blob_count", None)
    if blobs is not None:  # PostgreSQL: no blob outlives the checkpoints that use it
        assert blobs(ids[0]) == 0 and blobs(ids[-1]) <= 26 * 9


def test_pending_approval_survives_a_restart(systems: Callable[..., System]) -> None:
    scenario = Scenario(research=False, amendments=["ROBIN core_principles: Cite evidence."])
    system = systems(scenario, max_rounds=3, impasse_rounds=5)
    did = system.service.start_dialogue("Speed or care?").dialogue_id
    proposed = system.wait(lambda e: e.kind == "amendment_proposed").approval
    system.wait(lambda e: e.kind == "dialogue_paused" and e.reason == "approval")
    system = systems(scenario, max_rounds=3, impasse_rounds=5)  # a restart
    (pending,) = system.service.approvals()
    assert pending.interrupt_id == proposed.interrupt_id
    summary, _, approvals = system.service.status(did)
    assert summary.status == "awaiting_approval" and approvals
    system.service.decide(pending.interrupt_id, True)
    assert system.wait(lambda e: e.kind == "dialogue_finished").status == "unresolved"
    _, steps, _ = system.service.history(did)
    assert next(s for s in steps if s.node == "amend").record["decision"]["approve"] is True


def test_resume_after_kill_9_then_tampered_over_the_wire(
    spawn: Spawn, tmp_path: Path, store: Store
) -> None:
    """A real backend: killed mid-dialogue, it resumes from the checkpoint; then, the store
    tampered with, ``dialogue_status`` gets a typed error and the command never runs."""
    marker = tmp_path / "pwned"
    scenario = Scenario(research=False, delay_s=0.4)
    with ScriptedOllama(scenario) as fake:
        write_config(
            tmp_path / "home", fake, max_rounds=2, impasse_rounds=5, checkpoints=store.spec
        )
        backend = spawn()
        with backend.client() as client, EventLog(backend) as log:
            did = client.request(c.StartDialogue(goal=GOAL)).dialogue.dialogue_id  # type: ignore[union-attr]
            first = log.wait(lambda e: e.kind == "dialogue_step" and e.step.node == "brick").step
        backend.kill()  # kill -9, mid-dialogue
        asked = len(scenario.calls)
        backend = spawn()
        with backend.client() as client:
            done = wait_status(client, did, "finished")
            assert done.dialogue.round == 2
            steps = history(client, did).steps
            assert first.checkpoint_id in {s.checkpoint_id for s in steps}  # kept from before
            assert [s.node for s in steps if s.index >= 1] == ["brick", "robin", "alfred"] * 2
            assert len(scenario.calls) > asked  # it went on
            # resumed where it was, not restarted: BRICK's checkpointed turn is not asked again
            assert scenario.turns("BRICK", 1) == 1 and scenario.turns("BRICK", 2) == 1
            # the store tampered with under the running backend: refused on the next read
            store.tamper(tmp_path / "home", did, os_system(marker), False)
            with pytest.raises(RemoteError) as refused:
                client.request(c.DialogueStatus(dialogue_id=did))
            assert refused.value.code == ErrorCode.CHECKPOINT_TAMPERED
            assert "nothing in it was run" in refused.value.reply.message
            listed = client.request(c.ListDialogues())
            (damaged,) = [d for d in listed.dialogues if d.dialogue_id == did]  # type: ignore[attr-defined]
            assert (damaged.status, damaged.reason) == ("damaged", "tampered")
            assert client.call("ping", {}).kind == "pong"  # type: ignore[union-attr]
        assert not marker.exists()


# -- the tamper rule ----------------------------------------------------------------------------
def os_system(marker: Path) -> ormsgpack.Ext:
    """A checkpoint value that, read by LangGraph's default serializer, runs a shell command
    (``os.system("touch MARKER")``): a constructor extension, as a tampered store holds."""
    return ormsgpack.Ext(0, ormsgpack.packb(["os", "system", f"touch {marker}"]))


def test_the_payload_is_a_real_exploit_for_the_default_serializer(tmp_path: Path) -> None:
    """Control: without our serializer the same bytes do run the command."""
    import warnings

    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    marker = tmp_path / "ran"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        JsonPlusSerializer().loads_typed(("msgpack", ormsgpack.packb(os_system(marker))))
    assert marker.exists()


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed-with-the-key"])
def test_a_tampered_checkpoint_is_refused_and_nothing_runs(
    systems: Callable[..., System], store: Store, tmp_path: Path, signed: bool
) -> None:
    marker = tmp_path / "pwned"
    system = systems(Scenario(research=False), max_rounds=1)
    did = system.service.start_dialogue("Speed or care?").dialogue_id
    system.wait(lambda e: e.kind == "dialogue_finished")
    other = system.service.start_dialogue("Care or speed?").dialogue_id
    system.wait(lambda e, o=other: e.kind == "dialogue_finished" and e.dialogue_id == o)
    close_system(system)
    # unsigned: anyone who can write the store; signed: even one holding the home's key
    store.tamper(tmp_path / "home", did, os_system(marker), signed)
    system = systems(Scenario(research=False), max_rounds=1)
    with pytest.raises(CheckpointTamperedError, match="refused and nothing in it was run"):
        system.service.status(did)
    assert not marker.exists()
    assert system.service.store.dialogue(did).status == "damaged"
    with pytest.raises(CheckpointTamperedError, match="damaged"):
        system.service.rewind(did, "any")
    summary, values, _ = system.service.status(other)  # the other dialogue is untouched
    assert values["goal"] == "Care or speed?" and summary.status == "finished"
    assert not marker.exists()


def _sign(home: Path, payload: bytes) -> tuple[str, bytes]:
    serde = SignedSerializer(checkpoint_key(Home(home).image_key()))
    return "msgpack+hmac", serde.seal("msgpack", payload)


def _tamper_sqlite(home: Path, did: str, value: ormsgpack.Ext, signed: bool) -> None:
    """Rewrite the newest checkpoint of ``did`` with ``value`` as its goal."""
    with closing(sqlite3.connect(home / "dialogue" / "checkpoints.sqlite")) as db, db:
        cid, blob = db.execute(
            "SELECT checkpoint_id, checkpoint FROM checkpoints WHERE thread_id = ? "
            "ORDER BY checkpoint_id DESC LIMIT 1",
            (did,),
        ).fetchone()
        checkpoint = ormsgpack.unpackb(blob[32:], ext_hook=ormsgpack.Ext)
        checkpoint["channel_values"]["goal"] = value
        packed = ormsgpack.packb(checkpoint)
        type_, stored = _sign(home, packed) if signed else ("msgpack", packed)
        db.execute(
            "UPDATE checkpoints SET type = ?, checkpoint = ? WHERE thread_id = ? "
            "AND checkpoint_id = ?",
            (type_, stored, did, cid),
        )


def _tamper_postgres(url: str, home: Path, did: str, value: ormsgpack.Ext, signed: bool) -> None:
    """A ``goal`` blob for the newest checkpoint's goal version: LangGraph prefers a blob
    over the inline value, so this is what it reads back."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        version = conn.execute(
            "SELECT checkpoint -> 'channel_versions' ->> 'goal' FROM checkpoints "
            "WHERE thread_id = %s ORDER BY checkpoint_id DESC LIMIT 1",
            (did,),
        ).fetchone()[0]  # type: ignore[index]
        payload = ormsgpack.packb(value)
        type_, stored = _sign(home, payload) if signed else ("msgpack", payload)
        conn.execute(
            "INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob)"
            " VALUES (%s, '', 'goal', %s, %s, %s) ON CONFLICT (thread_id, checkpoint_ns, "
            "channel, version) DO UPDATE SET type = EXCLUDED.type, blob = EXCLUDED.blob",
            (did, version, type_, stored),
        )
