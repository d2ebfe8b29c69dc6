"""LearningService: the curator, golden data, fine-tunes, validation, adoption, Ascension.

It plugs into the backend at startup: the ``gguf`` model backend joins the ModelManager (so a
persona's own model is scheduled like any other, one resident at a time), and the model
pointer hook joins PersonaLLM's selection. Golden examples live in the image (journaled ops)
and are mirrored on disk as ChatML JSONL, one file per persona, under HOME/learning/golden.
Fine-tuning needs the optional ``learning`` extra; without it everything else still works
and the commands say how to enable it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from backend.learning import image_ops, jobs
from backend.learning.config import LearningConfig
from backend.learning.converter import locate as locate_converter
from backend.learning.curator import Curator
from backend.learning.judge import AlfredJudge, Judge
from backend.learning.serving import BACKEND_NAME, PersonaGgufBackend
from backend.learning.spec import TrainResult, TrainSpec
from backend.learning.trainer import SubprocessTrainer, Trainer
from backend.learning.validation import validate
from backend.llm.embedded import EmbeddedBackend
from backend.llm.service import PersonaLLM
from backend.protos import Proto
from backend.runtime import Runtime
from shared_api.commands import JudgePair
from shared_api.errors import InvalidValueError, NotFoundError, UnavailableError
from shared_api.events import ModelPointerChanged
from shared_api.learning import (
    AdoptionRecord,
    ChatTurn,
    GoldenExample,
    JobInfo,
    LearningSummary,
    ModelPointer,
    ValidationReport,
)
from shared_api.replies import (
    AscensionProposal,
    CurateReply,
    GoldenList,
    JudgeReply,
    LearningStatusReply,
    ModelAdoption,
    ModelSelection,
)

log = logging.getLogger(__name__)

LEARNING_PACKAGES = ("torch", "transformers", "peft", "gguf", "sentencepiece")
HOW_TO_ENABLE = (
    "Fine-tuning needs the optional `learning` extra (torch CPU, transformers, peft): run "
    "`make learning` (or `uv sync --extra learning`) and restart the backend."
)
RECENT_SCORES = 50


def learning_available() -> bool:
    """True when the fine-tune's packages are installed (found, not imported: torch is big)."""
    return all(importlib.util.find_spec(p) is not None for p in LEARNING_PACKAGES)


def unsloth_ready() -> bool:
    return (
        importlib.util.find_spec("unsloth") is not None and shutil.which("nvidia-smi") is not None
    )


class LearningService:
    def __init__(
        self,
        runtime: Runtime,
        llm: PersonaLLM,
        config: LearningConfig,
        home_root: Path,
        *,
        judge: Judge | None = None,
        trainer: Trainer | None = None,
    ) -> None:
        self.runtime = runtime
        self.llm = llm
        self.bus = runtime.bus
        self.config = config
        self.root = home_root / "learning"
        self.golden_dir = self.root / "golden"
        self.models_dir = self.root / "models"
        self.jobs_dir = self.root / "jobs"
        self.judge: Judge = judge or AlfredJudge(
            runtime, llm, config.judge, config.judge_max_tokens
        )
        self.trainer: Trainer = trainer or SubprocessTrainer(
            max_memory_mb=config.max_memory_mb, timeout_s=config.job_timeout_s
        )
        self.curator = Curator(runtime, self.judge, config)
        self.jobs = jobs.JobRunner(self.bus, self.save_job, self.cleanup)
        existing = llm.manager.backends.get(BACKEND_NAME)
        if isinstance(existing, PersonaGgufBackend):
            self.gguf = existing
        else:
            self.gguf = PersonaGgufBackend(n_threads=llm.config.n_threads, n_ctx=llm.config.n_ctx)
            llm.manager.backends[BACKEND_NAME] = self.gguf
        self._stop = threading.Event()
        self._curating = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        for d in (self.root, self.golden_dir, self.models_dir, self.jobs_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        self.llm.pointer_selection = self.select
        self.runtime.manager.subscribe(self._changed)
        for proto in self.runtime.manager.list():
            for pointer in self._pointers(proto):
                self.gguf.register(pointer)
            self._mirror(proto)
        self.jobs.start()
        if self.config.curator and self.config.curator_interval_s > 0:
            self._thread = threading.Thread(target=self._curate_loop, name="curator", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self.jobs.close()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _curate_loop(self) -> None:
        while not self._stop.wait(self.config.curator_interval_s):
            try:
                self.curate()
            except Exception:
                log.exception("curator pass failed")

    def _changed(self, proto: Proto, change: str, detail: dict[str, Any]) -> None:
        if change.startswith("learning_golden") or change == "swapped":
            self._mirror(proto)
        if change in ("learning_candidate", "learning_adopt", "learning_ascend", "swapped"):
            for pointer in self._pointers(proto):
                self.gguf.register(pointer)

    @staticmethod
    def _pointers(proto: Proto) -> list[ModelPointer]:
        found = list(image_ops.candidates_of(proto).values())
        current = image_ops.model_of(proto)
        return [*found, current] if current else found

    # -- the model pointer ------------------------------------------------------------------
    def select(self, proto: Proto) -> ModelSelection | None:
        """The adopted model of ``proto``, or None (its codex/embedded default applies)."""
        pointer = image_ops.model_of(proto)
        if pointer is None:
            return None
        why = f"adopted {pointer.id} ({pointer.examples} golden examples, {pointer.engine})"
        if pointer.ollama and self.llm.config.backend != "embedded":
            names, error = self.llm.probe_ollama()
            if error is None and (pointer.ollama in names or f"{pointer.ollama}:latest" in names):
                return ModelSelection(backend="ollama", model=pointer.ollama, reason=why)
        if pointer.path and Path(pointer.path).is_file():
            self.gguf.register(pointer)
            return ModelSelection(backend=BACKEND_NAME, model=pointer.id, reason=why)
        log.warning(
            "%s's adopted model %s is missing (%s); using the default",
            proto.name,
            pointer.id,
            pointer.path,
        )
        return None

    def base_path(self, proto: Proto) -> Path:
        """The GGUF a fine-tune of ``proto`` starts from: its Ascension base, else the
        embedded model. Fine-tunes never stack: each starts from the base, on all golden data."""
        base = str(proto.learning.get("base") or "")
        if base:
            return Path(base)
        embedded = self.llm.manager.backends.get("embedded")
        if not isinstance(embedded, EmbeddedBackend):
            raise UnavailableError("No embedded GGUF model to fine-tune from in this backend.")
        return embedded.path

    def resolve_base(self, base: str) -> Path:
        """A base for Ascension: ``embedded``, a GGUF path, or an installed Ollama model whose
        GGUF blob is readable here."""
        if base == "embedded":
            embedded = self.llm.manager.backends.get("embedded")
            if isinstance(embedded, EmbeddedBackend):
                return embedded.path
        path = Path(base).expanduser()
        if path.suffix == ".gguf":
            if not path.is_file():
                raise NotFoundError(f"No GGUF file at {path}.")
            return path.resolve()
        name = base.removeprefix("ollama:")
        try:
            import ollama

            modelfile = str(ollama.Client(host=self.llm.ollama.host).show(name).modelfile or "")
        except Exception as exc:
            raise UnavailableError(
                f"{base!r} is neither a GGUF file nor an Ollama model this backend can read "
                f"({exc}). Give a .gguf path."
            ) from None
        for line in modelfile.splitlines():
            if line.startswith("FROM ") and Path(line[5:].strip()).is_file():
                return Path(line[5:].strip())
        raise UnavailableError(
            f"Ollama's {name} has no GGUF blob readable here; give a .gguf path."
        )

    # -- status and golden data -------------------------------------------------------------
    def summary(self, proto: Proto) -> LearningSummary:
        golden = image_ops.golden_of(proto)
        scores = sorted(image_ops.scores_of(proto).values(), key=lambda s: s.ts)
        judged = [s for s in scores if s.overall is not None and s.error is None]
        failed = sum(s.error is not None for s in scores)
        means: dict[str, float] = {}
        for s in judged:
            for k, v in {**s.scores, "overall": s.overall or 0.0}.items():
                means[k] = means.get(k, 0.0) + v
        means = {k: round(v / len(judged), 4) for k, v in means.items()} if judged else {}
        previous = [
            p for pid in proto.learning.get("previous", []) if pid and (p := self._find(proto, pid))
        ]
        return LearningSummary(
            proto=proto.name,
            model=image_ops.model_of(proto),
            previous=previous,
            candidates=list(image_ops.candidates_of(proto).values()),
            golden=sum(not g.excluded for g in golden),
            excluded=sum(g.excluded for g in golden),
            scored=len(judged),
            failed=failed,
            unscored=sum(
                1 for i in proto.history if i.get("id") not in proto.learning.get("scores", {})
            ),
            means=means,
            recent=[s.overall or 0.0 for s in judged[-RECENT_SCORES:]],
            adoptions=[
                AdoptionRecord.model_validate(a) for a in proto.learning.get("adoptions", [])[-20:]
            ],
            base=str(proto.learning.get("base") or ""),
        )

    @staticmethod
    def _find(proto: Proto, pointer_id: str) -> ModelPointer | None:
        try:
            return image_ops.pointer(proto, pointer_id)
        except NotFoundError:
            return None

    def status(self, proto: str | None) -> LearningStatusReply:
        manager = self.runtime.manager
        protos = [manager.get(proto)] if proto else manager.list()
        available = learning_available()
        return LearningStatusReply(
            personas=[self.summary(p) for p in protos],
            jobs=[j for j in self.jobs.list() if proto is None or j.proto == proto],
            available=available,
            how_to_enable="" if available else HOW_TO_ENABLE,
            engine=self._engine(self.config.engine) if available else "",
        )

    def golden_path(self, proto: str) -> Path:
        return self.golden_dir / f"{proto}.jsonl"

    def list_golden(self, proto: str, include_excluded: bool) -> GoldenList:
        p = self.runtime.manager.get(proto)
        examples = sorted(image_ops.golden_of(p), key=lambda g: g.created)
        if not include_excluded:
            examples = [g for g in examples if not g.excluded]
        return GoldenList(proto=proto, examples=examples, path=str(self.golden_path(proto)))

    def put_golden(
        self,
        proto: str,
        example_id: str | None,
        prompt: str | None,
        reply: str | None,
        messages: list[ChatTurn] | None,
        note: str,
    ) -> GoldenExample:
        p = self.runtime.manager.get(proto)
        existing = p.learning.get("golden", {}).get(example_id) if example_id else None
        now = time.time()
        if messages is None:
            old = GoldenExample.model_validate(existing) if existing else None
            prompt = prompt if prompt is not None else (old.prompt if old else None)
            reply = reply if reply is not None else (old.reply if old else None)
            if not prompt or not reply:
                raise InvalidValueError("Give `prompt` and `reply`, or whole ChatML `messages`.")
            messages = [
                ChatTurn(role="system", content=p.codex.system_prompt),
                ChatTurn(role="user", content=prompt),
                ChatTurn(role="assistant", content=reply),
            ]
        if messages[-1].role != "assistant":
            raise InvalidValueError("The last ChatML message must be the assistant's answer.")
        base = (
            dict(existing)
            if existing
            else {"id": example_id or f"u-{uuid.uuid4().hex[:12]}", "created": now}
        )
        example = GoldenExample.model_validate(
            {**base, "proto": proto, "messages": [m.model_dump() for m in messages],
             "source": "user", "note": note or base.get("note", ""), "updated": now}
        )  # fmt: skip
        self.runtime.commit(
            {
                "op": "learning_golden_put",
                "proto": proto,
                "example": example.model_dump(mode="json"),
            }
        )
        return example

    def exclude_golden(self, proto: str, example_id: str, excluded: bool) -> GoldenExample:
        p = self.runtime.manager.get(proto)
        self.runtime.commit(
            {
                "op": "learning_golden_exclude",
                "proto": proto,
                "id": example_id,
                "excluded": excluded,
                "ts": time.time(),
            }
        )
        return GoldenExample.model_validate(p.learning["golden"][example_id])

    def _mirror(self, proto: Proto) -> None:
        """HOME/learning/golden/NAME.jsonl: the persona's ChatML dataset, as in the image."""
        golden = sorted(image_ops.golden_of(proto), key=lambda g: g.created)
        if not golden and not self.golden_path(proto.name).exists():
            return
        path = self.golden_path(proto.name)
        tmp = path.with_suffix(".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text("".join(g.model_dump_json() + "\n" for g in golden), encoding="utf-8")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    def curate(self, proto: str | None = None, limit: int | None = None) -> CurateReply:
        if proto is not None:
            self.runtime.manager.get(proto)
        with self._curating:  # the background pass and a command never judge twice
            result = self.curator.run_pass(proto, limit)
        return CurateReply(
            scored=result.scored,
            promoted=result.promoted,
            deficits=result.deficits,
            proposals=result.proposals,
            judge=self.judge.name,
        )

    def judge_pair(self, cmd: JudgePair) -> JudgeReply:
        """The ``judge`` command: a pairwise verdict by ``cmd.judge``'s judge-role model."""
        if isinstance(self.judge, AlfredJudge) and cmd.judge != self.judge.judge:
            self.runtime.manager.get(cmd.judge)  # NotFoundError for an unknown persona
            judge: Judge = AlfredJudge(self.runtime, self.llm, cmd.judge)
        else:
            judge = self.judge
        verdict = judge.pairwise(cmd.question, cmd.answer_a, cmd.answer_b, list(cmd.criteria))
        return JudgeReply(verdict=verdict)

    # -- fine-tunes -------------------------------------------------------------------------
    def _engine(self, wanted: str | None) -> str:
        engine = wanted or self.config.engine
        if engine == "auto":
            return "unsloth" if unsloth_ready() and self.config.gpu_base else "cpu"
        return engine

    def _check_available(self, engine: str) -> None:
        if not learning_available():
            raise UnavailableError(HOW_TO_ENABLE)
        if engine == "unsloth" and importlib.util.find_spec("unsloth") is None:
            raise UnavailableError(
                "The Unsloth path needs a CUDA GPU and `uv pip install unsloth` (see README, "
                "Learning); use engine cpu here."
            )
        if engine == "unsloth" and not self.config.gpu_base:
            raise InvalidValueError(
                "Set learning.gpu_base to the Hugging Face model Unsloth fine-tunes."
            )

    def start_finetune(
        self, proto: str, *, engine: str | None = None, steps: int | None = None, adopt: bool = True
    ) -> JobInfo:
        self.runtime.manager.get(proto)
        chosen = self._engine(engine)
        self._check_available(chosen)
        return self.jobs.submit(
            proto, "finetune", lambda job: jobs.run_finetune(self, job, adopt, steps), engine=chosen
        )

    def ascend(
        self, proto: str, base: str, *, steps: int | None = None, follow_up: bool = True
    ) -> JobInfo:
        self.runtime.manager.get(proto)
        self._check_available("cpu")
        self.resolve_base(base)  # refuse a bad base now, not minutes later
        return self.jobs.submit(
            proto,
            "ascension",
            lambda job: jobs.run_ascension(self, job, base, steps, follow_up),
            engine="cpu",
        )

    def cancel(self, job_id: str) -> bool:
        return self.jobs.cancel(job_id)

    def train_spec(self, job: jobs.Job, base: Path, job_dir: Path, steps: int | None) -> TrainSpec:
        c = self.config
        gpu = job.info.engine == "unsloth"
        converter = locate_converter(c.llama_cpp_dir)
        return TrainSpec(
            job_id=job.info.job_id,
            engine="unsloth" if gpu else "cpu",
            base_path=c.gpu_base if gpu else str(base),
            out_dir=str(job_dir / "out"),
            examples=str(job_dir / "train.jsonl"),
            converter=str(converter),
            quant=c.quant,
            steps=steps or (c.gpu_steps if gpu else c.steps),
            learning_rate=c.gpu_learning_rate if gpu else c.learning_rate,
            rank=c.rank,
            alpha=c.lora_alpha,
            batch_size=c.gpu_batch_size if gpu else c.batch_size,
            grad_accum=c.gpu_grad_accum if gpu else c.grad_accum,
            max_seq_len=c.gpu_max_seq_len if gpu else c.max_seq_len,
            threads=c.threads,
        )

    def register_candidate(
        self, proto: Proto, job: jobs.Job, result: TrainResult, base: Path
    ) -> ModelPointer:
        """Move the verified GGUF into HOME/learning/models and register it (journaled)."""
        self.jobs.phase(job, "checking", f"{result.quant}, {result.size_bytes / 1e6:.0f} MB")
        pointer_id = f"{proto.name}-{job.info.job_id}"
        dest = self.models_dir / f"{pointer_id}.gguf"
        jobs.atomic_copy(Path(result.gguf), dest)
        base_name = "embedded" if base == self.base_path_default() else str(base)
        pointer = jobs.result_pointer(proto.name, job.info, result, dest, base, base_name)
        if job.info.engine == "unsloth" and self.config.ollama_register:
            pointer = self._register_ollama(proto, pointer)
        self.runtime.commit(
            {
                "op": "learning_candidate",
                "proto": proto.name,
                "pointer": pointer.model_dump(mode="json"),
            }
        )
        self.gguf.register(pointer)
        shutil.rmtree(Path(result.gguf).parent / "hf", ignore_errors=True)  # merged weights: large
        return pointer

    def base_path_default(self) -> Path | None:
        embedded = self.llm.manager.backends.get("embedded")
        return embedded.path if isinstance(embedded, EmbeddedBackend) else None

    def _register_ollama(self, proto: Proto, pointer: ModelPointer) -> ModelPointer:
        """GPU path: a Modelfile (template and stop pinned from the GGUF) and `ollama create`."""
        from backend.learning.export import modelfile, ollama_create, read_facts

        path = Path(pointer.path)
        facts = read_facts(path)
        target = path.with_suffix(".Modelfile")
        target.write_text(
            modelfile(path, facts, system=proto.codex.system_prompt, num_ctx=self.llm.config.n_ctx)
        )
        name = f"entropic-{pointer.id.lower()}"
        try:
            how = ollama_create(name, target, self.llm.ollama.host)
        except Exception as exc:
            log.warning("ollama create %s failed: %s (the GGUF still serves embedded)", name, exc)
            return pointer.model_copy(
                update={
                    "detail": {**pointer.detail, "modelfile": str(target), "ollama_error": str(exc)}
                }
            )
        return pointer.model_copy(
            update={
                "ollama": name,
                "detail": {**pointer.detail, "modelfile": str(target), "registered_by": how},
            }
        )

    def validate(
        self,
        proto: Proto,
        candidate: ModelSelection,
        current: ModelSelection,
        holdout: list[GoldenExample],
    ) -> ValidationReport:
        return validate(
            self.llm, self.judge, proto, candidate, current, holdout,
            max_tokens=self.config.validation_max_tokens, alpha=self.config.alpha,
        )  # fmt: skip

    # -- adoption ---------------------------------------------------------------------------
    def adopt(
        self,
        proto: str,
        candidate: str,
        *,
        force: bool = False,
        reason: str = "",
        evidence: ValidationReport | None = None,
    ) -> ModelAdoption:
        p = self.runtime.manager.get(proto)
        pointer = image_ops.pointer(p, candidate)
        assert pointer is not None
        if evidence is None and pointer.detail.get("validation"):
            evidence = ValidationReport.model_validate(pointer.detail["validation"])
        if not force and (evidence is None or not evidence.significant):
            raise InvalidValueError(
                f"{candidate} has no significant validation win"
                + (f" (p={evidence.p_value:.3f})" if evidence else "")
                + "; adopt it anyway with force: true (recorded as forced).",
                proto=proto,
            )
        if not Path(pointer.path).is_file():
            raise NotFoundError(f"The model file {pointer.path} of {candidate} is gone.")
        current = image_ops.model_of(p)
        record = AdoptionRecord(
            action="adopt",
            proto=proto,
            previous=current.id if current else "",
            current=candidate,
            reason=("forced: " if force else "") + (reason or "adopted"),
            evidence=evidence,
            ts=time.time(),
        )
        self.runtime.commit(
            {
                "op": "learning_adopt",
                "proto": proto,
                "pointer_id": candidate,
                "record": record.model_dump(mode="json"),
            }
        )
        return self._adopted(proto, record)

    def rollback(self, proto: str, reason: str = "") -> ModelAdoption:
        p = self.runtime.manager.get(proto)
        previous = p.learning.get("previous") or []
        current = image_ops.model_of(p)
        record = AdoptionRecord(
            action="rollback",
            proto=proto,
            previous=current.id if current else "",
            current=previous[-1] if previous else "",
            reason=reason or "rolled back by the user",
            ts=time.time(),
        )
        self.runtime.commit(
            {"op": "learning_rollback", "proto": proto, "record": record.model_dump(mode="json")}
        )
        return self._adopted(proto, record)

    def ascend_production(
        self, proto: str, pointer: ModelPointer, base: Path, report: ValidationReport
    ) -> None:
        live = self.runtime.manager.get(proto)
        current = image_ops.model_of(live)
        record = AdoptionRecord(
            action="ascend",
            proto=proto,
            previous=current.id if current else "",
            current=pointer.id,
            reason=f"Ascension to {base} won on a clone",
            evidence=report,
            ts=time.time(),
        )
        ported = pointer.model_copy(update={"proto": proto})
        self.runtime.commit(
            {"op": "learning_ascend", "proto": proto, "pointer": ported.model_dump(mode="json"),
             "base": str(base), "record": record.model_dump(mode="json")}
        )  # fmt: skip
        self._adopted(proto, record)

    def _adopted(self, proto: str, record: AdoptionRecord) -> ModelAdoption:
        self.llm.refresh_selections()
        self.bus.publish(ModelPointerChanged(proto=proto, record=record))
        return ModelAdoption(record=record, summary=self.summary(self.runtime.manager.get(proto)))

    def propose_ascension(self, proto: str) -> AscensionProposal:
        from backend.learning.ascension import propose

        return propose(self.runtime, self.llm, self.config, self.runtime.manager.get(proto))

    def cleanup(self, job_id: str) -> None:
        """Drop a job's bulky intermediates (merged fp32 weights, the f16 GGUF); the
        quantized model, the data and the logs stay for inspection."""
        out = self.jobs_dir / job_id / "out"
        shutil.rmtree(out / "hf", ignore_errors=True)
        (out / "model.f16.gguf").unlink(missing_ok=True)

    def save_job(self, info: JobInfo) -> None:
        path = self.jobs_dir / info.job_id / "job.json"
        if path.parent.is_dir():
            path.write_text(info.model_dump_json(indent=2))
