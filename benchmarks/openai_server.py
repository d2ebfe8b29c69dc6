"""Tokens/s through our OpenAI-compatible backend (ModelManager -> OpenAIBackend, streamed, a
token callback per piece) vs the ``openai`` client straight against the same server, in one
run: llama.cpp's ``llama_cpp.server`` serving SmolLM2-135M on 127.0.0.1 with an API key.

Rounds alternate between the two paths, so load on the machine hits both alike. Tokens/s is
completion tokens over the wall time from request to last token. Target: overhead <= 5 %.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import openai

from backend.llm.base import ChatMessage, GenerationParams
from backend.llm.endpoints import OpenAIEndpoint
from backend.llm.manager import ModelManager
from backend.llm.openai_backend import OpenAIBackend
from benchmarks._common import log, verdict
from tests.servers import start_llama_server

PROMPT = "Write a short story about a lighthouse keeper."
KEY_ENV = "ENTROPIC_BENCH_OPENAI_KEY"


def _ours(manager: ModelManager, max_tokens: int) -> float:
    pieces: list[str] = []
    started = time.perf_counter()
    done = manager.generate(
        backend="openai:bench",
        model="smollm2",
        messages=[ChatMessage("user", PROMPT)],
        params=GenerationParams(max_tokens=max_tokens),
        caller="bench",
        on_token=pieces.append,
        cancel=threading.Event(),
    )
    return done.completion_tokens / (time.perf_counter() - started)


def _direct(client: openai.OpenAI, max_tokens: int) -> float:
    started = time.perf_counter()
    stream = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=max_tokens,
        temperature=0.0,
        stream=True,
    )
    tokens = sum(1 for chunk in stream if chunk.choices and chunk.choices[0].delta.content)
    return tokens / (time.perf_counter() - started)


def run(quick: bool = False) -> dict[str, Any]:
    rounds, max_tokens = (2, 32) if quick else (6, 128)
    with tempfile.TemporaryDirectory(prefix="entropic-bench-openai-") as tmp:
        server = start_llama_server(Path(tmp))
        try:
            os.environ[KEY_ENV] = server.key
            endpoint = OpenAIEndpoint(base_url=server.base_url, api_key_env=KEY_ENV)
            manager = ModelManager({"openai:bench": OpenAIBackend("bench", endpoint)})
            client = openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)
            _ours(manager, 8)  # warm both paths (prompt cache, connections)
            _direct(client, 8)
            ours, direct = [], []
            for i in range(rounds):
                first, second = (_ours, _direct) if i % 2 == 0 else (_direct, _ours)
                a = first(manager if first is _ours else client, max_tokens)  # type: ignore[arg-type]
                b = second(manager if second is _ours else client, max_tokens)  # type: ignore[arg-type]
                ours.append(a if first is _ours else b)
                direct.append(b if first is _ours else a)
                log(f"round {i + 1}/{rounds}: ours {ours[-1]:.1f} tok/s, direct {direct[-1]:.1f}")
        finally:
            server.stop()
            os.environ.pop(KEY_ENV, None)
    ours_p50, direct_p50 = statistics.median(ours), statistics.median(direct)
    overhead = (direct_p50 - ours_p50) / direct_p50 * 100
    log(f"overhead {overhead:.1f} % (target <= 5 %): {verdict(overhead <= 5)}")
    return {
        "benchmark": "openai_server",
        "server": "llama_cpp.server SmolLM2-135M Q4_1, 1 thread, 127.0.0.1",
        "max_tokens": max_tokens,
        "rounds": rounds,
        "ours_tok_s_p50": round(ours_p50, 1),
        "direct_openai_tok_s_p50": round(direct_p50, 1),
        "overhead_pct": round(overhead, 1),
        "target_met": overhead <= 5,
    }
