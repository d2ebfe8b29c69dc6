"""The forge loop in-process, with ScriptedModel (a TEST DOUBLE standing in for BRICK's model,
to force a first attempt that fails and a second that passes) and a real sandbox
(bubblewrap) running the tests and every later call of the tool."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backend.bus import EventBus
from backend.config import BackendConfig, ForgeConfig, ModelsConfig
from backend.forge import ToolForge
from backend.home import Home
from backend.llm.ollama_backend import OllamaBackend
from backend.llm.service import PersonaLLM
from backend.protos import Proto
from backend.runtime import Runtime
from backend.sandbox import SecureCodeExecutor
from shared_api.errors import AlreadyExistsError, InvalidValueError, MethodFailedError
from shared_api.events import Event, ForgeFinished, ForgeProgress
from shared_api.replies import DoesNotUnderstand, InvokeResult
from tests.doubles.scripted_model import ScriptedModel
from tests.forge.scripts import NO_ASSERT, RIGHT, WRONG


@dataclass
class World:
    runtime: Runtime
    forge: ToolForge
    model: ScriptedModel
    events: list[Event]
    llm: PersonaLLM

    def close(self) -> None:
        self.forge.close()
        self.llm.close()
        self.runtime.close(save=False)
        Proto.llm = Proto.tool_runner = None


def build(root: Path, sandbox: SecureCodeExecutor, **forge: object) -> World:
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(lambda e, _p: events.append(e))
    runtime = Runtime(Home(root).ensure(), BackendConfig(autosave_interval_s=0), bus)
    model = ScriptedModel()
    unreachable = OllamaBackend("http://127.0.0.1:9", 1.0)
    llm = PersonaLLM(runtime, ModelsConfig(), bus, {"ollama": unreachable, "embedded": model})
    config = ForgeConfig.model_validate(
        {"candidates": 1, "retry_candidates": 0, "probes": False, **forge}
    )
    tool_forge = ToolForge(runtime, llm, bus, config, sandbox)
    Proto.llm, Proto.tool_runner = llm, tool_forge
    runtime.on_does_not_understand = tool_forge.on_does_not_understand
    runtime.start()
    return World(runtime, tool_forge, model, events, llm)


@pytest.fixture
def world(tmp_path: Path, bubblewrap: SecureCodeExecutor) -> Iterator[World]:
    w = build(tmp_path, bubblewrap)
    yield w
    w.close()


def forge(w: World, proto: str = "ROBIN", attempts: int = 3) -> ForgeFinished:
    return w.forge.forge(
        proto, "add_numbers", "add two numbers", ["add_numbers(a=1, b=2) == 3"], attempts,
        "forge-1", threading.Event(),
    )  # fmt: skip


def test_fails_once_then_attaches_a_tool_that_runs_in_the_sandbox(world: World) -> None:
    world.model.script(WRONG, RIGHT)
    finished = forge(world)
    assert finished.outcome == "attached" and finished.tool is not None
    first, second = finished.attempts
    assert (first.stage, first.passed, second.passed) == ("test", False, True)
    assert first.runtime == "bubblewrap"
    assert "failed the example `add_numbers(a=1, b=2) == 3`: it returned -1" in first.feedback
    # the failure went back to the author, with the code it had written
    assert "it returned -1" in world.model.prompts[1] and "return a - b" in world.model.prompts[1]

    robin = world.runtime.manager.get("ROBIN")
    assert sorted(robin.tools) == ["add_numbers"] and not robin.has_method("add_numbers")
    tool = robin.tools["add_numbers"]
    assert tool.params == ["a", "b"] and tool.provenance.author == "BRICK"
    assert tool.provenance.model == "scripted" and len(tool.attempts) == 2
    assert tool.provenance.examples == ["add_numbers(a=1, b=2) == 3"]
    assert tool.provenance.examples_source == "given" and tool.provenance.winner == (2, 1)
    assert tool.provenance.candidates_tried == 2 and "return a - b" in first.candidates[0].source
    # the examples are stored as its tests, with its own tests that agreed
    assert tool.tests.startswith("def test_example_1():\n    assert add_numbers(a=1, b=2) == 3")
    assert "def test_adds_negatives" in tool.tests
    # a live method, whose body runs in the sandbox: invoke, and from another method
    reply = world.runtime.invoke("ROBIN", "add_numbers", {"a": 20, "b": 22})
    assert isinstance(reply, InvokeResult) and reply.result == 42
    world.runtime.commit(
        {
            "op": "define_method",
            "proto": "ROBIN",
            "name": "double_sum",
            "source": "def double_sum(self, x):\n    return 2 * self.add_numbers(x, x)\n",
        }
    )
    assert world.runtime.invoke("ROBIN", "double_sum", {"x": 5}).result == 20  # type: ignore[union-attr]

    phases = [(e.attempt, e.phase) for e in world.events if isinstance(e, ForgeProgress)]
    assert phases == [
        (1, "writing"),
        (1, "testing"),
        (1, "failed"),
        (2, "writing"),
        (2, "testing"),
        (2, "passed"),
    ]
    failed = next(e for e in world.events if isinstance(e, ForgeProgress) and e.phase == "failed")
    assert "it returned -1" in failed.feedback
    assert any(isinstance(e, ForgeFinished) and e.outcome == "attached" for e in world.events)


def test_the_tool_survives_journal_replay_and_image_save(
    tmp_path: Path, bubblewrap: SecureCodeExecutor
) -> None:
    w = build(tmp_path, bubblewrap)
    w.model.script(RIGHT)
    assert forge(w).outcome == "attached"
    w.close()  # no save: the attach must come back from the journal
    w = build(tmp_path, bubblewrap)
    assert w.runtime.invoke("ROBIN", "add_numbers", {"a": 1, "b": 2}).result == 3  # type: ignore[union-attr]
    w.runtime.save_image()
    w.close()
    w = build(tmp_path, bubblewrap)  # now from the image, nothing left to replay
    assert w.runtime.image_info.replayed_records == 0
    robin = w.runtime.manager.get("ROBIN")
    assert robin.tools["add_numbers"].tests.startswith("def test_example_1")
    assert w.runtime.invoke("ROBIN", "add_numbers", {"a": 2, "b": 2}).result == 4  # type: ignore[union-attr]
    w.runtime.commit({"op": "remove_tool", "proto": "ROBIN", "name": "add_numbers"})
    assert isinstance(w.runtime.invoke("ROBIN", "add_numbers", {}), DoesNotUnderstand)
    w.close()


def test_gives_up_after_max_attempts_and_attaches_nothing(world: World) -> None:
    world.model.script("```python\ndef plus(a, b):\n    return a + b\n```", "I am not sure.", WRONG)
    finished = forge(world)
    assert finished.outcome == "gave_up" and finished.tool is None
    assert [(a.stage, a.passed) for a in finished.attempts] == [
        ("check", False), ("write", False), ("test", False),
    ]  # fmt: skip
    assert "def add_numbers" in finished.attempts[0].feedback
    assert "add_numbers" not in world.runtime.manager.get("ROBIN").tools


def test_without_tests_of_its_own_a_candidate_right_on_the_examples_attaches(
    world: World,
) -> None:
    world.model.script(NO_ASSERT)  # its one test asserts nothing: dropped, not refused
    finished = forge(world)
    assert finished.outcome == "attached" and finished.tool is not None
    assert "test_exists" not in finished.tool.tests


def test_best_of_n_greedy_first_then_every_candidate_in_one_sandbox_run(
    tmp_path: Path, bubblewrap: SecureCodeExecutor
) -> None:
    """The greedy candidate is tried alone first; it failed, so the sampled ones are written
    and all three run together in ONE sandbox run."""
    w = build(tmp_path, bubblewrap, candidates=3)
    runs: list[str] = []
    real = w.forge.executor.run_python
    w.forge.executor.run_python = lambda *a, **k: runs.append(a[0]) or real(*a, **k)  # type: ignore[method-assign]
    try:
        w.model.script(WRONG, RIGHT, WRONG)
        finished = forge(w)
        assert finished.outcome == "attached" and finished.tool is not None
        assert len(runs) == 2 and len(finished.attempts) == 1
        assert runs[0].count("return a - b") == 1  # the greedy one alone
        assert runs[1].count("return a - b") == 2 and runs[1].count("return a + b") == 1
        outcomes = finished.attempts[0].candidates
        assert [o.passed for o in outcomes] == [False, True, False]
        assert outcomes[0].got == "-1" and finished.tool.provenance.winner == (1, 2)
        assert finished.tool.provenance.candidates_tried == 3
        # the sampled ones write anew: told what the greedy one got wrong, not shown its code
        # (shown it, a small model copied it into every sample)
        for sampled in w.model.prompts[1:3]:
            assert "An earlier version failed" in sampled and "it returned -1" in sampled
            assert "return a - b" not in sampled
    finally:
        w.close()
    w = build(tmp_path / "settled", bubblewrap, candidates=3)
    try:  # a greedy candidate that passes everything settles the attempt: nothing sampled
        w.model.script(RIGHT, WRONG, WRONG)
        finished = forge(w)
        assert finished.tool is not None and finished.tool.provenance.candidates_tried == 1
        assert len(w.model.prompts) == 1
    finally:
        w.close()


def test_an_attempt_after_a_failed_one_samples_retry_candidates(
    tmp_path: Path, bubblewrap: SecureCodeExecutor
) -> None:
    """The greedy candidate of attempt 1 and its samples all failed: attempt 2 writes
    ``retry_candidates`` (greedy, from the retry prompt, and 3 sampled anew), all in one run."""
    w = build(tmp_path, bubblewrap, candidates=2, retry_candidates=4)
    try:
        w.model.script(WRONG, WRONG, WRONG, WRONG, WRONG, RIGHT)
        finished = forge(w)
        assert finished.outcome == "attached" and finished.tool is not None
        first, second = finished.attempts
        assert len(first.candidates) == 2 and len(second.candidates) == 4
        assert [o.passed for o in second.candidates] == [False, False, False, True]
        assert finished.tool.provenance.winner == (2, 4)
        assert finished.tool.provenance.candidates_tried == 6
        assert "Your previous attempt was" in w.model.prompts[2]  # attempt 2's greedy one
        for sampled in w.model.prompts[3:6]:
            assert "An earlier version failed" in sampled and "return a - b" not in sampled
    finally:
        w.close()


def test_without_examples_the_author_proposes_them_first(world: World) -> None:
    proposal = '{"examples": ["add_numbers(a=2, b=2) == 4", "not an example ("]}'
    world.model.script(proposal, WRONG, RIGHT)
    finished = world.forge.forge("ROBIN", "add_numbers", "add a and b", [], 3, "f-3",
                                 threading.Event())  # fmt: skip
    assert finished.outcome == "attached" and finished.tool is not None
    assert finished.tool.provenance.examples == ["add_numbers(a=2, b=2) == 4"]
    assert finished.tool.provenance.examples_source == "proposed"
    assert "returned 0" in finished.attempts[0].feedback  # 2 - 2, against the proposed 4
    shown = [e.message for e in world.events if isinstance(e, ForgeProgress)
             and e.phase == "examples"]  # fmt: skip
    assert shown[-1] == "examples: add_numbers(a=2, b=2) == 4"


ONLY_GIVEN = """```python
def add_numbers(a, b):
    return 3 if (a, b) == (1, 2) else 0
```"""


def test_probes_choose_among_the_candidates_that_pass_the_examples(
    tmp_path: Path, bubblewrap: SecureCodeExecutor
) -> None:
    """Beside the given example, the author proposes checks ("probes"); of the candidates
    that pass the example, the one agreeing with most probes wins, not the first written.
    A wrong probe never makes a candidate that fails the example win."""
    w = build(tmp_path, bubblewrap, candidates=3, probes=True)
    try:
        probes = (
            '{"examples": ["add_numbers(a=1, b=2) == 3", "add_numbers(a=0, b=5) == 5", '
            '"add_numbers(a=-1, b=-1) == -2", "add_numbers(a=5, b=5) == 11"]}'
        )
        w.model.script(probes, ONLY_GIVEN, WRONG, RIGHT)
        finished = forge(w, attempts=1)
        assert finished.outcome == "attached" and finished.tool is not None
        provenance = finished.tool.provenance
        # the probe repeating the given example is dropped; the wrong one (5+5=11) is kept
        assert provenance.probes == [
            "add_numbers(a=0, b=5) == 5", "add_numbers(a=-1, b=-1) == -2",
            "add_numbers(a=5, b=5) == 11",
        ]  # fmt: skip
        assert provenance.winner == (1, 3)  # RIGHT, though ONLY_GIVEN came first
        only_given, wrong, right = finished.attempts[0].candidates
        assert only_given.passed and (only_given.probes_passed, only_given.probes_total) == (0, 3)
        assert not wrong.passed  # 1 - 2 fails the example, whatever the probes say
        assert right.passed and right.probes_passed == 2  # not the wrong 11
        assert "return a + b" in finished.tool.source
        # the signature the example implies went into the prompt; the probes' prompt too
        assert "`def add_numbers(a: int, b: int):`" in w.model.prompts[0]
        assert "`def add_numbers(a: int, b: int):`" in w.model.prompts[1]
        shown = [e.message for e in w.events if isinstance(e, ForgeProgress)]
        assert any(m.startswith("proposed checks: add_numbers(a=0, b=5) == 5") for m in shown)
        assert "candidate 3 passed all 1 example(s) and 2 of 3 proposed check(s)" in shown
    finally:
        w.close()


def test_a_missed_probe_buys_one_more_attempt_and_the_best_is_attached(
    tmp_path: Path, bubblewrap: SecureCodeExecutor
) -> None:
    probe = '{"examples": ["add_numbers(a=0, b=5) == 5"]}'
    w = build(tmp_path / "better", bubblewrap, probes=True)
    try:  # attempt 2 fixes what the probe found: it is attached
        w.model.script(probe, ONLY_GIVEN, RIGHT)
        finished = forge(w, attempts=3)
        assert finished.tool is not None and finished.tool.provenance.winner == (2, 1)
        assert len(finished.attempts) == 2 and "return a + b" in finished.tool.source
        retry = w.model.prompts[2]
        assert "for the check `add_numbers(a=0, b=5) == 5` it gave: 0" in retry
        assert "return 3 if (a, b) == (1, 2) else 0" in retry
        shown = [e.message for e in w.events if isinstance(e, ForgeProgress)]
        assert any("missed `add_numbers(a=0, b=5) == 5` (got 0): one more attempt" in m
                   for m in shown)  # fmt: skip
    finally:
        w.close()
    w = build(tmp_path / "worse", bubblewrap, probes=True)
    try:  # attempt 2 is worse (fails the example): attempt 1's candidate is attached
        w.model.script(probe, ONLY_GIVEN, WRONG)
        finished = forge(w, attempts=2)
        assert finished.tool is not None and finished.tool.provenance.winner == (1, 1)
        assert "return 3 if" in finished.tool.source
    finally:
        w.close()


def test_after_a_missed_probe_the_samples_are_told_what_it_gave(
    tmp_path: Path, bubblewrap: SecureCodeExecutor
) -> None:
    """Attempt 1's winner missed a probe; attempt 2's greedy one misses it too, so samples
    are written anew: told the check and what came out, warned it may be wrong, no code."""
    probe = '{"examples": ["add_numbers(a=0, b=5) == 5"]}'
    w = build(tmp_path, bubblewrap, candidates=2, probes=True)
    try:
        w.model.script(probe, ONLY_GIVEN, ONLY_GIVEN, ONLY_GIVEN, RIGHT)
        finished = forge(w, attempts=2)
        assert finished.tool is not None and finished.tool.provenance.winner == (2, 2)
        sampled = w.model.prompts[4]
        assert "for the proposed check `add_numbers(a=0, b=5) == 5` it gave 0" in sampled
        assert "may itself be wrong" in sampled and "return 3 if" not in sampled
        assert "proposed check" not in w.model.prompts[2]  # attempt 1: nothing missed yet
    finally:
        w.close()


def test_no_usable_probes_leave_the_first_passing_candidate(
    tmp_path: Path, bubblewrap: SecureCodeExecutor
) -> None:
    w = build(tmp_path, bubblewrap, candidates=2, probes=True)
    try:
        w.model.script("not json at all", ONLY_GIVEN, RIGHT)
        finished = forge(w, attempts=1)
        assert finished.tool is not None and finished.tool.provenance.probes == []
        assert finished.tool.provenance.winner == (1, 1)
    finally:
        w.close()


def test_an_example_that_is_not_a_check_is_refused_up_front(world: World) -> None:
    with pytest.raises(InvalidValueError, match="does not call add_numbers"):
        world.forge.submit("ROBIN", "add_numbers", "add", ["len('ab') == 2"])
    assert world.model.prompts == []


def test_bad_calls_are_typed_errors(world: World) -> None:
    world.model.script(RIGHT)
    forge(world)
    with pytest.raises(InvalidValueError, match="unexpected c"):
        world.runtime.invoke("ROBIN", "add_numbers", {"a": 1, "b": 2, "c": 3})
    with pytest.raises(MethodFailedError, match="exited with status 1") as info:
        world.runtime.invoke("ROBIN", "add_numbers", {"a": 1, "b": "x"})
    assert "TypeError" in (info.value.detail.get("traceback") or "")
    with pytest.raises(AlreadyExistsError, match="forged tool"):
        world.runtime.commit(
            {
                "op": "define_method",
                "proto": "ROBIN",
                "name": "add_numbers",
                "source": "def add_numbers(self): pass",
            }
        )


def test_a_tool_never_shadows_a_method(world: World) -> None:
    world.runtime.commit(
        {
            "op": "define_method",
            "proto": "ROBIN",
            "name": "add_numbers",
            "source": "def add_numbers(self): return 1",
        }
    )
    with pytest.raises(AlreadyExistsError):
        world.forge.submit("ROBIN", "add_numbers", "add")


def test_cancel_stops_between_attempts(world: World) -> None:
    cancel = threading.Event()
    world.model.script(WRONG, RIGHT)
    world.forge.bus.subscribe(
        lambda e, _p: cancel.set() if isinstance(e, ForgeProgress) and e.phase == "failed" else None
    )
    finished = world.forge.forge(
        "ROBIN", "add_numbers", "add", ["add_numbers(a=1, b=2) == 3"], 3, "f-2", cancel
    )
    assert finished.outcome == "cancelled" and len(finished.attempts) == 1
    assert finished.error is not None and finished.error.code == "cancelled"


def test_does_not_understand_proposes_a_forge_when_autonomy_is_off(world: World) -> None:
    reply = world.runtime.invoke("BABS", "add_numbers", {"a": 1, "b": 2})
    assert isinstance(reply, DoesNotUnderstand) and reply.forge is None
    assert reply.proposal is not None and reply.proposal["name"] == "add_numbers"
    assert '{"a": 1, "b": 2}' in str(reply.proposal["description"])
    assert world.model.prompts == []  # nothing was written without the user


def test_does_not_understand_forges_and_retries_when_autonomy_is_on(
    tmp_path: Path, bubblewrap: SecureCodeExecutor
) -> None:
    w = build(tmp_path, bubblewrap, autonomy=True)
    try:
        w.model.script('{"examples": ["add_numbers(a=1, b=2) == 3"]}', RIGHT)
        reply = w.runtime.invoke("BABS", "add_numbers", {"a": 40, "b": 2})
        assert isinstance(reply, InvokeResult) and reply.result == 42
        tool = w.runtime.manager.get("BABS").tools["add_numbers"]
        assert tool.provenance.requested_by == "does_not_understand"
        w.model.script('{"examples": ["mystery() == 1"]}', "no code today", "still none", "nope")
        reply = w.runtime.invoke("BABS", "mystery", {})
        assert isinstance(reply, DoesNotUnderstand) and reply.forge is not None
        assert reply.forge["outcome"] == "gave_up" and reply.forge["attempts"] == 3
    finally:
        w.close()
