"""Ascension: a new base is trialled on a clone; production is untouched until one atomic
swap, and only on a significant win; the codex never changes.

The training step is the PreparedTrainer TEST DOUBLE: it hands back a GGUF that the
session's real fine-tune produced (or the untrained base), so the orchestration is tested
without a second real fine-tune. Everything else (the clone, the journaled ops, the real
embedded model answering held-out prompts, the swap) is real; the ScriptedJudge TEST DOUBLE
decides."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backend.learning import image_ops
from backend.learning.export import sha256_file
from backend.learning.spec import TrainResult, TrainSpec
from backend.llm.embedded import locate_smollm2
from tests.learning.conftest import (
    LearningSystem,
    Trained,
    add_demo_golden,
    make_learning,
    signature_judge,
)

# The first test to run also runs the session's real fine-tune (fixture `trained`).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


class PreparedTrainer:
    """TEST DOUBLE for the training subprocess: returns a copy of a GGUF trained earlier."""

    def __init__(self, gguf: Path, on_train: Callable[[TrainSpec], None] = lambda _s: None) -> None:
        self.gguf = gguf
        self.on_train = on_train
        self.specs: list[TrainSpec] = []

    def __call__(
        self, spec: TrainSpec, on_event: Callable[[dict[str, Any]], None], cancel: threading.Event
    ) -> TrainResult:
        self.specs.append(spec)
        self.on_train(spec)
        out = Path(spec.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        dst = out / "model.Q4_K_M.gguf"
        shutil.copyfile(self.gguf, dst)
        on_event({"event": "step", "step": 1, "total": 1, "loss": 1.0, "eta_s": 0.0})
        return TrainResult(
            job_id=spec.job_id,
            gguf=str(dst),
            sha256=sha256_file(dst),
            size_bytes=dst.stat().st_size,
            quant="Q4_K_M",
            base_quant="Q4_1",
            examples=len(Path(spec.examples).read_text().splitlines()),
            steps=1,
            losses=[1.0],
        )


def _production(system: LearningSystem) -> tuple[int, Any, Any]:
    proto = system.runtime.manager.get("BRICK")
    return proto.version, image_ops.model_of(proto), proto.codex


def _system(
    tmp_path: Path, gguf: Path, checks: list[bool], before: list[Any]
) -> tuple[LearningSystem, PreparedTrainer]:
    judge = signature_judge()
    holder: dict[str, LearningSystem] = {}

    def untouched(_spec: Any = None) -> None:
        system = holder["system"]
        names = system.runtime.manager.names()
        checks.append(_production(system) == before[0] and "BRICK-ascension" in names)

    trainer = PreparedTrainer(gguf, on_train=untouched)
    judge.on_compare = untouched
    system = make_learning(tmp_path / "home", judge, trainer=trainer)
    holder["system"] = system
    add_demo_golden(system)
    before.append(_production(system))
    return system, trainer


def test_a_winning_base_swaps_production_atomically(trained: Trained, tmp_path: Path) -> None:
    assert trained.job.candidate is not None
    base = tmp_path / "new-base.gguf"
    shutil.copyfile(locate_smollm2(), base)
    checks: list[bool] = []
    before: list[Any] = []
    system, trainer = _system(tmp_path, Path(trained.job.candidate.path), checks, before)
    try:
        version, model, codex = before[0]
        job = system.service.ascend("BRICK", str(base), follow_up=True)
        done = system.finished(job.job_id, timeout=600)
        assert done.outcome == "adopted", done
        # production was untouched while the clone trained and was judged
        assert checks and all(checks), checks
        assert trainer.specs[0].base_path == str(base.resolve())
        proto = system.runtime.manager.get("BRICK")
        assert proto.codex == codex  # the identity never changes in this loop
        assert proto.version > version and model is None
        adopted = image_ops.model_of(proto)
        assert (
            adopted is not None and done.candidate is not None and adopted.id == done.candidate.id
        )
        assert proto.learning["base"] == str(base.resolve())
        assert proto.learning["adoptions"][-1]["action"] == "ascend"
        assert "BRICK-ascension" not in system.runtime.manager.names()  # the clone is gone
        assert system.llm.select(proto).model == adopted.id
        # a full fine-tune on the new base follows
        follow = [j for j in system.service.jobs.list() if j.job_id != job.job_id]
        assert len(follow) == 1 and follow[0].kind == "finetune"
        system.finished(follow[0].job_id, timeout=600)
        assert trainer.specs[1].base_path == str(base.resolve())
    finally:
        system.close()


def test_a_losing_base_leaves_production_as_it_was(tmp_path: Path) -> None:
    checks: list[bool] = []
    before: list[Any] = []
    system, _trainer = _system(tmp_path, locate_smollm2(), checks, before)
    try:
        job = system.service.ascend("BRICK", "embedded", follow_up=True)
        done = system.finished(job.job_id, timeout=600)
        assert done.outcome == "rejected" and "production unchanged" in done.message
        assert checks and all(checks)
        assert _production(system) == before[0]
        assert "BRICK-ascension" not in system.runtime.manager.names()
        assert len(system.service.jobs.list()) == 1  # no follow-up
    finally:
        system.close()
