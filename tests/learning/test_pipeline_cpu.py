"""The CPU fine-tune end to end, for real: SmolLM2-135M's GGUF dequantized into transformers,
LoRA on the demo's golden examples, merged, converted to GGUF f16 with llama.cpp's converter,
quantized to a type other than the base's, validated blind against the current model on the
held-out examples (the ScriptedJudge TEST DOUBLE decides), adopted, and served by the
embedded llama.cpp backend. The taught closing phrase shows on held-out prompts with the
adopted model and not with the old one; rollback brings the old one back."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.learning import image_ops
from backend.learning.demo import HELD_OUT, shows_signature
from backend.learning.export import read_facts
from backend.llm.embedded import SMOLLM2_FILE
from shared_api.errors import InvalidValueError
from shared_api.events import LearningProgress, ModelPointerChanged
from tests.learning.conftest import Trained

# The first test to run also runs the session's real fine-tune (fixture `trained`).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
PROMPTS = HELD_OUT[:5]


def _answers(trained: Trained) -> list[str]:
    proto = trained.system.runtime.manager.get("BRICK")
    return [trained.system.llm.ask(proto, p, max_tokens=48, recall=False).text for p in PROMPTS]


def test_the_fine_tune_is_adopted_and_shows_the_taught_behaviour(trained: Trained) -> None:
    job, system = trained.job, trained.system
    assert job.outcome == "adopted", job
    assert job.candidate is not None and job.validation is not None
    report = job.validation
    assert report.significant and report.wins > report.losses and report.p_value <= 0.05
    assert report.judge == "scripted-judge (test double)"
    # the base is Q4_1: the export must use another type, or the fine-tune is erased
    assert job.candidate.quant != "Q4_1" and job.candidate.detail["base_quant"] == "Q4_1"
    facts = read_facts(Path(job.candidate.path))
    assert "<|im_start|>" in facts.chat_template and facts.eos_token == "<|im_end|>"
    # the persona now talks through the adopted model, served by the embedded backend
    proto = system.runtime.manager.get("BRICK")
    selection = system.llm.select(proto)
    assert (selection.backend, selection.model) == ("gguf", job.candidate.id)
    answers = _answers(trained)
    assert sum(shows_signature(a) for a in answers) >= 4, answers
    # progress streamed: loss per step, an ETA, phases through export
    progress = [
        e.job
        for e in system.events
        if isinstance(e, LearningProgress) and e.job.job_id == job.job_id
    ]
    phases = {p.phase for p in progress}
    assert {"loading", "training", "converting", "quantizing", "validating", "adopting"} <= phases
    assert len(job.losses) == job.total_steps == 24 and job.losses[-1] < job.losses[0]
    assert any(p.eta_s is not None for p in progress)


def test_rollback_returns_to_the_old_model_and_adoption_is_reversible(trained: Trained) -> None:
    system, job = trained.system, trained.job
    assert job.candidate is not None
    reply = system.service.rollback("BRICK", "test")
    assert reply.record.action == "rollback" and reply.record.previous == job.candidate.id
    proto = system.runtime.manager.get("BRICK")
    assert image_ops.model_of(proto) is None
    selection = system.llm.select(proto)
    assert selection.backend == "embedded"
    answers = _answers(trained)
    assert not any(shows_signature(a) for a in answers), answers
    with pytest.raises(InvalidValueError):
        system.service.rollback("BRICK")  # nothing earlier to go back to
    # its validation is its evidence: adopting it again needs no force
    again = system.service.adopt("BRICK", job.candidate.id, reason="back again")
    assert again.record.evidence is not None and again.record.evidence.significant
    assert system.llm.select(proto).model == job.candidate.id
    assert any(isinstance(e, ModelPointerChanged) for e in system.events)


def test_the_pointer_and_evidence_survive_a_restart(trained: Trained, tmp_path: Path) -> None:
    """The journal replays the adoption: a fresh runtime on a copy of the home agrees."""
    import shutil

    from backend.bus import EventBus
    from backend.config import BackendConfig
    from backend.home import Home
    from backend.runtime import Runtime

    system = trained.system
    live = image_ops.model_of(system.runtime.manager.get("BRICK"))
    copy = tmp_path / "home"
    shutil.copytree(system.home, copy, ignore=shutil.ignore_patterns("*.lock", "backend.lock"))
    runtime = Runtime(Home(copy), BackendConfig(autosave_interval_s=0), EventBus())
    runtime.start()
    try:
        proto = runtime.manager.get("BRICK")
        assert image_ops.model_of(proto) == live
        assert [a["action"] for a in proto.learning["adoptions"]] == ["adopt", "rollback", "adopt"]
        assert len(image_ops.golden_of(proto)) == 40
    finally:
        runtime.close(save=False)
    assert SMOLLM2_FILE.endswith("Q4_1.gguf")
