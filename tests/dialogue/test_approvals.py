"""Codex amendments wait for the user, across restarts; an approval is journaled and saved in
the image, a rejection changes nothing. In-process, with the scripted model TEST DOUBLE."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.codex import amended
from backend.protos import Proto
from shared_api.errors import CodexInvalidError, InvalidValueError
from tests.dialogue.conftest import System, close_system, make_system
from tests.dialogue.doubles import Scenario

PRINCIPLE = "Ground empathy in evidence."


def test_approve_after_a_restart_while_pending(tmp_path: Path) -> None:
    previous = Proto.llm
    home = tmp_path / "home"
    scenario = Scenario(research=False, amendments=[f"ROBIN core_principles: {PRINCIPLE}"])
    system = make_system(home, scenario, max_rounds=3, impasse_rounds=5)
    try:
        did = system.service.start_dialogue("Speed or care?").dialogue_id
        proposed = system.wait(lambda e: e.kind == "amendment_proposed").approval
        system.wait(lambda e: e.kind == "dialogue_paused" and e.reason == "approval")
        assert proposed.proto == "ROBIN" and proposed.field == "core_principles"
        assert f"+{PRINCIPLE}" in proposed.diff and proposed.new.endswith(PRINCIPLE)
        assert system.service.store.dialogue(did).status == "awaiting_approval"
    finally:
        close_system(system)
    # a restart while the amendment is pending: it is still there, and the dialogue waits
    system = make_system(home, scenario, max_rounds=3, impasse_rounds=5)
    try:
        (pending,) = system.service.approvals()
        assert pending.interrupt_id == proposed.interrupt_id and pending.status == "pending"
        assert system.service.store.dialogue(did).status == "awaiting_approval"
        generation = system.runtime.image_info.generation
        decided = system.service.decide(pending.interrupt_id, True, "good idea")
        assert decided.status == "approved" and decided.version is not None
        robin = system.runtime.manager.get("ROBIN")
        assert robin.codex.core_principles[-1] == PRINCIPLE
        assert system.runtime.image_info.generation > generation  # saved in the image
        system.wait(lambda e: e.kind == "amendment_decided")
        finished = system.wait(lambda e: e.kind == "dialogue_finished")
        assert finished.status == "unresolved"
        _, steps, _ = system.service.history(did)
        amend = next(s for s in steps if s.node == "amend")
        assert amend.record["decision"]["approve"] is True
        assert system.service.approvals() == []
        with pytest.raises(InvalidValueError, match="already approved"):
            system.service.decide(pending.interrupt_id, False)
    finally:
        close_system(system)
    # the approved amendment survives the next restart (journal + image)
    system = make_system(home, Scenario(), max_rounds=3)
    try:
        assert system.runtime.manager.get("ROBIN").codex.core_principles[-1] == PRINCIPLE
    finally:
        close_system(system)
        Proto.llm = previous


def test_reject_leaves_the_codex_unchanged(system: System) -> None:
    system.scenario.research = False
    system.scenario.amendments = ["ROBIN description: A blunt critic."]
    before = system.runtime.manager.get("ROBIN").codex
    did = system.service.start_dialogue("Speed or care?", max_rounds=1).dialogue_id
    proposed = system.wait(lambda e: e.kind == "amendment_proposed").approval
    assert proposed.field == "description" and proposed.new == "A blunt critic."
    decided = system.service.decide(proposed.interrupt_id, False, "no")
    assert decided.status == "rejected" and decided.version is None
    system.wait(lambda e: e.kind == "dialogue_finished")
    assert system.runtime.manager.get("ROBIN").codex == before
    _, steps, _ = system.service.history(did)
    assert next(s for s in steps if s.node == "amend").record["decision"]["approve"] is False


def test_amend_is_validated(system: System) -> None:
    codex = system.runtime.manager.get("BRICK").codex
    with pytest.raises(CodexInvalidError):
        amended(codex, "name", "EVIL")
    with pytest.raises(CodexInvalidError):
        amended(codex, "role", "")
    assert amended(codex, "core_principles", "a\n\nb").core_principles == ("a", "b")
