"""The DebuggerMorph, ApprovalMorph and GoalsMorph as real widgets (offscreen SDL2, real GL),
then the whole workbench against a real backend subprocess whose models are the
ScriptedOllama TEST DOUBLE: an impasse opens the debugger, the halo's debug handle too."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kivy.clock import Clock

from backend.launcher import starter
from morphs.approvals import ApprovalMorph
from morphs.debugger import DebuggerMorph, ask_goal
from morphs.goals import GoalsMorph
from shared_api.commands import (
    DebugContinue,
    DebugRewind,
    DebugStep,
    DebugUpdateState,
    DecideAmendment,
    GoalAction,
    SetBreakpoints,
)
from shared_api.dialogue import ApprovalInfo, DialogueSummary, GoalInfo, GraphEdge, StepInfo
from tests.dialogue.doubles import Scenario, ScriptedOllama
from tests.ui.conftest import frames, screenshot
from ui.app import WorkbenchApp

EDGES = [
    GraphEdge(source="__start__", target="brick"),
    GraphEdge(source="brick", target="babs", conditional=True),
    GraphEdge(source="brick", target="robin", conditional=True),
    GraphEdge(source="babs", target="robin", conditional=True),
    GraphEdge(source="robin", target="alfred", conditional=True),
    GraphEdge(source="alfred", target="impasse", conditional=True),
    GraphEdge(source="alfred", target="amend", conditional=True),
    GraphEdge(source="alfred", target="brick", conditional=True),
    GraphEdge(source="alfred", target="__end__", conditional=True),
    GraphEdge(source="impasse", target="brick", conditional=True),
]
NODES = ["brick", "babs", "robin", "alfred", "impasse", "amend"]
SUMMARY = DialogueSummary(
    dialogue_id="d-1",
    goal="Should the team favour speed or care?",
    status="paused",
    reason="dissonance",
    next=["impasse"],
    round=2,
    max_rounds=4,
    dissonance=0.87,
    personas={"logic": "BRICK", "empathy": "ROBIN", "judge": "ALFRED", "research": "BABS"},
    breakpoints=["alfred"],
)


def record(node: str, persona: str, output: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": node,
        "node": node,
        "persona": persona,
        "task": "argue",
        "input": {"goal": SUMMARY.goal, "round": 1},
        "system": f"You are {persona}, [the] persona.",
        "prompt": f"Goal: {SUMMARY.goal}\n[b]not markup[/b]",
        "prompt_source": "default",
        "output": output,
        "duration_ms": 812.0,
        "model": "embedded:smollm2-135m-instruct",
        "timings": {"ttft_ms": 40.0, "tokens_per_s": 70.0},
        **extra,
    }


STEPS = [
    StepInfo(index=0, checkpoint_id="c0", node="input", source="input", next=["__start__"]),
    StepInfo(index=0, checkpoint_id="c1", before="c0", node="start", source="loop", next=["brick"]),
    StepInfo(
        index=1,
        checkpoint_id="c2",
        before="c1",
        node="brick",
        source="loop",
        next=["robin"],
        round=0,
        record=record("brick", "BRICK", "Speed is strictly better."),
    ),
    StepInfo(
        index=2,
        checkpoint_id="c3",
        before="c2",
        node="robin",
        source="loop",
        next=["alfred"],
        record=record("robin", "ROBIN", "I disagree: care matters more."),
    ),
    StepInfo(
        index=3,
        checkpoint_id="c4",
        before="c3",
        node="alfred",
        source="loop",
        next=["impasse"],
        round=1,
        dissonance=0.87,
        record=record(
            "alfred",
            "ALFRED",
            "CONVERGENCE: 1\nDISSONANCE: 9",
            judgement={
                "verdict": "dissonant",
                "dissonance": 0.87,
                "convergence": 0.05,
                "criteria": {"alfred_dissonance": 0.9, "conflict": 0.75},
                "reason": "opposite",
            },
        ),
    ),
]
VALUES = {
    "goal": SUMMARY.goal,
    "max_rounds": 4,
    "round": 1,
    "brick_view": "Speed.",
    "robin_view": "Care.",
    "dissonance_streak": 2,
    "personas": {"logic": "BRICK"},
}


def test_debugger_morph_renders_steps_and_announces_commands(window: Any) -> None:
    morph = DebuggerMorph("d-1", pos=(140, 60))
    intents: list[Any] = []
    inspected: list[str] = []
    morph.bind(
        on_intent=lambda _m, c: intents.append(c), on_inspect=lambda _m, p: inspected.append(p)
    )
    window.add_widget(morph)
    morph.show_graph(NODES, EDGES, "graph TD;\n\tbrick --> robin;")
    morph.show_summary(SUMMARY)
    morph.show_history(STEPS)
    morph.show_values(VALUES)
    frames(4)
    assert "dissonance 0.87" in morph.title.text and "next: impasse" in morph.title.text
    assert morph.toggles["alfred"].state == "down" and morph.graph.upcoming == "impasse"
    assert morph.graph.current == "alfred" and set(morph.graph.centers) >= set(NODES)
    assert morph.selected == len(STEPS) - 1  # follows the newest step
    assert "Judgement" in morph.detail.text and "alfred_dissonance 0.90" in morph.detail.text
    morph.select(2)
    assert "Speed is strictly better." in morph.detail.text
    assert "&bl;b&br;not markup" in morph.detail.text  # user text never becomes markup
    assert "System prompt" in morph.detail.text and "812 ms" in morph.detail.text
    screenshot("dialogue-debugger-morph")

    morph.buttons["step"].dispatch("on_release")
    morph.buttons["continue"].dispatch("on_release")
    assert intents == [DebugStep(dialogue_id="d-1"), DebugContinue(dialogue_id="d-1")]
    morph.toggles["robin"].state = "down"
    morph.toggles["robin"].dispatch("on_release")
    assert intents[-1] == SetBreakpoints(dialogue_id="d-1", nodes=["robin", "alfred"])
    morph.buttons["restart"].dispatch("on_release")  # step 2 (brick) is selected
    assert intents[-1] == DebugRewind(dialogue_id="d-1", checkpoint_id="c1", resume=True)
    morph.buttons["rewind"].dispatch("on_release")
    assert intents[-1] == DebugRewind(dialogue_id="d-1", checkpoint_id="c1", resume=False)
    morph.editor.text = morph.editor.text.replace('"Care."', '"Care, edited."')
    morph.apply_edit()
    assert intents[-1] == DebugUpdateState(
        dialogue_id="d-1", values={"robin_view": "Care, edited."}
    )
    count = len(intents)
    morph.editor.text = "{not json"
    morph.apply_edit()
    assert len(intents) == count and "not valid JSON" in morph.result.text
    morph.buttons["inspect"].dispatch("on_release")
    assert inspected == ["BRICK"]
    morph.buttons["mermaid"].dispatch("on_release")
    assert "brick --&gt; robin" in morph.detail.text or "brick --> robin" in morph.detail.text
    running = SUMMARY.model_copy(update={"status": "running", "reason": ""})
    morph.show_summary(running)
    assert morph.buttons["step"].disabled and not morph.buttons["pause"].disabled


def test_approval_and_goals_morphs(window: Any) -> None:
    approval = ApprovalInfo(
        interrupt_id="i-1",
        dialogue_id="d-1",
        proto="ROBIN",
        field="core_principles",
        old="Listen first.",
        new="Listen first.\nGround empathy in evidence.",
        diff="--- codex.core_principles (now)\n+++ codex.core_principles (proposed)\n"
        "@@ -1 +1,2 @@\n Listen first.\n+Ground empathy in evidence.",
        reason="ROBIN's views lacked evidence",
    )
    morph = ApprovalMorph(approval, pos=(40, 360))
    decisions: list[Any] = []
    morph.bind(on_intent=lambda _m, c: decisions.append(c))
    window.add_widget(morph)
    goals = GoalsMorph(pos=(640, 360))
    actions: list[Any] = []
    goals.bind(on_intent=lambda _m, c: actions.append(c))
    window.add_widget(goals)
    goals.show(
        [
            GoalInfo(
                goal_id="g-1",
                text="Resolve the impasse on speed or care",
                source="dialogue",
                proto="BRICK",
                score=0.87,
                created=2.0,
            ),
            GoalInfo(
                goal_id="g-2",
                text="Research for BABS: 1830",
                source="curiosity_deficit",
                status="approved",
                dialogue_id="d-2",
                created=1.0,
            ),
        ]
    )
    frames(4)
    assert "[color=7be07b]+Ground empathy in evidence.[/color]" in morph.diff.text
    assert "2 queued, 1 waiting for you" in goals.title.text
    screenshot("dialogue-approval-and-goals")
    morph.note.text = "fine"
    morph.approve_button.dispatch("on_release")
    assert decisions == [DecideAmendment(interrupt_id="i-1", approve=True, note="fine")]
    goals.buttons[("g-1", "approve")].dispatch("on_release")
    assert actions == [GoalAction(goal_id="g-1", action="approve")]
    assert ("g-2", "approve") not in goals.buttons and ("g-2", "debugger") in goals.buttons


def until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the workbench"
        frames(1)
        time.sleep(0.01)


def test_workbench_impasse_opens_the_debugger_and_the_halo_debug_handle(
    window: Any, tmp_path: Path
) -> None:
    scenario = Scenario(amendments=["", "ROBIN core_principles: Ground empathy in evidence."])
    with ScriptedOllama(scenario) as fake:
        home = tmp_path / "home"
        home.mkdir()
        (home / "config.toml").write_text(fake.config_toml(max_rounds=4, impasse_rounds=2))
        app = WorkbenchApp(home, start_backend=starter(home, f"workbench pid {os.getpid()}"))
        root = app.build()
        root.size = window.size
        window.add_widget(root)
        try:
            until(lambda: app.store.connection == "connected")
            until(lambda: len(app.world.persona_morphs()) == 4)
            popup = ask_goal(app.dialogues.start)
            popup.goal_input.text = "Should the team favour speed or care?"
            popup.start()
            # ALFRED proposes an amendment in round 2: the approval view opens; approve it
            until(lambda: bool(app.dialogues.approval_morphs()))
            (approval,) = app.dialogues.approval_morphs()
            assert "+Ground empathy in evidence." in approval.diff.text
            approval.decide(True)
            until(lambda: approval.approve_button.disabled, timeout=30)
            assert "approved" in approval.status.text
            app.world.remove_widget(approval)
            # ... then the impasse pauses the dialogue and the debugger is open on it
            (debugger,) = app.dialogues.debuggers()
            until(lambda: debugger.summary is not None and debugger.summary.reason == "dissonance")
            until(lambda: any(s.node == "alfred" for s in debugger.steps))
            brick = next(m for m in app.world.persona_morphs() if m.model.name == "BRICK")
            assert brick.model.dissonance >= 0.6  # ALFRED's score tints both sides
            robin = next(m for m in app.world.persona_morphs() if m.model.name == "ROBIN")
            assert robin.model.dissonance == brick.model.dissonance
            assert "ROBIN (robin): I disagree" in robin.model.conversation
            until(lambda: bool(debugger.graph.nodes) and "impasse" in debugger.mermaid)
            frames(5)
            screenshot("dialogue-workbench-impasse")
            # step one node from the debugger
            debugger.step()
            until(lambda: any(s.node == "impasse" for s in debugger.steps), timeout=30)
            # the halo's debug handle opens the persona's current dialogue (the same morph)
            app.world.open_halo(brick)
            assert app.world.halo.handles["debug"].available
            app.world.halo.dispatch("on_action", "debug")
            assert app.dialogues.debuggers() == [debugger]
            # the goals view shows the motivator's goal from the impasse
            goals = app.dialogues.open_goals((700, 700))
            until(
                lambda: any(
                    "Resolve the impasse" in g.text for g in app.dialogues.store.goals.values()
                )
            )
            assert "waiting for you" in goals.title.text
        finally:
            app.on_stop()
            Clock.tick()


def test_debugger_numbers_steps_uniquely_and_stops_offering_step_when_finished(
    window: Any,
) -> None:
    morph = DebuggerMorph("d-1", pos=(140, 60))
    window.add_widget(morph)
    morph.show_summary(SUMMARY)
    morph.show_history(STEPS)  # "input" and "start" share the graph's seq 0
    frames(2)
    rows = [w.text for w in reversed(morph.step_list.children)]
    numbers = [row.split()[0] for row in rows]
    assert numbers == ["#0", "#1", "#2", "#3", "#4"] and len(set(numbers)) == len(rows)
    morph.select(1)
    assert morph.detail.text.startswith("[b]#1 start")
    assert not morph.buttons["step"].disabled and not morph.buttons["continue"].disabled
    for status in ("finished", "cancelled"):
        morph.show_summary(SUMMARY.model_copy(update={"status": status, "next": []}))
        assert morph.buttons["step"].disabled and morph.buttons["continue"].disabled
    long_goal = SUMMARY.model_copy(update={"goal": "Should a small team write tests " * 4})
    morph.show_summary(long_goal)
    assert "\u2026" in morph.title.text and morph.title.tooltip == long_goal.goal
