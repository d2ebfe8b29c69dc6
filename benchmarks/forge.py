"""The Tool Forge: what a forged tool's call costs, and how often the embedded model forges.

1. Call overhead: one call of a forged tool (``word_count``) the way a Proto makes it (the
   call program, a fresh sandbox, the JSON result read back), per available runtime, side by
   side with calling the same function in-process (the baseline). Median of 20 (5 quick).
2. Success rate: a fixed set of 10 small tool tasks forged by BRICK on the embedded model
   (SmolLM2-135M unless ``[models] embedded_model`` says otherwise), up to 3 attempts each,
   tests run in the strongest sandbox here. Reported; no target yet. ``--quick``: 3 tasks.
   ``FORGE_MODEL=/path/model.gguf`` forges with another GGUF instead (e.g. a code model).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from backend.bus import EventBus
from backend.config import BackendConfig, ForgeConfig, ModelsConfig
from backend.forge import ToolForge
from backend.forge.program import call_program, report
from backend.home import Home
from backend.llm.service import PersonaLLM
from backend.protos import Proto
from backend.runtime import Runtime
from backend.sandbox import SecureCodeExecutor, default_runtimes
from benchmarks._common import log, summary

SOURCE = "def word_count(text):\n    return len(text.split())\n"
ARGS = {"text": "the quick brown fox jumps over the lazy dog"}

TASKS: list[tuple[str, str, str]] = [
    ("add_numbers", "return the sum of the numbers a and b", "add_numbers(a=2, b=3) == 5"),
    ("word_count", "count the words in text, split on whitespace", "word_count(text='a b c') == 3"),
    ("reverse_string", "return the string s reversed", "reverse_string(s='abc') == 'cba'"),
    ("is_palindrome", "is the string s the same backwards", "is_palindrome(s='level') is True"),
    ("factorial", "return n! for an integer n >= 0", "factorial(n=5) == 120"),
    ("max_of_list", "return the largest number in items", "max_of_list(items=[3, 9, 2]) == 9"),
    ("to_fahrenheit", "convert c degrees Celsius to Fahrenheit", "to_fahrenheit(c=100) == 212"),
    ("count_vowels", "count the vowels (aeiou) in text", "count_vowels(text='banana') == 3"),
    ("sum_of_squares", "return 1*1 + 2*2 + ... + n*n", "sum_of_squares(n=3) == 14"),
    ("first_word", "the first word of text, '' if none", "first_word(text='hi there') == 'hi'"),
]  # fmt: skip


def run(quick: bool = False) -> dict[str, Any]:
    figures: dict[str, Any] = {"benchmark": "forge", "quick": quick}
    figures.update(call_overhead(5 if quick else 20))
    figures.update(success_rate(TASKS[:3] if quick else TASKS, 2 if quick else 3))
    return figures


def call_overhead(rounds: int) -> dict[str, Any]:
    space: dict[str, Any] = {}
    exec(SOURCE, space)  # our own constant source: the in-process baseline
    function = space["word_count"]
    samples: dict[str, list[float]] = {"in_process": []}
    for _ in range(rounds):
        started = time.perf_counter()
        function(**ARGS)
        samples["in_process"].append((time.perf_counter() - started) * 1000)
    program = call_program("word_count", SOURCE, ARGS)
    for runtime in default_runtimes():
        why = runtime.available()
        if why is not None:
            log(f"{runtime.name}: not available ({why})")
            continue
        executor = SecureCodeExecutor([runtime])
        executor.run_python(program)  # warm-up
        samples[runtime.name] = []
        for _ in range(rounds):
            started = time.perf_counter()
            result = executor.run_python(program)
            samples[runtime.name].append((time.perf_counter() - started) * 1000)
            if report(result) != (True, 9):
                raise RuntimeError(f"the sandboxed call went wrong: {result}")
    out: dict[str, Any] = {"call_rounds": rounds}
    base = summary(samples["in_process"], digits=4)["p50"] or 1e-6
    for name, values in samples.items():
        stats = summary(values, digits=4 if name == "in_process" else 1)
        out[f"call_{name}_ms"] = stats
        if name != "in_process":
            out[f"call_{name}_x_in_process"] = round((stats["p50"] or 0) / base)
        log(f"call {name:14s} p50 {stats['p50']} ms")
    return out


def success_rate(tasks: list[tuple[str, str, str]], attempts: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        bus = EventBus()
        runtime = Runtime(Home(Path(tmp)).ensure(), BackendConfig(autosave_interval_s=0), bus)
        models = ModelsConfig(backend="embedded", embedded_model=os.environ.get("FORGE_MODEL", ""))
        llm = PersonaLLM(runtime, models, bus)
        forge = ToolForge(runtime, llm, bus, ForgeConfig(max_attempts=attempts))
        Proto.llm, Proto.tool_runner = llm, forge
        runtime.start()
        outcomes: dict[str, Any] = {}
        stages: Counter[str] = Counter()
        seconds: list[float] = []
        try:
            for name, description, example in tasks:
                started = time.perf_counter()
                finished = forge.forge(
                    "BRICK", name, description, [example], attempts, f"bench-{name}",
                    threading.Event(),
                )  # fmt: skip
                took = time.perf_counter() - started
                seconds.append(took)
                stages.update(a.stage for a in finished.attempts if not a.passed)
                outcomes[name] = {"outcome": finished.outcome, "attempts": len(finished.attempts)}
                if finished.error is not None:
                    outcomes[name]["error"] = finished.error.message
                log(
                    f"forge {name}: {finished.outcome} after {len(finished.attempts)} ({took:.1f}s)"
                )
            model = llm.selections["BRICK"].model
        finally:
            forge.close()
            llm.close()
            runtime.close(save=False)
            Proto.llm = Proto.tool_runner = None
    successes = [o for o in outcomes.values() if o["outcome"] == "attached"]
    return {
        "forge_model": model,
        "forge_tasks": len(tasks),
        "forge_max_attempts": attempts,
        "forge_success_rate": round(len(successes) / len(tasks), 2),
        "forge_attempts_per_success": (
            round(sum(o["attempts"] for o in successes) / len(successes), 2) if successes else None
        ),
        "forge_failed_attempts_by_stage": dict(stages),
        "forge_seconds_per_task": summary(seconds, digits=1),
        "forge_outcomes": outcomes,
    }
