"""The dialogue service in-process: real LangGraph, SQLite checkpoints, Protos and journal;
only the model is the scripted TEST DOUBLE."""

from __future__ import annotations

from tests.dialogue.conftest import System
from tests.dialogue.doubles import CONCEDE_MARKER


def test_dissonance_pauses_then_step_edit_method_and_continue(system: System) -> None:
    service = system.service
    summary = service.start_dialogue("Should the team favour speed or care?")
    did = summary.dialogue_id
    paused = system.wait(lambda e: e.kind == "dialogue_paused" and e.reason == "dissonance")
    assert paused.node == "impasse" and paused.personas == ["BRICK", "ROBIN"]
    dissonance = system.kinds("cognitive_dissonance")
    assert len(dissonance) == 2 and all(e.score >= 0.6 for e in dissonance)
    assert dissonance[0].protos == ["BRICK", "ROBIN"] and "BRICK:" in dissonance[0].views[0]
    _, steps, _ = service.history(did)
    nodes = [s.node for s in steps]
    assert nodes[:2] == ["input", "start"]
    assert nodes[2:] == ["brick", "babs", "robin", "alfred", "brick", "robin", "alfred"]
    brick = steps[2].record
    assert "Should the team favour speed or care?" in brick["prompt"]
    assert brick["system"].startswith("You are BRICK") and brick["output"]
    assert brick["model"] == "embedded:scripted-double" and brick["duration_ms"] >= 0
    # step: exactly one node (the impasse), then paused again
    mark = system.mark()
    service.step(did)
    system.wait(lambda e: e.kind == "dialogue_paused" and e.reason == "step", after=mark)
    _, steps, _ = service.history(did)
    assert steps[-1].node == "impasse" and steps[-1].next == ["brick"]
    # edit state: a fork of the current checkpoint
    _, checkpoint, values = service.update_state(did, {"robin_view": "edited by the user"})
    assert values["robin_view"] == "edited by the user" and checkpoint
    _, steps, _ = service.history(did)
    assert steps[-1].node == "edit" and steps[-1].next == ["brick"]
    # edit a method: BRICK's live dialogue_prompt concedes; in effect on resume
    system.runtime.commit(
        {
            "op": "define_method",
            "proto": "BRICK",
            "name": "dialogue_prompt",
            "source": f"def dialogue_prompt(self, default):\n    return default + ' {CONCEDE_MARKER}'\n",
        }
    )
    mark = system.mark()
    service.continue_(did)
    finished = system.wait(lambda e: e.kind == "dialogue_finished", after=mark)
    assert finished.status == "converged"
    _, steps, _ = service.history(did)
    last_brick = [s for s in steps if s.node == "brick"][-1].record
    assert CONCEDE_MARKER in last_brick["prompt"]
    assert last_brick["prompt_source"] == "method BRICK.dialogue_prompt"
    assert service.store.dialogue(did).status == "finished"


def test_time_travel_to_step_1_and_resume(system: System) -> None:
    service = system.service
    did = service.start_dialogue("Speed or care?", breakpoints=["alfred"]).dialogue_id
    system.wait(lambda e: e.kind == "dialogue_paused" and e.reason == "breakpoint")
    _, steps, _ = service.history(did)
    first = next(s for s in steps if s.index == 1)
    assert first.node == "brick"
    old_tip = steps[-1].checkpoint_id
    service.set_breakpoints(did, [])
    system.runtime.commit(
        {
            "op": "define_method",
            "proto": "BRICK",
            "name": "dialogue_prompt",
            "source": f"def dialogue_prompt(self, default):\n    return default + ' {CONCEDE_MARKER}'\n",
        }
    )
    mark = system.mark()
    summary = service.rewind(did, first.before, resume=True)
    assert summary.status == "running"
    finished = system.wait(lambda e: e.kind == "dialogue_finished", after=mark)
    assert finished.status == "converged"
    _, steps, _ = service.history(did)
    assert old_tip not in {s.checkpoint_id for s in steps}  # a new branch from step 1
    # time travel forks the checkpoint it starts from, then runs step 1 again
    assert [s.node for s in steps[2:]] == ["fork", "brick", "robin", "alfred"]
    assert steps[2].before == first.before and steps[2].next == ["brick"]
    assert steps[3].index == 1 and steps[3].checkpoint_id != first.checkpoint_id


def test_rewind_without_resume_then_step(system: System) -> None:
    service = system.service
    did = service.start_dialogue("Speed or care?", breakpoints=["robin"]).dialogue_id
    system.wait(lambda e: e.kind == "dialogue_paused" and e.reason == "breakpoint")
    _, steps, _ = service.history(did)
    start = next(s for s in steps if s.node == "start")
    summary = service.rewind(did, start.checkpoint_id)
    assert summary.head == start.checkpoint_id and summary.next == ["brick"]
    assert summary.reason == "rewound"
    mark = system.mark()
    service.step(did)
    step = system.wait(lambda e: e.kind == "dialogue_step", after=mark)
    assert step.step.node == "brick" and step.step.index == 1
    paused = system.wait(lambda e: e.kind == "dialogue_paused", after=mark)
    assert paused.reason == "breakpoint" and paused.node == "robin"  # it outranks "step"
    assert service.store.dialogue(did).head == ""
    _, steps, _ = service.history(did)
    assert [s.node for s in steps] == ["input", "start", "fork", "brick"]
    assert steps[2].before == start.checkpoint_id  # the new branch grows from the rewind


def test_several_dialogues_at_once_pause_and_cancel(system: System) -> None:
    service = system.service
    system.scenario.delay_s = 0.05
    a = service.start_dialogue("Speed or care?", max_rounds=6).dialogue_id
    b = service.start_dialogue("Tea or coffee?", max_rounds=6).dialogue_id
    c = service.start_dialogue("Cats or dogs?", paused=True).dialogue_id
    system.wait(lambda e: e.kind == "dialogue_paused" and e.dialogue_id == c)
    assert service.store.dialogue(c).reason == "user" and service.store.dialogue(c).next == [
        "brick"
    ]
    system.wait(lambda e: e.kind == "dialogue_step" and e.dialogue_id == a)
    service.pause(a)
    paused = system.wait(lambda e: e.kind == "dialogue_paused" and e.dialogue_id == a)
    assert paused.reason in ("user", "dissonance")
    service.cancel(b)
    system.wait(lambda e: e.kind == "dialogue_finished" and e.dialogue_id == b)
    assert service.store.dialogue(b).status == "cancelled"
    listed = {d.dialogue_id: d.status for d in service.list_dialogues()}
    assert listed[a] == "paused" and listed[c] == "paused"


def test_a_failing_method_pauses_with_the_error_then_fix_and_continue(system: System) -> None:
    service = system.service
    system.runtime.commit(
        {
            "op": "define_method",
            "proto": "ROBIN",
            "name": "dialogue_prompt",
            "source": "def dialogue_prompt(self, default):\n    return 1 / 0\n",
        }
    )
    did = service.start_dialogue("Speed or care?", max_rounds=1).dialogue_id
    failed = system.wait(lambda e: e.kind == "dialogue_paused" and e.reason == "error")
    assert "ZeroDivisionError" in failed.detail["error"] and failed.node == "robin"
    assert service.store.dialogue(did).status == "error"
    system.runtime.commit({"op": "remove_method", "proto": "ROBIN", "name": "dialogue_prompt"})
    mark = system.mark()
    service.continue_(did)
    system.wait(lambda e: e.kind == "dialogue_finished", after=mark)


def test_invalid_edits_and_commands_are_refused(system: System) -> None:
    import pytest

    from shared_api.errors import InvalidValueError, NotFoundError, UnavailableError

    service = system.service
    with pytest.raises(InvalidValueError, match="Unknown graph nodes"):
        service.start_dialogue("x", breakpoints=["nope"])
    with pytest.raises(NotFoundError):
        service.start_dialogue("x", personas={"logic": "GHOST"})
    did = service.start_dialogue("x", paused=True).dialogue_id
    system.wait(lambda e: e.kind == "dialogue_paused" and e.dialogue_id == did)
    with pytest.raises(InvalidValueError, match="Editable"):
        service.update_state(did, {"personas": {"logic": "X"}})
    with pytest.raises(InvalidValueError, match="max_rounds"):
        service.update_state(did, {"max_rounds": "many"})
    with pytest.raises(InvalidValueError, match="no checkpoint"):
        service.rewind(did, "not-a-checkpoint")
    with pytest.raises(NotFoundError):
        service.step("d-missing")
    system.scenario.delay_s = 0.3
    service.continue_(did)
    with pytest.raises(UnavailableError, match="pause it"):
        service.update_state(did, {"goal": "y"})


def test_a_restart_resumes_a_running_dialogue_from_its_checkpoint(tmp_path) -> None:
    from backend.protos import Proto
    from tests.dialogue.conftest import close_system, make_system
    from tests.dialogue.doubles import Scenario

    previous = Proto.llm
    home = tmp_path / "home"
    scenario = Scenario(research=False, delay_s=0.1)
    system = make_system(home, scenario, max_rounds=2, impasse_rounds=5)
    try:
        did = system.service.start_dialogue("Speed or care?").dialogue_id
        system.wait(lambda e: e.kind == "dialogue_step" and e.step.node == "robin")
    finally:
        close_system(system)  # stops after the current node; the dialogue stays "running"
    assert system.service.store is not None
    ran = len(scenario.calls)
    system = make_system(home, scenario, max_rounds=2, impasse_rounds=5)
    try:
        finished = system.wait(lambda e: e.kind == "dialogue_finished")
        assert finished.dialogue_id == did and finished.status == "unresolved"
        _, steps, _ = system.service.history(did)
        assert [s.node for s in steps[2:]] == ["brick", "robin", "alfred"] * 2
        assert len(scenario.calls) > ran  # it went on
        # resumed, not restarted: the checkpointed turns of round 1 were not asked again
        assert scenario.turns("BRICK", 1) == 1 and scenario.turns("ROBIN", 1) == 1
        assert scenario.turns("BRICK", 2) == 1
    finally:
        close_system(system)
        Proto.llm = previous


def test_babs_researches_through_the_memory_and_falls_back_to_history(system: System) -> None:
    from types import SimpleNamespace

    from backend.dialogue.cast import Personas, memory_research
    from shared_api.errors import MemoryUnavailableError

    found = SimpleNamespace(hits=[SimpleNamespace(source="notes.md", text="Speed  kills.")])
    memory = SimpleNamespace(search=lambda question, k: found)
    personas = Personas(system.runtime, system.service.config, memory_research(memory))
    assert personas.facts("is speed safe?") == ["notes.md: Speed kills."]

    def unavailable(question: str, k: int) -> list[str]:
        raise MemoryUnavailableError("The memory is still opening.")

    system.runtime.commit(
        {
            "op": "record_interaction",
            "proto": "BABS",
            "interaction": {
                "id": "i",
                "ts": 1.0,
                "prompt": "Is speed safe on roads?",
                "reply": "Speed raises crash severity.",
            },
        }
    )
    fallback = Personas(system.runtime, system.service.config, unavailable)
    assert fallback.facts("is speed safe on roads?") == ["BABS: Speed raises crash severity."]


def test_a_paused_start_is_paused_at_once_and_steps_at_once(system: System) -> None:
    service = system.service
    summary = service.start_dialogue("Walk or cycle?", paused=True, breakpoints=["brick"])
    assert (summary.status, summary.reason, summary.next) == ("paused", "user", ["brick"])
    did = summary.dialogue_id
    mark = system.mark()
    service.step(did)  # accepted at once: nothing was running
    step = system.wait(lambda e: e.kind == "dialogue_step" and e.dialogue_id == did, after=mark)
    assert step.step.node == "brick"  # a step runs its node even at a breakpoint
    paused = system.wait(lambda e: e.kind == "dialogue_paused", after=mark)
    assert paused.reason == "step" and paused.node in ("babs", "robin")  # one node only
