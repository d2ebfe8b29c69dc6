"""Fine-tune and Ascension jobs: one at a time, on their own thread, each a pipeline of
prepare -> train (subprocess) -> register -> validate -> adopt.

Every change to a persona goes through journaled ops, and only at the end of a step that
succeeded: a candidate is registered only once the trainer left a verified GGUF, and the
pointer moves only on a significant win. A crash or kill at any point leaves the persona on
its old model. An Ascension works on a clone; production changes in one atomic swap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from backend.learning import image_ops
from backend.learning.spec import TrainResult
from backend.ops import free_clone_name
from backend.protos import Proto
from shared_api.errors import CancelledError, EntropicError, InvalidValueError
from shared_api.events import LearningFinished, LearningProgress, Progress
from shared_api.learning import GoldenExample, JobInfo, ModelPointer, ValidationReport
from shared_api.replies import ModelSelection

if TYPE_CHECKING:
    from backend.bus import EventBus
    from backend.learning.config import LearningConfig
    from backend.learning.spec import TrainSpec
    from backend.learning.trainer import Trainer
    from backend.llm.service import PersonaLLM
    from backend.runtime import Runtime

log = logging.getLogger(__name__)

MIN_TRAIN = 4
PHASE_SHARE = {"preparing": 0.02, "loading": 0.05, "training": 0.1, "merging": 0.8,
               "converting": 0.82, "quantizing": 0.88, "checking": 0.9, "validating": 0.92,
               "adopting": 0.98, "done": 1.0}  # fmt: skip


def split(
    golden: list[GoldenExample], fraction: float, lo: int, hi: int
) -> tuple[list[GoldenExample], list[GoldenExample]]:
    """(train, holdout): a stable split by a hash of each id, so a re-run holds out the same."""
    ordered = sorted(golden, key=lambda g: hashlib.sha256(g.id.encode()).hexdigest())
    n = len(ordered)
    k = 0 if fraction <= 0 else max(lo, min(hi, round(n * fraction)))
    k = max(0, min(k, n - MIN_TRAIN))
    return ordered[k:], ordered[:k]


def write_chatml(path: Path, examples: list[GoldenExample]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for g in examples:
            f.write(
                json.dumps({"id": g.id, "messages": [m.model_dump() for m in g.messages]}) + "\n"
            )


class Job:
    """A job's live record; ``info`` is what events and replies carry."""

    def __init__(self, info: JobInfo, run: Callable[[Job], None]) -> None:
        self.info = info
        self.run = run
        self.cancel = threading.Event()

    def update(self, **fields: Any) -> JobInfo:
        self.info = self.info.model_copy(update=fields)
        return self.info


class JobRunner:
    """Runs the learning jobs one at a time on a thread of its own, announcing each."""

    def __init__(
        self,
        bus: EventBus,
        save_job: Callable[[JobInfo], None],
        cleanup: Callable[[str], None],
    ) -> None:
        self.bus = bus
        self._save_job = save_job  # a job's record, kept with its files
        self._cleanup = cleanup  # drops a job's bulky intermediates (by job id)
        self.jobs: dict[str, Job] = {}
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="learning-jobs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            job.cancel.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=60)

    def submit(self, proto: str, kind: str, run: Callable[[Job], None], **fields: Any) -> JobInfo:
        job_id = f"ft-{uuid.uuid4().hex[:10]}"
        info = JobInfo.model_validate({"job_id": job_id, "proto": proto, "kind": kind, **fields})
        job = Job(info, run)
        with self._lock:
            self.jobs[job_id] = job
        self._queue.put(job)
        self.publish(job)
        return info

    def cancel(self, job_id: str) -> bool:
        with self._lock:
            job = self.jobs.get(job_id)
        if job is None or job.info.outcome is not None:
            return False
        job.cancel.set()
        return True

    def list(self) -> list[JobInfo]:
        with self._lock:
            return [j.info for j in self.jobs.values()]

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            if job.cancel.is_set():
                self.finish(job, "cancelled", error="cancelled before it started")
                continue
            job.update(started=time.time())
            try:
                job.run(job)
            except CancelledError as exc:
                self.finish(job, "cancelled", error=exc.message)
            except EntropicError as exc:
                log.warning("learning job %s failed: %s", job.info.job_id, exc.message)
                self.finish(job, "failed", error=exc.message)
            except Exception as exc:
                log.exception("learning job %s failed", job.info.job_id)
                self.finish(job, "failed", error=f"{type(exc).__name__}: {exc}")
            finally:
                self._cleanup(job.info.job_id)

    # -- events -----------------------------------------------------------------------------
    def phase(self, job: Job, phase: str, message: str = "") -> None:
        if job.cancel.is_set() and phase in ("validating", "adopting"):
            raise CancelledError("The job was cancelled; nothing was adopted.")
        job.update(phase=phase, message=message or job.info.message)
        log.info("learning %s %s: %s %s", job.info.job_id, job.info.proto, phase, message)
        self.publish(job)

    def publish(self, job: Job) -> None:
        info = job.info
        if info.started:
            info = job.update(elapsed_s=round(time.time() - info.started, 2))
        self.bus.publish(LearningProgress(job=info))
        self.bus.publish(
            Progress(
                op=info.kind,
                op_id=info.job_id,
                fraction=self._fraction(info),
                message=f"{info.proto} {info.phase}"
                + (f" loss {info.loss:.3f}" if info.loss is not None else ""),
                done=info.outcome is not None,
            )
        )

    @staticmethod
    def _fraction(info: JobInfo) -> float:
        if info.outcome is not None:
            return 1.0
        share = PHASE_SHARE.get(info.phase, 0.0)
        if info.phase == "training" and info.total_steps:
            return round(0.1 + 0.7 * info.step / info.total_steps, 4)
        return share

    def on_trainer_event(self, job: Job, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "started":
            job.update(pid=event.get("pid"))
            self.publish(job)
        elif kind == "phase":
            self.phase(job, str(event.get("phase", "training")), str(event.get("message", "")))
        elif kind == "step":
            loss = event.get("loss")
            losses = (
                [*job.info.losses, float(loss)]
                if isinstance(loss, int | float)
                else job.info.losses
            )
            job.update(
                step=int(event.get("step", 0)),
                total_steps=int(event.get("total", 0)),
                loss=float(loss) if isinstance(loss, int | float) else None,
                losses=losses[-2000:],
                eta_s=event.get("eta_s"),
            )
            log.info(
                "learning %s %s: step %s/%s loss %s eta %ss",
                job.info.job_id, job.info.proto, job.info.step, job.info.total_steps,
                job.info.loss, event.get("eta_s"),
            )  # fmt: skip
            self.publish(job)

    def finish(self, job: Job, outcome: str, *, error: str = "", message: str = "") -> None:
        info = job.update(
            outcome=outcome,
            phase="done",
            error=error,
            message=message or error or job.info.message,
            ended=time.time(),
            pid=None,
        )
        log.info("learning %s %s ended: %s %s", info.job_id, info.proto, outcome, error)
        self.publish(job)
        self.bus.publish(LearningFinished(job=job.info))
        self._save_job(job.info)


# -- the pipelines ------------------------------------------------------------------------------
class Learning(Protocol):
    """What the pipelines below use of the learning service: the live image and the models,
    the job runner and the trainer, and the service's steps they chain."""

    runtime: Runtime
    llm: PersonaLLM
    config: LearningConfig
    jobs: JobRunner
    jobs_dir: Path
    trainer: Trainer

    def train_spec(self, job: Job, base: Path, job_dir: Path, steps: int | None) -> TrainSpec: ...

    def register_candidate(
        self, proto: Proto, job: Job, result: TrainResult, base: Path
    ) -> ModelPointer: ...

    def validate(
        self,
        proto: Proto,
        candidate: ModelSelection,
        current: ModelSelection,
        holdout: list[GoldenExample],
    ) -> ValidationReport: ...

    def base_path(self, proto: Proto) -> Path: ...

    def resolve_base(self, base: str) -> Path: ...

    def adopt(
        self, proto: str, candidate: str, *, reason: str = ..., evidence: ValidationReport | None
    ) -> object: ...

    def ascend_production(
        self, proto: str, pointer: ModelPointer, base: Path, report: ValidationReport
    ) -> None: ...

    def start_finetune(
        self, proto: str, *, steps: int | None = ..., adopt: bool = ...
    ) -> JobInfo: ...


def train(
    service: Learning, job: Job, proto: Proto, base_path: Path, steps: int | None
) -> tuple[ModelPointer, list[GoldenExample]]:
    """Prepare, train in the subprocess, and register the candidate on ``proto``; returns it
    with the held-out examples."""
    runner = service.jobs
    config = service.config
    runner.phase(job, "preparing", "golden examples -> ChatML")
    golden = [g for g in image_ops.golden_of(proto) if not g.excluded]
    train_set, holdout = split(
        golden, config.holdout_fraction, config.min_holdout, config.max_holdout
    )
    if len(train_set) < MIN_TRAIN:
        raise InvalidValueError(
            f"{proto.name} has {len(golden)} golden examples in use; a fine-tune needs at least "
            f"{MIN_TRAIN + config.min_holdout}. Run `curate`, or add some with put_golden."
        )
    job_dir = service.jobs_dir / job.info.job_id
    job_dir.mkdir(parents=True, exist_ok=True)
    write_chatml(job_dir / "train.jsonl", train_set)
    write_chatml(job_dir / "holdout.jsonl", holdout)
    job.update(examples=len(train_set), holdout=len(holdout))
    spec = service.train_spec(job, base_path, job_dir, steps)
    exclusive = (
        service.llm.manager.exclusive(proto.name, job.cancel) if config.exclusive else nullcontext()
    )
    with exclusive:
        result = service.trainer(spec, lambda e: runner.on_trainer_event(job, e), job.cancel)
    pointer = service.register_candidate(proto, job, result, base_path)
    return pointer, holdout


def run_finetune(service: Learning, job: Job, adopt: bool, steps: int | None) -> None:
    proto = service.runtime.manager.get(job.info.proto)
    pointer, holdout = train(service, job, proto, service.base_path(proto), steps)
    job.update(candidate=pointer)
    report = evaluate(service, job, proto, pointer, holdout)
    if report is None:
        service.jobs.finish(
            job, "trained", message=f"{pointer.id} trained; no held-out set to validate it"
        )
        return
    if report.significant and adopt:
        service.jobs.phase(
            job, "adopting", f"{pointer.id}: {report.wins} wins, {report.losses} losses"
        )
        service.adopt(proto.name, pointer.id, reason="won its blind validation", evidence=report)
        service.jobs.finish(job, "adopted", message=f"{proto.name} now talks through {pointer.id}")
    else:
        why = "not adopted (adopt: false)" if report.significant else "no significant win"
        service.jobs.finish(
            job, "rejected", message=f"{pointer.id}: {why} (p={report.p_value:.3f})"
        )


def evaluate(
    service: Learning,
    job: Job,
    proto: Proto,
    pointer: ModelPointer,
    holdout: list[GoldenExample],
    against: ModelSelection | None = None,
) -> ValidationReport | None:
    """Validate ``pointer`` against ``against`` (default: what ``proto`` talks through now);
    the report is kept with the candidate as its evidence."""
    if not holdout:
        return None
    service.jobs.phase(job, "validating", f"{len(holdout)} held-out prompts, judged blind A/B")
    current = against or service.llm.select(proto)
    candidate = ModelSelection(backend="gguf", model=pointer.id, reason="candidate")
    report = service.validate(proto, candidate, current, holdout)
    job.update(validation=report)
    evidence = pointer.model_copy(
        update={"detail": {**pointer.detail, "validation": report.model_dump(mode="json")}}
    )
    service.runtime.commit(
        {
            "op": "learning_candidate",
            "proto": proto.name,
            "pointer": evidence.model_dump(mode="json"),
        }
    )
    return report


def run_ascension(
    service: Learning, job: Job, base: str, steps: int | None, follow_up: bool
) -> None:
    """Trial ``base`` on a clone; production changes only in the final atomic swap. The
    clone is removed before the job reports its end."""
    runtime = service.runtime
    name = job.info.proto
    base_path = service.resolve_base(base)
    with runtime.manager.lock:
        clone_name = f"{name}-ascension"
        if clone_name in runtime.manager.names():
            clone_name = free_clone_name(runtime.manager, clone_name)
        runtime.commit({"op": "clone", "proto": name, "new_name": clone_name})
    try:
        outcome, message = _trial(service, job, clone_name, base, base_path, steps, follow_up)
    finally:
        if clone_name in runtime.manager.names():
            runtime.commit({"op": "remove", "proto": clone_name})
    service.jobs.finish(job, outcome, message=message)


def _trial(
    service: Learning,
    job: Job,
    clone_name: str,
    base: str,
    base_path: Path,
    steps: int | None,
    follow_up: bool,
) -> tuple[str, str]:
    runtime = service.runtime
    name = job.info.proto
    clone = runtime.manager.get(clone_name)
    pointer, holdout = train(service, job, clone, base_path, steps)
    job.update(candidate=pointer)
    production = runtime.manager.get(name)
    report = evaluate(service, job, clone, pointer, holdout, against=service.llm.select(production))
    if report is None or not report.significant:
        p = f"p={report.p_value:.3f}" if report else "no held-out set"
        return "rejected", f"{base} did not win on a clone of {name} ({p}); production unchanged"
    service.jobs.phase(job, "adopting", f"{name} swaps to {pointer.id}")
    service.ascend_production(name, pointer, base_path, report)
    message = f"{name} ascended to {base}"
    if follow_up:
        follow = service.start_finetune(name, adopt=True, steps=None)
        message += f"; full fine-tune {follow.job_id} queued"
    return "adopted", message


def atomic_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".part")
    tmp.unlink(missing_ok=True)
    if src.stat().st_dev == dst.parent.stat().st_dev:
        os.link(src, tmp)  # same file system: no copy of a large file
    else:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def result_pointer(
    proto: str, job: JobInfo, result: TrainResult, path: Path, base: Path, base_name: str
) -> ModelPointer:
    return ModelPointer(
        id=f"{proto}-{job.job_id}",
        proto=proto,
        path=str(path),
        sha256=result.sha256,
        size_bytes=result.size_bytes,
        base=base_name,
        base_path=str(base),
        quant=result.quant,
        engine=result.engine,
        examples=result.examples,
        created=time.time(),
        detail={
            "job_id": job.job_id,
            "steps": result.steps,
            "final_loss": result.final_loss,
            "train_s": result.train_s,
            "total_s": result.total_s,
            "peak_rss_mb": result.peak_rss_mb,
            "base_quant": result.base_quant,
            "eos_token": result.eos_token,
        },
    )
