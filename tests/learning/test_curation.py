"""Curation with the ScriptedJudge TEST DOUBLE (deterministic), golden data in the image and
on disk, the motivator hooks, and the pure pieces (parsing, the sign test, the split)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.bus import EventBus
from backend.config import BackendConfig
from backend.home import Home
from backend.learning import image_ops
from backend.learning import service as service_module
from backend.learning.export import choose_quant
from backend.learning.jobs import split
from backend.learning.judge import parse_choice, parse_scores, rubric, score_prompt
from backend.learning.validation import sign_test
from backend.runtime import Runtime
from shared_api.errors import InvalidValueError, NotFoundError, UnavailableError
from shared_api.events import CuriosityDeficit, FinetuneProposed, InteractionsScored
from shared_api.learning import GoldenExample
from tests.doubles.scripted_judge import ScriptedJudge
from tests.learning.conftest import LearningSystem, make_learning


@pytest.fixture
def system(tmp_path: Path) -> Iterator[LearningSystem]:
    judge = ScriptedJudge(score_of=lambda prompt, _reply: 0.9 if "good" in prompt else 0.1)
    s = make_learning(tmp_path / "home", judge, propose_finetune_at=3, deficit_count=3)
    yield s
    s.close()


def record(system: LearningSystem, proto: str, prompt: str, reply: str = "an answer") -> str:
    interaction_id = f"i{time.time_ns()}"
    system.runtime.commit(
        {
            "op": "record_interaction",
            "proto": proto,
            "interaction": {"id": interaction_id, "ts": time.time(), "prompt": prompt,
                            "reply": reply, "stop_reason": "stop"},
        }
    )  # fmt: skip
    return interaction_id


def test_the_curator_scores_promotes_and_publishes_hooks(system: LearningSystem) -> None:
    for n in range(3):
        record(system, "ROBIN", f"a good question {n}")
    low = [record(system, "ROBIN", f"a poor question {n}") for n in range(3)]
    reply = system.service.curate("ROBIN")
    assert len(reply.scored) == 6 and len(reply.promoted) == 3
    assert reply.judge == "scripted-judge (test double)"
    proto = system.runtime.manager.get("ROBIN")
    golden = image_ops.golden_of(proto)
    assert {g.prompt for g in golden} == {f"a good question {n}" for n in range(3)}
    assert all(g.source == "curator" and g.messages[0].role == "system" for g in golden)
    assert golden[0].messages[0].content == proto.codex.system_prompt
    # three low scores among the latest judged: a curiosity deficit for the motivator
    deficit = system.wait(lambda e: isinstance(e, CuriosityDeficit))
    assert isinstance(deficit, CuriosityDeficit) and deficit.proto == "ROBIN"
    assert deficit.detail["source"] == "judge"
    assert set(deficit.detail["scores"]) == set(low)
    # enough golden examples: a fine-tune is proposed, with the body that would run it
    proposal = system.wait(lambda e: isinstance(e, FinetuneProposed))
    assert isinstance(proposal, FinetuneProposed)
    assert proposal.body == {"proto": "ROBIN"} and proposal.golden == 3
    assert any(isinstance(e, InteractionsScored) for e in system.events)
    # a second pass judges nothing again and repeats no hook
    again = system.service.curate("ROBIN")
    assert again.scored == [] and again.deficits == [] and again.proposals == []
    summary = system.service.summary(proto)
    assert summary.scored == 6 and summary.golden == 3 and summary.means["overall"] == 0.5


def test_golden_examples_can_be_added_edited_excluded_and_are_mirrored(
    system: LearningSystem,
) -> None:
    service = system.service
    added = service.put_golden("BRICK", None, "What is 2+2?", "Four.", None, "by hand")
    assert added.source == "user" and added.messages[0].role == "system"
    edited = service.put_golden("BRICK", added.id, None, "Four, by arithmetic.", None, "")
    assert edited.id == added.id and edited.reply == "Four, by arithmetic."
    assert edited.created == added.created and edited.note == "by hand"
    excluded = service.exclude_golden("BRICK", added.id, True)
    assert excluded.excluded
    assert service.list_golden("BRICK", include_excluded=False).examples == []
    listing = service.list_golden("BRICK", include_excluded=True)
    assert [g.id for g in listing.examples] == [added.id]
    lines = Path(listing.path).read_text().splitlines()
    on_disk = GoldenExample.model_validate(json.loads(lines[0]))
    assert on_disk.excluded and [m.role for m in on_disk.messages] == [
        "system",
        "user",
        "assistant",
    ]
    with pytest.raises(NotFoundError):
        service.exclude_golden("BRICK", "no-such-example", True)
    with pytest.raises(InvalidValueError):
        service.put_golden("BRICK", None, "only a prompt", None, None, "")


def test_golden_data_and_scores_replay_from_the_journal(
    system: LearningSystem, tmp_path: Path
) -> None:
    record(system, "BABS", "a good one")
    system.service.curate("BABS")
    system.service.put_golden("BABS", "mine", "Q?", "A.", None, "")
    before = dict(system.runtime.manager.get("BABS").learning)
    system.runtime.journal.close()  # as after a kill -9: only the journal has it
    runtime = Runtime(Home(system.home), BackendConfig(autosave_interval_s=0), EventBus())
    runtime.start()
    try:
        assert runtime.manager.get("BABS").learning == before
    finally:
        runtime.close(save=False)
    system.runtime.journal.open(system.runtime.journal.seq)


def test_fine_tuning_without_the_extra_says_how_to_enable_it(
    system: LearningSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "learning_available", lambda: False)
    with pytest.raises(UnavailableError, match="make learning"):
        system.service.start_finetune("BRICK")
    status = system.service.status(None)
    assert not status.available and "uv sync --extra learning" in status.how_to_enable


def test_too_little_golden_data_fails_the_job_and_changes_nothing(system: LearningSystem) -> None:
    system.service.put_golden("BRICK", "one", "Q?", "A.", None, "")
    job = system.service.start_finetune("BRICK")
    done = system.finished(job.job_id, timeout=30)
    assert done.outcome == "failed" and "at least" in done.error
    assert image_ops.model_of(system.runtime.manager.get("BRICK")) is None


def test_judge_parsing_and_rubric() -> None:
    text = "Logical rigour: 8\ncreative synthesis = 6/10\ndissonance_resolution: 0.5\nreason: fine"
    assert parse_scores(text) == {
        "logical_rigour": 0.8,
        "creative_synthesis": 0.6,
        "dissonance_resolution": 0.5,
    }
    assert parse_scores("I cannot judge this.") == {}
    assert parse_choice("A") == "first" and parse_choice("Answer B is better") == "second"
    assert parse_choice("Both are fine.") == "tie"
    from backend.codex import load_personas

    brick = load_personas()["BRICK"]
    assert all(p in rubric(brick) for p in brick.core_principles)
    assert "task_efficacy: N" in score_prompt(brick, "q", "a")


def test_sign_test_split_and_quantization_choice() -> None:
    assert sign_test(5, 0) == pytest.approx(1 / 32)
    assert sign_test(4, 0) == pytest.approx(1 / 16)
    assert sign_test(0, 0) == 1.0 and sign_test(3, 3) > 0.5
    golden = [
        GoldenExample.model_validate(
            {
                "id": f"g{i}",
                "proto": "BRICK",
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                ],
            }
        )
        for i in range(20)
    ]
    train, holdout = split(golden, 0.2, 3, 12)
    assert len(holdout) == 4 and len(train) == 16
    assert split(list(reversed(golden)), 0.2, 3, 12)[1] == holdout  # stable
    assert choose_quant("Q4_K_M", "Q4_1") == "Q4_K_M"
    assert choose_quant("Q4_K_M", "Q4_K_M") != "Q4_K_M"  # never the base's own type


def test_the_modelfile_pins_template_and_stop_from_the_gguf(tmp_path: Path) -> None:
    """The GPU path's Ollama registration starts from this (the base's facts stand in for a
    fine-tune's: the export keeps them, which the CPU end-to-end test checks)."""
    from backend.learning.export import modelfile, ollama_template, read_facts
    from backend.llm.embedded import locate_smollm2

    facts = read_facts(locate_smollm2())
    assert facts.file_type == "Q4_1" and facts.eos_token == "<|im_end|>"
    text = modelfile(tmp_path / "m.gguf", facts, system="You are BRICK.")
    lines = text.splitlines()
    assert lines[0] == f"FROM {(tmp_path / 'm.gguf').resolve()}"
    assert "<|im_start|>{{ .Role }}" in text and 'PARAMETER stop "<|im_end|>"' in lines
    assert 'SYSTEM """You are BRICK."""' in text
    with pytest.raises(InvalidValueError):
        ollama_template("{{ bos_token }}[INST] {{ message }} [/INST]")
