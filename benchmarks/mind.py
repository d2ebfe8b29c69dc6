"""Does the default mind do the work? Forge, judge, chat and speed with the capable model.

1. Forge: ``TOOL_TASKS`` (24 tool tasks: parsing, lists, strings, dates, dicts), each forged by
   BRICK from ONE given example, up to 3 attempts of 3 candidates, in the strongest sandbox.
   A task counts as correct only when the attached tool passes the hidden checks kept here
   (run in the sandbox). Targets: >= 80% correct, median <= 90 s per task (2-core machine,
   quiet). The first-attempt rate is reported too.
2. Judge: ``JUDGE_PAIRS`` (18 labelled pairs) through the ``judge`` command's code path: right
   only when the better answer wins (the verdict sums both orders, so it is the same either
   way round). Each order's argmax is reported too. Target >= 85%.
3. Chat and speed: ``benchmarks/mind_chat.py`` (chat degeneracy, tokens/s and time to first
   token vs llama-cpp-python direct), when present; its absence is reported loudly.

The model: ``MIND_MODEL`` (a GGUF path), else the capable default in the shared models cache;
``MIND_SHA256`` pins it. ``MIND_TASKS=a,b`` forges only the named tasks; ``MIND_PARTS=forge,
judge,chat`` picks the parts; ``MIND_PAIRS_FROM=N`` starts at pair N. ``--quick``: 4 tasks,
6 pairs. Details (every forged source, every verdict) go to ``artifacts/mind-bench-PARTS.json``.
"""

from __future__ import annotations

import importlib
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from backend.bus import EventBus
from backend.config import BackendConfig, ForgeConfig, ModelsConfig
from backend.forge import ToolForge
from backend.forge.program import Candidate, parse_example
from backend.forge.trial import trial_candidates
from backend.home import Home
from backend.learning.judge import AlfredJudge
from backend.llm.service import PersonaLLM
from backend.protos import Proto
from backend.runtime import Runtime
from backend.sandbox import SecureCodeExecutor
from benchmarks._common import log, summary, verdict
from benchmarks.mind_tasks import JUDGE_PAIRS, TOOL_TASKS

MODEL_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def models_dir() -> Path:
    if os.environ.get("ENTROPIC_MODELS_DIR"):
        return Path(os.environ["ENTROPIC_MODELS_DIR"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "entropic-os" / "models"


def models_config() -> ModelsConfig:
    path = os.environ.get("MIND_MODEL") or str(models_dir() / MODEL_FILE)
    sha = os.environ.get("MIND_SHA256", MODEL_SHA256 if path.endswith(MODEL_FILE) else "")
    fields: dict[str, Any] = {"backend": "embedded", "embedded_model": path, "embedded_sha256": sha}
    if os.environ.get("MIND_THREADS"):
        fields["n_threads"] = int(os.environ["MIND_THREADS"])
    return ModelsConfig.model_validate(fields)


def run(quick: bool = False) -> dict[str, Any]:
    parts = os.environ.get("MIND_PARTS", "forge,judge,chat").split(",")
    figures: dict[str, Any] = {"benchmark": "mind", "quick": quick}
    details: dict[str, Any] = {}
    config = models_config()
    figures["model"] = Path(config.embedded_model).name
    with tempfile.TemporaryDirectory(prefix="mind-bench-") as root:
        world = World(Path(root), config)
        try:
            if "forge" in parts:
                wanted = [t for t in os.environ.get("MIND_TASKS", "").split(",") if t]
                tasks = [t for t in TOOL_TASKS if not wanted or t[0] in wanted]
                figures.update(forge_figures(world, tasks[:4] if quick else tasks, details))
            if "judge" in parts:
                first = int(os.environ.get("MIND_PAIRS_FROM", "1")) - 1
                pairs = JUDGE_PAIRS[first:][:6] if quick else JUDGE_PAIRS[first:]
                figures.update(judge_figures(world, pairs, details, first))
        finally:
            world.close()
    if "chat" in parts:
        figures.update(chat_figures(quick))
    ARTIFACTS.mkdir(exist_ok=True)
    artifact = ARTIFACTS / f"mind-bench-{'-'.join(parts)}.json"
    artifact.write_text(json.dumps({"figures": figures, **details}, indent=2))
    return figures


class World:
    """One backend's worth of services in-process: runtime, the model, the forge."""

    def __init__(self, root: Path, config: ModelsConfig) -> None:
        self.bus = EventBus()
        self.runtime = Runtime(Home(root).ensure(), BackendConfig(autosave_interval_s=0), self.bus)
        self.llm = PersonaLLM(self.runtime, config, self.bus)
        self.executor = SecureCodeExecutor()
        forge_config = ForgeConfig(max_attempts=3, max_tokens=400)
        self.forge = ToolForge(self.runtime, self.llm, self.bus, forge_config, self.executor)
        Proto.llm, Proto.tool_runner = self.llm, self.forge
        self.runtime.start()

    def close(self) -> None:
        self.forge.close()
        self.llm.close()
        self.runtime.close(save=False)
        Proto.llm = Proto.tool_runner = None


def forge_figures(
    world: World, tasks: list[tuple[str, str, str, list[str]]], details: dict[str, Any]
) -> dict[str, Any]:
    runtime = world.executor.select(None).name
    rows, seconds = [], []
    for number, (name, description, example, hidden) in enumerate(tasks, 1):
        started = time.perf_counter()
        finished = world.forge.forge(
            "ROBIN", name, description, [example], 3, f"bench-{name}", threading.Event()
        )
        elapsed = time.perf_counter() - started
        seconds.append(elapsed)
        row: dict[str, Any] = {
            "task": name,
            "outcome": finished.outcome,
            "attempts": len(finished.attempts),
            "seconds": round(elapsed, 1),
            "feedback": [a.feedback for a in finished.attempts],  # what each attempt was told
        }
        if finished.tool is not None:
            tool = finished.tool
            checks = [parse_example(name, h) for h in hidden]
            candidate = Candidate(tool.source, "", [], tool.params)
            trial = trial_candidates(
                world.executor, world.forge.config.limits, runtime, name, [(1, candidate)], checks
            )
            outcome = trial.outcomes[0]
            row.update(
                correct=outcome.passed,
                hidden_passed=outcome.examples_passed,
                hidden_total=len(hidden),
                first_attempt=tool.provenance.winner is not None and tool.provenance.winner[0] == 1,
                winner=tool.provenance.winner,
                source=tool.source,
                failed_hidden=outcome.failed_example,
                got=outcome.got,
                probes=tool.provenance.probes,
            )
        else:
            row.update(
                correct=False,
                first_attempt=False,
                hidden_passed=0,
                hidden_total=len(hidden),
                error=finished.error.message if finished.error else "",
                last_candidates=[c.source for c in finished.attempts[-1].candidates]
                if finished.attempts
                else [],
            )
        rows.append(row)
        log(
            f"forge {number}/{len(tasks)} {name}: {finished.outcome}, "
            f"{'correct' if row['correct'] else 'WRONG'} on hidden checks "
            f"({row['hidden_passed']}/{len(hidden)}), {len(finished.attempts)} attempt(s), "
            f"{elapsed:.0f} s"
        )
    details["forge"] = rows
    correct = sum(r["correct"] for r in rows)
    rate = correct / len(rows) if rows else 0.0
    median = statistics.median(seconds) if seconds else 0.0
    return {
        "forge_tasks": len(rows),
        "forge_correct": correct,
        "forge_success_rate": round(rate, 3),
        "forge_success_target": ">= 0.8: " + verdict(rate >= 0.8),
        "forge_attached": sum(r["outcome"] == "attached" for r in rows),
        "forge_first_attempt_rate": round(sum(r["first_attempt"] for r in rows) / len(rows), 3)
        if rows
        else 0.0,
        "forge_seconds": summary(seconds),
        "forge_median_s": round(median, 1),
        "forge_median_target": "<= 90 s: " + verdict(median <= 90),
        "forge_sandbox": runtime,
    }


def judge_figures(
    world: World, pairs: list[tuple[str, str, str]], details: dict[str, Any], offset: int = 0
) -> dict[str, Any]:
    judge = AlfredJudge(world.runtime, world.llm)
    rows, right, argmax_both = [], 0, 0
    for number, (question, good, bad) in enumerate(pairs, offset + 1):
        # alternate which side the better answer is given on, so a bias would show
        swap = number % 2 == 0
        v = judge.pairwise(question, bad, good) if swap else judge.pairwise(question, good, bad)
        want = "b" if swap else "a"
        ok = v.winner == want
        right += ok
        good_side = [o.p_b if swap else o.p_a for o in v.orders]
        both = all(p > 0.5 for p in good_side)
        argmax_both += both
        rows.append(
            {
                "question": question,
                "winner": v.winner,
                "want": want,
                "right": ok,
                "margin": v.margin,
                "p_good_per_order": good_side,
                "seconds": v.seconds,
            }
        )
        log(
            f"judge {number}/{offset + len(pairs)}: {'right' if ok else 'WRONG'} "
            f"(winner {v.winner}, margin {v.margin:.2f}, p(better) per order {good_side}), "
            f"{v.seconds:.0f} s"
        )
    details["judge"] = rows
    accuracy = right / len(pairs) if pairs else 0.0
    return {
        "judge_pairs": len(pairs),
        "judge_accuracy": round(accuracy, 3),
        "judge_accuracy_target": ">= 0.85: " + verdict(accuracy >= 0.85),
        "judge_argmax_right_in_both_orders": round(argmax_both / len(pairs), 3) if pairs else 0,
        "judge_seconds_per_pair": summary([r["seconds"] for r in rows]),
    }


def chat_figures(quick: bool) -> dict[str, Any]:
    """Chat degeneracy and reply speed from ``benchmarks/mind_chat.py`` (model roles' side
    of issue 12), with one shared chat backend."""
    try:
        chat = importlib.import_module("benchmarks.mind_chat")
        chat_backend, degeneracy, speed = chat.chat_backend, chat.chat_degeneracy, chat.reply_speed
    except (ImportError, AttributeError) as exc:
        message = (
            f"benchmarks/mind_chat.py is missing or incomplete ({exc}): chat and speed NOT MEASURED"
        )
        log("!!! " + message)
        return {"chat": "NOT MEASURED", "chat_error": message}
    with chat_backend() as backend:
        figures: dict[str, Any] = degeneracy(backend, quick)
        figures.update(speed(backend, quick))
    return figures
