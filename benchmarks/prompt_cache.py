"""Prompt caching for persona replies (issue 16 §4): time to first token of a persona reply
with the system-prefix cache vs. without it, same model, same prompts, in one run.

Personas take turns (BRICK, ROBIN, BABS, ALFRED, ...), each asking a new short question, so
llama-cpp-python's own reuse of the previous prompt's prefix never helps: uncached, every
reply processes its persona's whole system turn; cached, it is restored. Two embedded
backends with the same GGUF and threads, interleaved. Target: cached <= 40% of uncached
(p50), with the default model.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

from backend.llm.base import ChatMessage, GenerationParams
from backend.llm.catalog import DEFAULT_MODEL
from backend.llm.embedded import EmbeddedBackend
from benchmarks._common import emit, log, percentile, verdict

PERSONAS = Path(__file__).resolve().parents[1] / "personas"
QUESTIONS = [
    "What is a prime number?", "Name a colour.", "Is water wet?", "Why do cats purr?",
    "What is 7 times 8?", "Who wrote Hamlet?", "What is a byte?", "Is the sun a star?",
    "What is rain?", "Name a fruit.", "What is a verb?", "How far is the moon?",
]  # fmt: skip


def run(quick: bool = False, model: str = DEFAULT_MODEL) -> dict[str, Any]:
    turns = 4 if quick else 12
    systems = {
        name: json.loads((PERSONAS / f"{name}.json").read_text())["system_prompt"]
        for name in ("BRICK", "ROBIN", "BABS", "ALFRED")
    }
    cached = EmbeddedBackend(model, prompt_cache_mb=64)
    plain = EmbeddedBackend(model, prompt_cache_mb=0)
    for backend in (cached, plain):  # both resident: a benchmark, not the one-model backend
        backend.load(backend.model_name)
    ttft: dict[str, list[float]] = {"cached": [], "uncached": []}
    outcomes: list[str] = []
    names = list(systems)
    for i in range(turns + len(names)):  # the first round fills the cache: not measured
        persona, question = names[i % len(names)], QUESTIONS[i % len(QUESTIONS)]
        msgs = [ChatMessage("system", systems[persona]), ChatMessage("user", question)]
        for label, backend in (("cached", cached), ("uncached", plain))[:: 1 if i % 2 else -1]:
            c = backend.generate(
                backend.model_name, msgs, GenerationParams(max_tokens=2), None, threading.Event()
            )
            if label == "cached":
                outcomes.append(backend.prefix_cache.last)
            if i >= len(names):
                ttft[label].append(c.ttft_ms)
                log(f"{persona:6s} {label:8s} ttft {c.ttft_ms:7.0f} ms")
    cache_bytes = cached.prefix_cache.size_bytes
    cached.unload()
    plain.unload()
    c50, u50 = percentile(ttft["cached"], 50), percentile(ttft["uncached"], 50)
    ratio = c50 / u50 if u50 else 1.0
    met = ratio <= 0.40
    log(f"TTFT p50 cached {c50:.0f} ms vs uncached {u50:.0f} ms = {ratio:.0%}: {verdict(met)}")
    return {
        "benchmark": "prompt_cache",
        "model": model,
        "turns": turns,
        "cached_ttft_ms_p50": round(c50, 1),
        "uncached_ttft_ms_p50": round(u50, 1),
        "cached_over_uncached": round(ratio, 3),
        "cache_hits": outcomes.count("hit"),
        "cache_misses": outcomes.count("miss"),
        "cache_bytes": cache_bytes,
        "target_ratio": 0.40,
        "target_ratio_met": met,
    }


if __name__ == "__main__":  # python -m benchmarks.prompt_cache [--quick] [MODEL]
    names = [a for a in sys.argv[1:] if not a.startswith("-")]
    emit(run("--quick" in sys.argv, names[0] if names else DEFAULT_MODEL))
