from __future__ import annotations

import threading

import dill
import pytest

from backend.codex import load_personas
from backend.protos import DoesNotUnderstand, Proto, ProtoManager
from shared_api.errors import (
    AlreadyExistsError,
    CodexImmutableError,
    CompileError,
    InvalidValueError,
    MethodFailedError,
    NotFoundError,
    StaleVersionError,
)

CODICES = load_personas()
GREET = 'def greet(self, who):\n    """Say hello."""\n    return f"{self.name} greets {who}"\n'


def brick() -> Proto:
    return Proto("BRICK", CODICES["BRICK"])


def test_define_and_invoke() -> None:
    p = brick()
    p.define_method("greet", GREET)
    assert p.invoke("greet", {"who": "ROBIN"}) == "BRICK greets ROBIN"
    assert p.greet("BABS") == "BRICK greets BABS"  # methods are attributes to other methods
    assert p.methods["greet"].source == GREET
    assert p.methods["greet"].signature == "greet(who)"


def test_broken_source_reports_line_and_column_and_keeps_old_method() -> None:
    p = brick()
    p.define_method("greet", GREET)
    with pytest.raises(CompileError) as err:
        p.define_method("greet", "def greet(self, who):\n    return (who\n")
    assert err.value.detail["line"] == 2
    assert err.value.detail["column"] is not None
    assert p.invoke("greet", {"who": "X"}) == "BRICK greets X"


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("def other(self):\n    return 1\n", "named `greet`"),
        ("def greet():\n    return 1\n", "self"),
        ("raise ValueError('at definition')\n", "ValueError"),
        ("greet = 5\n", "named `greet`"),
    ],
)
def test_sources_that_do_not_define_a_method(source: str, match: str) -> None:
    with pytest.raises(CompileError, match=match):
        brick().define_method("greet", source)


def test_codex_is_immutable() -> None:
    p = brick()
    with pytest.raises(CodexImmutableError):
        p.codex = CODICES["ROBIN"]  # type: ignore[misc]
    with pytest.raises(Exception, match="frozen"):
        p.codex.role = "changed"  # type: ignore[misc]
    assert p.codex.role == CODICES["BRICK"].role


def test_unknown_attributes_are_refused() -> None:
    with pytest.raises(AttributeError, match=r"self\.state"):
        brick().mood = 3


def test_invoke_errors_are_typed() -> None:
    p = brick()
    p.define_method("greet", GREET)
    p.define_method("boom", "def boom(self):\n    return 1 / 0\n")
    with pytest.raises(InvalidValueError, match="greet"):
        p.invoke("greet", {"whom": "X"})
    with pytest.raises(MethodFailedError, match="ZeroDivisionError") as err:
        p.invoke("boom", {})
    assert "1 / 0" in err.value.detail["traceback"]
    with pytest.raises(DoesNotUnderstand):
        p.invoke("fly", {})
    with pytest.raises(DoesNotUnderstand):
        p.fly()


def test_clone_is_deep_and_independent() -> None:
    p = brick()
    p.state["nested"] = {"list": [1, 2]}
    p.define_method("greet", GREET)
    twin = p.clone("BRICK-2")
    twin.state["nested"]["list"].append(3)
    twin.define_method("greet", "def greet(self, who):\n    return 'changed'\n")
    assert p.state["nested"]["list"] == [1, 2]
    assert p.invoke("greet", {"who": "x"}) == "BRICK greets x"
    assert twin.invoke("greet", {"who": "x"}) == "changed"
    assert twin.name == "BRICK-2" and twin.codex is p.codex


def test_self_description() -> None:
    p = brick()
    p.define_method("greet", GREET)
    d = p.get_self_description()
    assert d["name"] == "BRICK" and d["role"] == CODICES["BRICK"].role
    assert d["methods"] == [{"name": "greet", "signature": "greet(who)", "doc": "Say hello."}]


def test_dill_round_trip_recompiles_methods() -> None:
    p = brick()
    p.state["x"] = [1, {"y": 2}]
    p.history.append({"prompt": "hi", "reply": "hello"})
    p.define_method("greet", GREET)
    q = dill.loads(dill.dumps(p))
    assert q.state == p.state and q.history == p.history and q.version == p.version
    assert q.invoke("greet", {"who": "Z"}) == "BRICK greets Z"
    assert q.codex == p.codex


def test_manager_register_get_list() -> None:
    m = ProtoManager()
    m.register(brick())
    with pytest.raises(AlreadyExistsError):
        m.register(brick())
    with pytest.raises(NotFoundError, match="BRICK"):
        m.get("ROBIN")
    assert [p.name for p in m.list()] == ["BRICK"]


def test_atomic_swap_and_stale_version() -> None:
    m = ProtoManager()
    events: list[tuple[str, str, int]] = []
    m.subscribe(lambda p, change, _d: events.append((p.name, change, p.version)))
    live = m.register(brick())
    first, second = live.clone(), live.clone()
    first.state["by"] = "first"
    assert m.atomic_swap(first).version == 1
    assert m.get("BRICK") is first
    with pytest.raises(StaleVersionError, match="version 1"):
        m.atomic_swap(second)
    assert m.get("BRICK") is first
    assert events == [("BRICK", "registered", 0), ("BRICK", "swapped", 1)]


def test_concurrent_swaps_serialise() -> None:
    m = ProtoManager()
    m.register(brick())
    wins: list[int] = []
    losses: list[int] = []

    def swapper() -> None:
        for _ in range(200):
            clone = m.get("BRICK").clone()
            try:
                wins.append(m.atomic_swap(clone).version)
            except StaleVersionError:
                losses.append(1)

    threads = [threading.Thread(target=swapper) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == list(range(1, len(wins) + 1))  # every version granted exactly once
    assert m.get("BRICK").version == len(wins)
    assert len(wins) + len(losses) == 800
