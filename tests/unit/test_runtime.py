"""The living image in-process: changes, journal replay, image save and load."""

from __future__ import annotations

import json
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.bus import EventBus
from backend.config import BackendConfig
from backend.home import Home
from backend.protos import Proto
from backend.runtime import Runtime
from shared_api.errors import CompileError, ImageError, MethodFailedError, StaleVersionError
from shared_api.events import Event
from shared_api.replies import DoesNotUnderstand
from shared_api.tools import Provenance, Tool

NO_AUTOSAVE = BackendConfig(autosave_interval_s=0)


def make(root: Path, config: BackendConfig = NO_AUTOSAVE) -> tuple[Runtime, list[Event]]:
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(lambda e, _p: events.append(e))
    rt = Runtime(Home(root).ensure(), config, bus)
    rt.start()
    return rt, events


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime, _ = make(tmp_path)
    yield runtime
    runtime.close(save=False)


def test_fresh_home_seeds_personas_and_saves_generation_one(rt: Runtime) -> None:
    assert sorted(rt.manager.names()) == ["ALFRED", "BABS", "BRICK", "ROBIN"]
    assert rt.image_info.generation == 1 and not rt.dirty


def test_changes_survive_a_crash_without_save(tmp_path: Path) -> None:
    rt, _ = make(tmp_path)
    rt.commit({"op": "set_state", "proto": "BRICK", "path": "mood.level", "value": 3})
    rt.commit(
        {
            "op": "define_method",
            "proto": "ROBIN",
            "name": "hug",
            "source": "def hug(self):\n    return 'hug'\n",
        }
    )
    rt.commit({"op": "clone", "proto": "ROBIN", "new_name": "ROBIN-2"})
    rt.journal.close()  # simulate a crash: no save, no close
    again, _ = make(tmp_path)
    assert again.manager.get("BRICK").state == {"mood": {"level": 3}}
    assert again.invoke("ROBIN-2", "hug", {}).result == "hug"  # type: ignore[union-attr]
    assert again.image_info.replayed_records == 3
    again.close(save=False)


def test_save_then_replay_only_newer_records(tmp_path: Path) -> None:
    rt, _ = make(tmp_path)
    rt.commit({"op": "set_state", "proto": "BRICK", "path": "a", "value": 1})
    saved = rt.save_image()
    rt.commit({"op": "set_state", "proto": "BRICK", "path": "b", "value": 2})
    rt.journal.close()
    again, _ = make(tmp_path)
    assert again.image_info.generation == saved.generation
    assert again.image_info.replayed_records == 1
    assert again.manager.get("BRICK").state == {"a": 1, "b": 2}
    again.close(save=False)


def test_failed_change_is_not_journaled(rt: Runtime) -> None:
    seq = rt.journal.seq
    with pytest.raises(CompileError):
        rt.commit({"op": "define_method", "proto": "BRICK", "name": "x", "source": "def x(self:\n"})
    with pytest.raises(StaleVersionError):
        rt.commit({"op": "swap", "proto": "BRICK", "base_version": 99})
    assert rt.journal.seq == seq


def test_invoke_persists_state_changes(tmp_path: Path) -> None:
    rt, events = make(tmp_path)
    rt.commit(
        {
            "op": "define_method",
            "proto": "BRICK",
            "name": "count",
            "source": "def count(self):\n    self.state['n'] = self.state.get('n', 0) + 1\n    return self.state['n']\n",
        }
    )
    assert [rt.invoke("BRICK", "count", {}).result for _ in range(3)] == [1, 2, 3]  # type: ignore[union-attr]
    assert any(getattr(e, "change", None) == "replace_state" for e in events)
    rt.journal.close()
    again, _ = make(tmp_path)
    assert again.manager.get("BRICK").state == {"n": 3}
    again.close(save=False)


def test_non_json_state_is_rolled_back_and_non_json_result_refused(rt: Runtime) -> None:
    rt.commit({"op": "set_state", "proto": "BRICK", "path": "ok", "value": 1})
    rt.commit(
        {
            "op": "define_method",
            "proto": "BRICK",
            "name": "bad",
            "source": "def bad(self):\n    self.state['obj'] = object()\n",
        }
    )
    rt.commit(
        {
            "op": "define_method",
            "proto": "BRICK",
            "name": "ret",
            "source": "def ret(self):\n    return object()\n",
        }
    )
    with pytest.raises(MethodFailedError, match="rolled back"):
        rt.invoke("BRICK", "bad", {})
    assert rt.manager.get("BRICK").state == {"ok": 1}
    with pytest.raises(MethodFailedError, match="not JSON"):
        rt.invoke("BRICK", "ret", {})


def test_does_not_understand_publishes_dissonance(tmp_path: Path) -> None:
    rt, events = make(tmp_path)
    reply = rt.invoke("BRICK", "fly", {"to": "moon"})
    assert isinstance(reply, DoesNotUnderstand) and reply.message == "fly"
    dissonance = [e for e in events if e.kind == "cognitive_dissonance"]
    assert dissonance and dissonance[0].proto == "BRICK"  # type: ignore[union-attr]
    # a method that sends an unknown message onward is answered the same way
    rt.commit(
        {
            "op": "define_method",
            "proto": "BRICK",
            "name": "relay",
            "source": "def relay(self):\n    return self.teleport()\n",
        }
    )
    assert isinstance(rt.invoke("BRICK", "relay", {}), DoesNotUnderstand)
    rt.close(save=False)


def test_save_does_not_block_changes(rt: Runtime) -> None:
    rt.manager.get("BRICK").history.extend({"i": i, "text": "x" * 200} for i in range(50_000))
    done = threading.Event()
    saver = threading.Thread(target=lambda: (rt.save_image(), done.set()))
    saver.start()
    changes = 0
    while not done.is_set():
        rt.commit({"op": "set_state", "proto": "ROBIN", "path": "n", "value": changes})
        changes += 1
    saver.join()
    assert changes > 1  # edits went on while the image was being written


def test_image_snapshot_excludes_later_edits_and_journal_has_them(tmp_path: Path) -> None:
    rt, events = make(tmp_path)
    rt.commit({"op": "set_state", "proto": "BRICK", "path": "a", "value": 1})
    rt.save_image()
    assert [e for e in events if e.kind == "progress"][-1].done  # type: ignore[union-attr]
    rt.commit({"op": "set_state", "proto": "BRICK", "path": "a", "value": 2})
    payload = rt.images.load_latest().payload
    assert payload is not None
    brick = next(p for p in payload["protos"] if p.name == "BRICK")
    assert brick.state == {"a": 1}
    rt.close()  # saves on shutdown because it is dirty
    again, _ = make(tmp_path)
    assert again.manager.get("BRICK").state == {"a": 2} and again.image_info.replayed_records == 0
    again.close(save=False)


def test_autosave(tmp_path: Path) -> None:
    rt, _ = make(tmp_path, BackendConfig(autosave_interval_s=0.2))
    rt.commit({"op": "set_state", "proto": "BRICK", "path": "a", "value": 1})
    deadline = threading.Event()
    for _ in range(50):
        if not rt.dirty:
            break
        deadline.wait(0.1)
    assert not rt.dirty and rt.image_info.generation == 2
    rt.close()


def test_missing_key_with_images_refuses(tmp_path: Path) -> None:
    rt, _ = make(tmp_path)
    rt.close()
    (tmp_path / "keys" / "image.key").unlink()
    with pytest.raises(ImageError, match="missing"):
        make(tmp_path)


def test_swap_without_state_journals_the_state_it_carried(tmp_path: Path) -> None:
    rt, _ = make(tmp_path)
    op = {"op": "swap", "proto": "BRICK", "base_version": rt.manager.get("BRICK").version}
    rt.manager.get("BRICK").state["made_by_a_method"] = 1  # as a running method would
    rt.commit(op)
    assert op["state"] == {**rt.manager.get("BRICK").state}
    rt.journal.close()
    again, _ = make(tmp_path)
    assert again.manager.get("BRICK").state.get("made_by_a_method") == 1
    again.close(save=False)


def test_replay_announces_nothing_and_a_long_journal_is_saved(tmp_path: Path) -> None:
    """Replay is a reconstruction: it publishes no event per record (before the request
    loop runs, nothing drains them); a journal over ``autosave_records`` is saved at once."""
    rt, _ = make(tmp_path)
    for i in range(30):
        rt.commit({"op": "set_state", "proto": "BRICK", "path": f"k{i}", "value": i})
    rt.journal.close()  # a crash
    again, events = make(tmp_path, BackendConfig(autosave_interval_s=0, autosave_records=20))
    assert again.image_info.replayed_records == 30
    assert not [e for e in events if getattr(e, "change", None) == "set_state"]
    for _ in range(100):
        if not again.dirty:
            break
        threading.Event().wait(0.05)
    assert not again.dirty and again.image_info.journal_seq == 30
    again.close(save=False)


def test_replay_starts_at_the_signed_journal_position_not_the_file_name(tmp_path: Path) -> None:
    """An image's file name is not signed: renaming a generation to a later journal position
    must not make the restart skip the records after the real one."""
    rt, _ = make(tmp_path)
    rt.commit({"op": "set_state", "proto": "BRICK", "path": "a", "value": 1})
    saved = rt.save_image()
    rt.commit({"op": "set_state", "proto": "BRICK", "path": "b", "value": 2})
    rt.commit({"op": "set_state", "proto": "BRICK", "path": "c", "value": 3})
    rt.journal.close()  # a crash
    image = Path(saved.path)
    image.rename(image.with_name(f"{saved.generation:08d}-{saved.journal_seq + 2:012d}.image"))
    again, _ = make(tmp_path)
    assert again.manager.get("BRICK").state == {"a": 1, "b": 2, "c": 3}
    assert again.image_info.replayed_records == 2
    assert any("renamed" in w for w in again.image_info.warnings)
    again.close(save=False)


class DeepResultRunner:
    """Test double for the Tool Forge's sandbox runner (no sandbox needed to force this
    outcome): the tool printed a JSON result 50,000 levels deep, parsed as the forge does."""

    def __init__(self, parse: bool) -> None:
        self.parse = parse

    def call(self, proto: str, tool: object, args: dict[str, object]) -> object:
        if self.parse:
            value = json.loads("[" * 50_000 + "]" * 50_000)  # RecursionError, as in the forge
        else:
            value = []
            for _ in range(50_000):
                value = [value]
        return types.SimpleNamespace(result=value)


@pytest.mark.parametrize("parse", [True, False], ids=["while_parsing", "returned"])
def test_deeply_nested_tool_result_is_a_typed_one_line_error(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, parse: bool
) -> None:
    tool = Tool(
        name="deep",
        proto="BRICK",
        description="returns a deep value",
        source="def deep():\n    return []\n",
        tests="",
        provenance=Provenance(forge_id="f", author="BRICK", requested_by="user", forged_at=0),
    )
    rt.commit({"op": "attach_tool", "proto": "BRICK", "tool": tool.model_dump(mode="json")})
    monkeypatch.setattr(Proto, "tool_runner", DeepResultRunner(parse))
    with pytest.raises(MethodFailedError, match="nested") as err:
        rt.invoke("BRICK", "deep", {})
    assert "\n" not in err.value.message and "traceback" not in err.value.detail
