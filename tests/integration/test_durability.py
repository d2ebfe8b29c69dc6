"""Durability of the living image against real crashes and damaged files.

Every test drives real ``main.py backend`` processes on one home: edits are acknowledged,
the process is killed with SIGKILL (or stopped) and a new one is started on the same home.
Whatever was acknowledged before the crash must be there afterwards; a damaged image or
journal record is refused, reported in ``status``, and never silently applied.
"""

from __future__ import annotations

import os
import pickle
import random
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from backend.image import MAGIC
from backend.launcher import BackendProcess
from shared_api.errors import RemoteError, UnavailableError
from shared_api.replies import ImageInfo, ImageSaved, InvokeResult, ProtoDescription, StatusReply
from shared_api.transport import Client
from shared_api.wire import unpack
from tests.integration.conftest import Spawn

ROUNDS = 8
BULK_ITEMS = 20_000  # makes a save take a few hundred ms (state goes through dill)


# -- helpers --------------------------------------------------------------------------------
class World:
    """What has been acknowledged so far, to check against a restarted backend."""

    def __init__(self) -> None:
        self.state: dict[tuple[str, str], Any] = {}  # (proto, path) -> value
        self.methods: dict[tuple[str, str], tuple[str, Any]] = {}  # -> (source, result)

    def set_state(self, client: Client, proto: str, path: str, value: Any) -> None:
        reply = client.call("set_state", {"proto": proto, "path": path, "value": value})
        assert reply.kind == "proto_updated"
        self.state[proto, path] = value

    def define(self, client: Client, proto: str, name: str, result: Any) -> None:
        source = f"def {name}(self):\n    return {result!r}\n"
        reply = client.call("define_method", {"proto": proto, "name": name, "source": source})
        assert reply.kind == "proto_updated"
        self.methods[proto, name] = (source, result)

    def check(self, client: Client, context: str) -> None:
        for (proto, path), value in self.state.items():
            got = client.call("get_state", {"proto": proto, "path": path})
            assert got.value == value, f"{context}: {proto}.{path} lost"
        for (proto, name), (source, result) in self.methods.items():
            described = describe(client, proto)
            assert described.methods.get(name) == source, f"{context}: {proto}.{name} lost"
            invoked = client.call("invoke", {"proto": proto, "method": name})
            assert isinstance(invoked, InvokeResult) and invoked.result == result, context


def describe(client: Client, proto: str) -> ProtoDescription:
    reply = client.call("describe_proto", {"proto": proto})
    assert isinstance(reply, ProtoDescription)
    return reply


def status(client: Client) -> StatusReply:
    reply = client.call("status", {})
    assert isinstance(reply, StatusReply)
    return reply


def image_info(backend: BackendProcess) -> ImageInfo:
    with backend.client() as client:
        return status(client).image


def save(client: Client) -> ImageSaved:
    reply = client.call("save_image", {}, timeout=60)
    assert isinstance(reply, ImageSaved)
    return reply


def generations(home: Path) -> list[Path]:
    """Image files, oldest first (by generation number)."""
    return sorted((home / "image").glob("*.image"), key=lambda p: int(p.name.split("-")[0]))


def snapshot(client: Client, protos: list[str]) -> dict[str, tuple[Any, ...]]:
    return {
        name: (d.version, d.state, d.methods) for name in protos for d in [describe(client, name)]
    }


# -- (a) SIGKILL while an image is being saved ---------------------------------------------
BALLAST = (
    "def ballast(self, mb):\n"
    "    self.history.clear()\n"
    "    self.history.append('x' * (mb * 1024 * 1024))\n"
    "    return len(self.history[0])\n"
)


def test_kill_during_image_save_loses_no_acknowledged_edit(spawn: Spawn) -> None:
    """SIGKILL lands at a different point of an image save in every round: before it starts,
    while the graph is serialized (a large state), while ~16 MiB are written and fsynced (a
    large history), around the rename, or after the reply."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    world = World()
    kill_at: list[float] = []
    for round_no in range(ROUNDS):
        context = f"seed {seed}, round {round_no}"
        backend = spawn()
        client = backend.client(timeout=60)
        try:
            info = status(client).image
            assert info.warnings == [], f"{context}: {info.warnings}"
            assert info.fallback_used is False, context
            world.check(client, f"{context}, after restart")
            # acknowledged edits of several kinds
            world.set_state(
                client, "BRICK", f"rounds.r{round_no}", {"n": round_no, "x": rng.random()}
            )
            world.set_state(client, "ROBIN", "last_round", round_no)
            world.define(client, "BRICK", f"m{round_no}", round_no * 10)
            bulk = [{"round": round_no, "i": i, "text": "x" * 20} for i in range(BULK_ITEMS)]
            world.set_state(client, "ALFRED", "bulk", bulk)
            if round_no == 0:
                client.call(
                    "define_method", {"proto": "ALFRED", "name": "ballast", "source": BALLAST}
                )
            client.call("invoke", {"proto": "ALFRED", "method": "ballast", "args": {"mb": 16}})
            if round_no == 0:  # time one save, then spread the kills over that duration
                started = time.monotonic()
                save(client)
                took = time.monotonic() - started
                kill_at = [(i + rng.random()) / ROUNDS * took * 1.3 for i in range(ROUNDS)]
                rng.shuffle(kill_at)
            # a save in flight, then SIGKILL (before the client closes: that would discard
            # a request not yet sent)
            _, payload = client.codec.encode("save_image", {})
            client.send_frames([payload])
            time.sleep(kill_at[round_no])
            backend.kill()
        finally:
            client.close()
    backend = spawn()
    with backend.client(timeout=60) as client:
        world.check(client, f"seed {seed}, final")
        assert status(client).image.warnings == []


# -- (b) SIGKILL with no save at all ------------------------------------------------------
def test_kill_without_save_replays_everything_from_the_journal(spawn: Spawn) -> None:
    backend = spawn()
    protos = ["BRICK", "ROBIN", "BABS", "BRICK-2"]
    with backend.client() as client:
        start_seq = status(client).image.journal_seq
        client.call("set_state", {"proto": "BRICK", "path": "mood.level", "value": 3})
        client.call("set_state", {"proto": "BRICK", "path": "list", "value": [1, 2, 3]})
        client.call("set_state", {"proto": "BRICK", "path": "list.3", "value": 4})
        counter = (
            "def bump(self, by=1):\n"
            "    self.state['n'] = self.state.get('n', 0) + by\n"
            "    return self.state['n']\n"
        )
        client.call("define_method", {"proto": "BRICK", "name": "bump", "source": counter})
        tmp = "def tmp(self):\n    return 0\n"
        client.call("define_method", {"proto": "BRICK", "name": "tmp", "source": tmp})
        client.call("remove_method", {"proto": "BRICK", "name": "tmp"})
        for by in (1, 2, 3):  # a method's state change is journaled too
            client.call("invoke", {"proto": "BRICK", "method": "bump", "args": {"by": by}})
        client.call("clone_proto", {"proto": "BRICK"})  # BRICK-2
        client.call("set_state", {"proto": "BRICK-2", "path": "twin", "value": True})
        robin = describe(client, "ROBIN")
        client.call(
            "swap_proto",
            {
                "proto": "ROBIN",
                "base_version": robin.version,
                "state": {**robin.state, "swapped": [1, {"a": None}]},  # keep other keys
                "methods": {"hello": "def hello(self):\n    return 'hi'\n"},
            },
        )
        with pytest.raises(RemoteError) as stale:  # refused: must not be replayed either
            client.call(
                "swap_proto", {"proto": "ROBIN", "base_version": robin.version, "state": {}}
            )
        assert stale.value.code == "stale_version"
        client.call("set_state", {"proto": "BABS", "path": "unicode", "value": "ünï ☃ \u0000"})
        before = snapshot(client, protos)
        seq = status(client).services["journal"]["seq"]
    backend.kill()
    backend = spawn()
    with backend.client() as client:
        info = status(client).image
        assert info.warnings == []
        assert info.replayed_records == seq - start_seq
        assert snapshot(client, protos) == before
        assert describe(client, "BRICK").state["n"] == 6
        assert client.call("invoke", {"proto": "ROBIN", "method": "hello"}).result == "hi"


# -- (c) a tampered image generation ------------------------------------------------------
def flip_byte(path: Path, where: str) -> None:
    data = bytearray(path.read_bytes())
    offset = {
        "magic": 3,
        "signature": len(MAGIC) + 5,
        "payload": len(MAGIC) + 32 + (len(data) - len(MAGIC) - 32) // 2,
        "last": len(data) - 1,
    }[where]
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def edits_across_two_saves(backend: BackendProcess, world: World) -> None:
    with backend.client() as client:
        world.set_state(client, "BRICK", "phase", "before first save")
        world.define(client, "BRICK", "first", 1)
        save(client)
        world.set_state(client, "BRICK", "between", [1, 2])
        world.set_state(client, "ROBIN", "phase", "between saves")
        save(client)
        world.set_state(client, "BRICK", "after", {"last": True})
        world.define(client, "ROBIN", "second", 2)


@pytest.mark.parametrize("where", ["magic", "signature", "payload", "last"])
def test_tampered_newest_image_falls_back_without_losing_edits(
    spawn: Spawn, home: Path, where: str
) -> None:
    world = World()
    backend = spawn()
    edits_across_two_saves(backend, world)
    backend.stop()  # graceful: saves a third generation with the last edits
    *_, previous, newest = generations(home)
    flip_byte(newest, where)

    backend = spawn()
    info = image_info(backend)
    assert info.fallback_used
    assert info.loaded_from == str(previous)
    assert any(newest.name in w for w in info.warnings), info.warnings
    with backend.client() as client:
        world.check(client, f"after tampering {where}")
        # life goes on: a new edit, a new save, and that save is what loads next time
        world.set_state(client, "BABS", "after_recovery", 1)
        saved = save(client)
    backend.kill()
    backend = spawn()
    assert image_info(backend).loaded_from == saved.path
    with backend.client() as client:
        world.check(client, "after recovery and restart")


# -- (d) an unsigned / truncated / forged image named like a newer generation ---------------
class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def bogus_image(kind: str, newest: Path, marker: Path) -> tuple[str, bytes]:
    """(file name, contents) of a file that must be refused."""
    gen, seq = (int(x) for x in newest.name.removesuffix(".image").split("-"))
    next_name = f"{gen + 1:08d}-{seq:012d}.image"
    if kind == "random_far_future":
        return "99999999-000000000000.image", os.urandom(4096)
    if kind == "truncated":
        data = newest.read_bytes()
        return next_name, data[: len(data) // 2]
    if kind == "empty":
        return next_name, b""
    if kind == "magic_only":
        return next_name, MAGIC
    assert kind == "forged_pickle"  # right header, a payload signed with the wrong key
    payload = pickle.dumps({"format": 1, "protos": [Exploit(marker)]})
    return next_name, MAGIC + os.urandom(32) + payload


@pytest.mark.parametrize(
    "kind", ["random_far_future", "truncated", "empty", "magic_only", "forged_pickle"]
)
def test_unverifiable_image_is_refused(spawn: Spawn, home: Path, tmp_path: Path, kind: str) -> None:
    world = World()
    backend = spawn()
    edits_across_two_saves(backend, world)
    backend.kill()  # the last edits are in the journal only
    newest = generations(home)[-1]
    marker = tmp_path / "exploit-ran"
    name, data = bogus_image(kind, newest, marker)
    (home / "image" / name).write_bytes(data)

    backend = spawn()
    assert not marker.exists(), "a forged image was unpickled"
    info = image_info(backend)
    assert info.fallback_used
    assert info.loaded_from == str(newest)
    assert any(name in w for w in info.warnings), info.warnings
    with backend.client() as client:
        world.check(client, f"after a {kind} image")


def test_saves_after_a_refused_far_future_generation_still_load(spawn: Spawn, home: Path) -> None:
    """A refused file named ``99999999-...`` must not hide later saves: the next save is
    generation 100000000, whose 9-digit name the loader no longer recognises."""
    world = World()
    backend = spawn()
    with backend.client() as client:
        world.set_state(client, "BRICK", "a", 1)
        save(client)
    backend.stop()
    (home / "image" / "99999999-000000000000.image").write_bytes(os.urandom(4096))
    backend = spawn()
    with backend.client() as client:
        world.set_state(client, "BRICK", "b", 2)
        saved = save(client)
    backend.kill()
    backend = spawn()
    info = image_info(backend)
    with backend.client() as client:
        world.check(client, "after restart")
    assert info.loaded_from == saved.path, (
        f"saved {Path(saved.path).name}, but the restart loaded "
        f"{Path(info.loaded_from or '-').name}; image dir: "
        f"{sorted(p.name for p in (home / 'image').iterdir())}"
    )


# -- (e) a tampered journal record --------------------------------------------------------
_HEAD = struct.Struct(">II")  # length, crc32 of the length bytes


def find_record(journal: Path, path: str) -> tuple[Path, int]:
    """(segment, byte offset) of the set_state record for ``path``. Record layout:
    ``[u32 length][u32 crc32(length)][32-byte HMAC][msgpack {seq, op}]``."""
    for segment in sorted(journal.glob("*.log")):
        data = segment.read_bytes()
        pos = 0
        while pos < len(data):
            (length, _crc) = _HEAD.unpack_from(data, pos)
            record = unpack(data[pos + _HEAD.size + 32 : pos + _HEAD.size + 32 + length])
            if record["op"].get("path") == path:
                return segment, pos
            pos += _HEAD.size + 32 + length
    raise AssertionError(f"no journal record sets {path!r}")


@pytest.mark.parametrize("part", ["payload", "mac", "length_smaller", "length_larger"])
def test_tampered_journal_record_is_not_applied(spawn: Spawn, home: Path, part: str) -> None:
    backend = spawn()
    with backend.client() as client:
        for i in range(1, 6):
            client.call("set_state", {"proto": "BRICK", "path": f"k{i}", "value": i})
    backend.kill()
    segment, third = find_record(home / "journal", "k3")
    data = bytearray(segment.read_bytes())
    if part == "payload":
        data[third + _HEAD.size + 32 + 4] ^= 0x01
    elif part == "mac":
        data[third + _HEAD.size + 7] ^= 0x80
    elif part == "length_smaller":
        assert data[third + 3] > 0
        data[third + 3] -= 1
    else:  # a flipped high bit: the length now claims more bytes than the file holds
        data[third] ^= 0x40
    segment.write_bytes(bytes(data))

    backend = spawn()
    with backend.client() as client:
        info = status(client).image
        assert any("journal" in w for w in info.warnings), (
            f"a damaged journal record was dropped without a warning: {info.warnings}"
        )
        state = client.call("get_state", {"proto": "BRICK"}).value
        assert isinstance(state, dict)
        assert {k: state.get(k) for k in ("k1", "k2", "k3", "k4", "k5")} == {
            "k1": 1,
            "k2": 2,
            "k3": None,
            "k4": None,
            "k5": None,
        }
        client.call("set_state", {"proto": "BRICK", "path": "k6", "value": 6})
    backend.kill()
    backend = spawn()  # and the journal keeps working after the repair
    with backend.client() as client:
        state = client.call("get_state", {"proto": "BRICK"}).value
        assert isinstance(state, dict)
        assert (state.get("k1"), state.get("k2"), state.get("k3"), state.get("k6")) == (
            1,
            2,
            None,
            6,
        )


def test_lost_image_key_is_refused_not_overwritten(spawn: Spawn, home: Path) -> None:
    """Images whose key is gone cannot be verified: the backend refuses to start rather than
    silently seed a fresh world over them."""
    backend = spawn()
    with backend.client() as client:
        client.call("set_state", {"proto": "BRICK", "path": "precious", "value": 1})
    backend.stop()
    images = {p.name: p.read_bytes() for p in generations(home)}
    (home / "keys" / "image.key").unlink()
    with pytest.raises(UnavailableError, match="exited with status 4"):
        spawn()
    assert {p.name: p.read_bytes() for p in generations(home)} == images


SLOW_INCREMENT = (
    "def slow_incr(self):\n"
    "    self.state['n'] = self.state.get('n', 0) + 1\n"
    "    import time\n"
    "    time.sleep(1)\n"
    "    return self.state['n']\n"
)


def test_method_state_change_racing_a_swap_is_replayed_as_it_was_live(spawn: Spawn) -> None:
    """A method changes its state, and while it is still running the Proto is hot-swapped
    (a swap that keeps the live state). Whatever the live system ends up with, and has
    acknowledged to clients, must be what the journal replays after a SIGKILL."""
    backend = spawn()
    with backend.client() as client:
        client.call(
            "define_method", {"proto": "BRICK", "name": "slow_incr", "source": SLOW_INCREMENT}
        )
        results: list[Any] = []

        def call_slow() -> None:
            with backend.client() as own:
                results.append(own.call("invoke", {"proto": "BRICK", "method": "slow_incr"}))

        thread = threading.Thread(target=call_slow)
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while describe(client, "BRICK").state.get("n") != 1:  # the method is mid-flight
                assert time.monotonic() < deadline
                time.sleep(0.01)
            base = describe(client, "BRICK").version
            swapped = client.call_raw(
                "swap_proto",
                {
                    "proto": "BRICK",
                    "base_version": base,
                    "methods": {"other": "def other(self):\n    return 1\n"},
                },
            )
            assert (
                swapped.kind == "proto_updated" or getattr(swapped, "code", None) == "stale_version"
            )
        finally:
            thread.join(timeout=30)
        assert len(results) == 1 and isinstance(results[0], InvokeResult)
        live = describe(client, "BRICK")
    backend.kill()
    backend = spawn()
    with backend.client() as client:
        replayed = describe(client, "BRICK")
    assert (replayed.version, replayed.state, replayed.methods) == (
        live.version,
        live.state,
        live.methods,
    ), (
        f"live before the kill: v{live.version} {live.state}; "
        f"replayed: v{replayed.version} {replayed.state}"
    )
