"""The learning loop: what a CPU fine-tune costs, and how the adopted model fares on hold-out.

One real fine-tune of BRICK on the embedded SmolLM2-135M (the demo's 40 golden examples,
the closing phrase; 32 train, 8 held out), through LearningService exactly as the backend
runs it: trainer subprocess, LoRA, merge, GGUF f16, Q4_K_M, then blind A/B validation judged
by the real ALFRED (the embedded model) and adoption on a significant win.

Figures: the CPU fine-tune time per 100 training examples seen (train seconds / (steps x
batch) x 100) and for the whole chain; the trainer's peak RSS; ALFRED's judged win rate of
the candidate on the hold-out (wins / pairs, both orders agreeing) and its p-value; and the
objective check, the taught phrase on held-out prompts, candidate vs base. ``--quick``: 8
steps.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from backend.bus import EventBus
from backend.config import Config, ModelsConfig
from backend.home import Home
from backend.learning.config import LearningConfig
from backend.learning.demo import HELD_OUT, closing_examples, shows_signature
from backend.learning.service import LearningService, learning_available
from backend.llm.embedded import EmbeddedBackend
from backend.llm.ollama_backend import OllamaBackend
from backend.llm.service import PersonaLLM
from backend.protos import Proto
from backend.runtime import Runtime
from benchmarks._common import log
from shared_api.events import Event, LearningFinished


def run(quick: bool = False) -> dict[str, Any]:
    if not learning_available():
        return {"benchmark": "learning", "skipped": "run `make learning` first"}
    steps, batch = (8 if quick else 24), 4
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        config = Config(
            learning=LearningConfig(
                curator_interval_s=0, steps=steps, batch_size=batch, validation_max_tokens=48
            )
        )
        bus = EventBus()
        Home(home).ensure()
        runtime = Runtime(Home(home), config.backend, bus)
        llm = PersonaLLM(
            runtime,
            ModelsConfig(backend="embedded"),
            bus,
            backends={
                "ollama": OllamaBackend("http://127.0.0.1:9", 1.0),
                "embedded": EmbeddedBackend(n_threads=1),
            },
        )
        Proto.llm = llm
        runtime.start()
        service = LearningService(runtime, llm, config.learning, home)
        done = threading.Event()
        finished: list[Any] = []

        def watch(event: Event, _parent: str | None) -> None:
            if isinstance(event, LearningFinished):
                finished.append(event.job)
                done.set()

        bus.subscribe(watch)
        service.start()
        try:
            system = runtime.manager.get("BRICK").codex.system_prompt
            for i, m in enumerate(closing_examples(system, 40)):
                service.put_golden(
                    "BRICK", f"demo-{i:02d}", m[1]["content"], m[2]["content"], None, ""
                )
            started = time.perf_counter()
            log(f"fine-tuning BRICK: 40 golden examples, {steps} steps x batch {batch}")
            service.start_finetune("BRICK", adopt=True)
            if not done.wait(3600):
                raise TimeoutError("the fine-tune did not finish within an hour")
            chain_s = time.perf_counter() - started
            job = finished[0]
            if job.candidate is None:
                raise RuntimeError(f"the fine-tune failed: {job.error}")
            log(f"{job.outcome}: {job.message}")
            detail = job.candidate.detail
            train_s = float(detail["train_s"])
            report = job.validation
            proto = runtime.manager.get("BRICK")
            cand = {"backend": "gguf", "model": job.candidate.id}
            shown_new = _shown(llm, proto, cand)
            shown_old = _shown(
                llm,
                proto,
                {
                    "backend": "embedded",
                    "model": llm.manager.backends["embedded"].list_models()[0].name,
                },
            )
            pairs = len(report.pairs) if report else 0
            return {
                "benchmark": "learning",
                "examples": job.examples,
                "steps": steps,
                "batch": batch,
                "train_s": round(train_s, 1),
                "chain_s": round(chain_s, 1),
                "cpu_finetune_s_per_100_examples": round(train_s / (steps * batch) * 100, 1),
                "chain_s_per_100_examples_seen": round(chain_s / (steps * batch) * 100, 1),
                "trainer_peak_rss_mb": detail.get("peak_rss_mb"),
                "quant": job.candidate.quant,
                "final_loss": detail.get("final_loss"),
                "outcome": job.outcome,
                "judge": report.judge if report else "",
                "judged_win_rate": round(report.wins / pairs, 3) if report and pairs else None,
                "wins_losses_ties": [report.wins, report.losses, report.ties] if report else None,
                "p_value": report.p_value if report else None,
                "phrase_on_held_out_candidate": f"{shown_new}/{len(HELD_OUT)}",
                "phrase_on_held_out_base": f"{shown_old}/{len(HELD_OUT)}",
            }
        finally:
            service.close()
            llm.close()
            runtime.close(save=False)


def _shown(llm: PersonaLLM, proto: Proto, selection: dict[str, str]) -> int:
    from backend.learning.validation import answer_all
    from shared_api.replies import ModelSelection

    chosen = ModelSelection(reason="benchmark", **selection)
    answers = answer_all(llm, proto, chosen, list(HELD_OUT), 48)
    return sum(shows_signature(a) for a in answers)
