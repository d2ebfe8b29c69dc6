"""The whole flow through a real backend subprocess over real ZeroMQ, with LangGraph and the
SQLite checkpointer in the backend; the personas' models are the ScriptedOllama TEST DOUBLE."""

from __future__ import annotations

import time
from pathlib import Path

from shared_api import commands as c
from shared_api.replies import (
    AmendmentDecision,
    ApprovalListReply,
    DebugAck,
    DebugHistoryReply,
    DebugStateUpdated,
    DialogueAccepted,
    DialogueGraphReply,
    DialogueStatusReply,
    GoalListReply,
    GoalReply,
)
from shared_api.transport import Client
from tests.dialogue.conftest import EventLog, Spawn
from tests.dialogue.doubles import CONCEDE_MARKER, Scenario, ScriptedOllama

GOAL = "Should the team favour speed or care?"
CONCEDING = f"def dialogue_prompt(self, default):\n    return default + ' {CONCEDE_MARKER}'\n"


def write_config(home: Path, fake: ScriptedOllama, **dialogue: object) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(fake.config_toml(**dialogue))


def history(client: Client, did: str) -> DebugHistoryReply:
    reply = client.request(c.DebugHistory(dialogue_id=did))
    assert isinstance(reply, DebugHistoryReply)
    return reply


def wait_status(client: Client, did: str, status: str, timeout: float = 60) -> DialogueStatusReply:
    deadline = time.monotonic() + timeout
    while True:
        reply = client.request(c.DialogueStatus(dialogue_id=did))
        assert isinstance(reply, DialogueStatusReply)
        if reply.dialogue.status == status:
            return reply
        assert time.monotonic() < deadline, f"still {reply.dialogue.status}"
        time.sleep(0.1)


def test_dissonance_debugger_step_edit_method_resume_time_travel_and_goal(
    spawn: Spawn, tmp_path: Path
) -> None:
    scenario = Scenario()
    with ScriptedOllama(scenario) as fake:
        write_config(tmp_path / "home", fake, max_rounds=5, impasse_rounds=2)
        backend = spawn()
        with backend.client() as client, EventLog(backend) as log:
            graph = client.request(c.DialogueGraph())
            assert isinstance(graph, DialogueGraphReply)
            assert {"brick", "robin", "alfred", "babs", "impasse", "amend"} <= set(graph.nodes)
            assert "alfred -.-> impasse" in graph.mermaid

            # 1. start: the reply comes at once, the dialogue runs on its own thread
            accepted = client.request(c.StartDialogue(goal=GOAL))
            assert isinstance(accepted, DialogueAccepted)
            did = accepted.dialogue.dialogue_id
            # 2. dissonance pauses it (after impasse_rounds dissonant rounds)
            paused = log.wait(lambda e: e.kind == "dialogue_paused" and e.reason == "dissonance")
            assert paused.dialogue_id == did and paused.node == "impasse"
            clash = [e for e in log.events if e.kind == "cognitive_dissonance"]
            assert clash[-1].protos == ["BRICK", "ROBIN"] and clash[-1].score >= 0.6
            assert clash[-1].views[1].startswith("ROBIN: I disagree")
            # the motivator made the impasse a goal, visible as an event and in list_goals
            goal = log.wait(lambda e: e.kind == "goal_queued").goal
            goals = client.request(c.ListGoals())
            assert isinstance(goals, GoalListReply)
            assert [g.goal_id for g in goals.goals] == [goal.goal_id]
            assert goal.text.endswith(GOAL) and goal.status == "proposed"

            # 3. step: one node
            mark = log.mark()
            assert isinstance(client.request(c.DebugStep(dialogue_id=did)), DebugAck)
            step = log.wait(lambda e: e.kind == "dialogue_step", after=mark).step
            assert step.node == "impasse"
            log.wait(lambda e: e.kind == "dialogue_paused" and e.reason == "step", after=mark)
            steps = history(client, did).steps
            brick = next(s for s in steps if s.node == "brick").record
            assert GOAL in brick["prompt"] and brick["output"] and brick["timings"]
            assert brick["model"] == "ollama:brick-double"

            # 4. edit the graph state (a fork)
            edited = client.request(
                c.DebugUpdateState(dialogue_id=did, values={"robin_view": "the user's view"})
            )
            assert isinstance(edited, DebugStateUpdated)
            assert edited.values["robin_view"] == "the user's view"
            # 5. edit a method: BRICK concedes from now on
            client.call(
                "define_method", {"proto": "BRICK", "name": "dialogue_prompt", "source": CONCEDING}
            )
            # 6. resume to completion
            mark = log.mark()
            client.request(c.DebugContinue(dialogue_id=did))
            done = log.wait(lambda e: e.kind == "dialogue_finished", after=mark)
            assert done.status == "converged"
            steps = history(client, did).steps
            assert [s.node for s in steps if s.node == "edit"] == ["edit"]
            assert CONCEDE_MARKER in [s for s in steps if s.node == "brick"][-1].record["prompt"]

            # time travel to step 1 and resume: a new branch from before BRICK's first turn
            first = next(s for s in steps if s.index == 1)
            assert first.node == "brick"
            mark = log.mark()
            client.request(c.DebugRewind(dialogue_id=did, checkpoint_id=first.before, resume=True))
            again = log.wait(lambda e: e.kind == "dialogue_finished", after=mark)
            assert again.status == "converged"
            branch = history(client, did).steps
            assert [s.node for s in branch if s.index >= 1] == ["brick", "robin", "alfred"]
            assert CONCEDE_MARKER in branch[-3].record["prompt"]  # the edited method, again

            # approving the goal starts its dialogue
            approved = client.request(c.GoalAction(goal_id=goal.goal_id, action="approve"))
            assert isinstance(approved, GoalReply) and approved.goal.dialogue_id
            log.wait(lambda e: e.kind == "goal_updated" and e.goal.status == "approved")


def test_kill_9_mid_dialogue_then_resume_from_the_checkpoint(spawn: Spawn, tmp_path: Path) -> None:
    scenario = Scenario(research=False, delay_s=0.4)
    with ScriptedOllama(scenario) as fake:
        write_config(tmp_path / "home", fake, max_rounds=2, impasse_rounds=5)
        backend = spawn()
        with backend.client() as client, EventLog(backend) as log:
            did = client.request(c.StartDialogue(goal=GOAL)).dialogue.dialogue_id  # type: ignore[union-attr]
            first = log.wait(lambda e: e.kind == "dialogue_step" and e.step.node == "brick").step
        backend.kill()  # kill -9, mid-dialogue
        asked = len(scenario.calls)
        backend = spawn()
        with backend.client() as client:
            done = wait_status(client, did, "finished")
            assert done.dialogue.reason == "unresolved" and done.dialogue.round == 2
            steps = history(client, did).steps
        assert first.checkpoint_id in {s.checkpoint_id for s in steps}  # kept from before
        assert [s.node for s in steps if s.index >= 1] == ["brick", "robin", "alfred"] * 2
        # resumed where it was, not restarted: at most 2 rounds of 3 turns + 2 pairwise verdicts
        assert len(scenario.calls) - asked <= 10


def test_approve_and_reject_amendments_with_a_restart_while_pending(
    spawn: Spawn, tmp_path: Path
) -> None:
    scenario = Scenario(
        research=False,
        amendments=["ROBIN core_principles: Ground empathy in evidence.", "ROBIN role: A critic"],
    )
    with ScriptedOllama(scenario) as fake:
        write_config(tmp_path / "home", fake, max_rounds=2, impasse_rounds=5)
        backend = spawn()
        with backend.client() as client, EventLog(backend) as log:
            did = client.request(c.StartDialogue(goal=GOAL)).dialogue.dialogue_id  # type: ignore[union-attr]
            proposed = log.wait(lambda e: e.kind == "amendment_proposed").approval
            assert "+Ground empathy in evidence." in proposed.diff
        backend.kill()  # a restart while the amendment is pending
        backend = spawn()
        with backend.client() as client, EventLog(backend) as log:
            pending = client.request(c.ListApprovals())
            assert isinstance(pending, ApprovalListReply)
            assert [a.interrupt_id for a in pending.approvals] == [proposed.interrupt_id]
            assert wait_status(client, did, "awaiting_approval").approvals
            decided = client.request(
                c.DecideAmendment(interrupt_id=proposed.interrupt_id, approve=True)
            )
            assert isinstance(decided, AmendmentDecision) and decided.approval.status == "approved"
            codex = client.call("describe_proto", {"proto": "ROBIN"}).codex  # type: ignore[union-attr]
            assert codex["core_principles"][-1] == "Ground empathy in evidence."  # type: ignore[index]
            second = log.wait(
                lambda e: (
                    e.kind == "amendment_proposed"
                    and e.approval.interrupt_id != proposed.interrupt_id
                )
            ).approval
            assert second.field == "role" and second.new == "A critic"
            rejected = client.request(
                c.DecideAmendment(interrupt_id=second.interrupt_id, approve=False)
            )
            assert rejected.approval.status == "rejected"  # type: ignore[union-attr]
            wait_status(client, did, "finished")
            role = client.call("describe_proto", {"proto": "ROBIN"}).codex["role"]  # type: ignore[union-attr]
            assert role != "A critic"
        backend.stop()
        backend = spawn()  # journaled and in the image: it survives
        with backend.client() as client:
            codex = client.call("describe_proto", {"proto": "ROBIN"}).codex  # type: ignore[union-attr]
            assert codex["core_principles"][-1] == "Ground empathy in evidence."  # type: ignore[index]
