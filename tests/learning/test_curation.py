"""Curation with the ScriptedJudge TEST DOUBLE (deterministic), golden data in the image and
on disk, the motivator hooks, and the pure pieces (parsing, the sign test, the split)."""

from __future__ import annotations

import json
import math
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
from backend.learning.judge import (
    RubricAnswer,
    failed_score,
    make_score,
    rubric,
    score_prompt,
)
from backend.learning.validation import sign_test
from backend.llm import structured
from backend.llm.base import Completion
from backend.llm.pairwise import TIE_MARGIN, decide
from backend.runtime import Runtime
from shared_api.errors import (
    InvalidValueError,
    ModelOutputError,
    NotFoundError,
    UnavailableError,
)
from shared_api.events import CuriosityDeficit, FinetuneProposed, InteractionsScored
from shared_api.learning import CRITERIA, GoldenExample
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


def test_a_failed_judgement_is_an_error_never_counted_as_judged(tmp_path: Path) -> None:
    def score_of(prompt: str, _reply: str) -> float:
        if "unjudgeable" in prompt:
            raise ModelOutputError("The model's answer is not a valid RubricAnswer: cut off.")
        return 0.9

    s = make_learning(tmp_path / "home", ScriptedJudge(score_of=score_of))
    try:
        record(s, "ROBIN", "a good question")
        bad = record(s, "ROBIN", "an unjudgeable question")
        reply = s.service.curate("ROBIN")
        failed = next(x for x in reply.scored if x.interaction_id == bad)
        assert failed.overall is None and failed.scores == {} and failed.error is not None
        assert failed.error.code == "model_output_invalid" and "cut off" in failed.error.message
        proto = s.runtime.manager.get("ROBIN")
        summary = s.service.summary(proto)
        assert (summary.scored, summary.failed, summary.means["overall"]) == (1, 1, 0.9)
        assert proto.get_self_description()["learning"]["judged"] == 1
        assert not any(g.interaction_id == bad for g in image_ops.golden_of(proto))
        # the next pass tries it again (and only it)
        assert [x.interaction_id for x in s.service.curate("ROBIN").scored] == [bad]
    finally:
        s.close()


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


def test_rubric_answers_are_schema_bound_and_failures_are_typed() -> None:
    schema = structured.schema_of(RubricAnswer)
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {*CRITERIA, "reason"}
    assert schema["properties"]["task_efficacy"]["enum"] == list(range(1, 11))
    text = '{"logical_rigour": 8, "creative_synthesis": 6, "dissonance_resolution": 5, '
    good = Completion(text + '"task_efficacy": 9, "reason": "fine"}', "stop")
    score = make_score("BRICK", "i1", structured.parse(RubricAnswer, good), "judge")
    assert score.scores["logical_rigour"] == 0.8 and score.overall == 0.7 and score.error is None
    for answer, stop, why in [
        ("logical rigour: 8", "stop", "did not honour the JSON schema"),
        (text, "length", "raise max_tokens"),
        (text + '"task_efficacy": 11, "reason": ""}', "stop", "did not honour"),
    ]:
        with pytest.raises(ModelOutputError, match=why):
            structured.parse(RubricAnswer, Completion(answer, stop))  # type: ignore[arg-type]
    failed = failed_score("BRICK", "i2", "judge", ModelOutputError("cut off"))
    assert failed.overall is None and failed.error is not None and not failed.scores
    from backend.codex import load_personas

    brick = load_personas()["BRICK"]
    assert all(p in rubric(brick) for p in brick.core_principles)
    assert "JSON" in score_prompt(brick, "q", "a")


def test_pairwise_verdict_cancels_position_bias() -> None:
    def lp(pa: float) -> dict[str, float]:
        return {"A": math.log(pa), "B": math.log(1 - pa)}

    # a judge that always says "A" (0.9) cannot pick a winner: its bias cancels
    assert decide(lp(0.9), lp(0.9))[0] == "tie"
    # biased towards A, yet preferring answer_a in both orders: a wins
    winner, margin, p_a, orders = decide(lp(0.95), lp(0.6))
    assert winner == "a" and p_a == pytest.approx((0.95 + 0.4) / 2) and margin > TIE_MARGIN
    assert [(o.order, o.p_a) for o in orders] == [("ab", 0.95), ("ba", 0.4)]
    assert decide(lp(0.3), lp(0.8))[0] == "b"
    assert decide(lp(0.52), lp(0.5))[0] == "tie"  # margin 0.02 < TIE_MARGIN
    with pytest.raises(ModelOutputError):
        decide({}, lp(0.5))


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
