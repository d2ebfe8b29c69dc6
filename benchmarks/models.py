"""Model manager benchmarks.

1. Embedded tokens/s through ``ModelManager`` vs. a direct llama-cpp-python call on the same
   prompt and the same loaded model, interleaved in one run. Target: overhead <= 5%.
2. Scheduler overhead per call with the model already resident, measured with an instant
   in-process backend (a benchmark double) so only the manager's own work is timed.
   Target: <= 1 ms.
3. Peak RSS of a real backend subprocess before and after the embedded model is loaded.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from backend.launcher import BackendProcess
from backend.llm.base import ChatMessage, Completion, GenerationParams, ModelInfo, OnToken
from backend.llm.embedded import EmbeddedBackend
from backend.llm.manager import ModelManager
from benchmarks._common import log, percentile, verdict
from shared_api.commands import AskPersona

PROMPT = [
    ChatMessage("system", "You are a helpful assistant."),
    ChatMessage("user", "Explain in a few sentences why the sky is blue."),
]


def _direct(llm: Any, max_tokens: int) -> tuple[int, float]:
    started = time.perf_counter()
    tokens = 0
    for chunk in llm.create_chat_completion(
        messages=[{"role": m.role, "content": m.content} for m in PROMPT],
        temperature=0.0,
        max_tokens=max_tokens,
        stream=True,
    ):
        if chunk["choices"][0]["delta"].get("content"):
            tokens += 1
    return tokens, time.perf_counter() - started


def _managed(manager: ModelManager, model: str, max_tokens: int) -> tuple[int, float]:
    started = time.perf_counter()
    c = manager.generate(
        backend="embedded",
        model=model,
        messages=PROMPT,
        params=GenerationParams(max_tokens=max_tokens),
    )
    return c.completion_tokens, time.perf_counter() - started


def tokens_per_second(quick: bool) -> dict[str, Any]:
    rounds, max_tokens = (2, 48) if quick else (6, 128)
    embedded = EmbeddedBackend()
    manager = ModelManager({"embedded": embedded})
    manager.generate(
        backend="embedded",
        model=embedded.model_name,
        messages=PROMPT,
        params=GenerationParams(max_tokens=4),
    )
    direct, ours = [], []
    for r in range(rounds):
        for name, fn in (
            ("direct", lambda: _direct(embedded._llm, max_tokens)),
            ("ours", lambda: _managed(manager, embedded.model_name, max_tokens)),
        )[:: 1 if r % 2 == 0 else -1]:
            tokens, seconds = fn()
            (direct if name == "direct" else ours).append(tokens / seconds)
            rate = tokens / seconds
            log(f"round {r + 1}: {name:6s} {tokens} tokens in {seconds:.2f}s = {rate:.1f} tok/s")
    embedded.unload()
    d, o = percentile(direct, 50), percentile(ours, 50)
    overhead = (d - o) / d * 100
    return {
        "direct_tok_s_p50": round(d, 2),
        "ours_tok_s_p50": round(o, 2),
        "manager_overhead_pct": round(overhead, 2),
        "target_overhead_pct": 5.0,
        "target_overhead_met": overhead <= 5.0,
        "max_tokens": max_tokens,
    }


class _Instant:
    """Benchmark double: a backend that answers at once, so only the manager is timed."""

    name = "instant"

    def list_models(self) -> list[ModelInfo]:
        return [ModelInfo("m", self.name, 1)]

    def model_size(self, model: str) -> int:
        return 1

    def load(self, model: str) -> float:
        return 0.0

    def unload(self) -> None:
        pass

    def generate(
        self,
        model: str,
        messages: list[ChatMessage],
        params: GenerationParams,
        on_token: OnToken | None,
        cancel: threading.Event,
    ) -> Completion:
        return Completion(text="x", stop_reason="stop", completion_tokens=1, generation_ms=0.001)


def scheduler_overhead(quick: bool) -> dict[str, Any]:
    calls = 2_000 if quick else 20_000
    backend = _Instant()
    manager = ModelManager({"instant": backend})
    params, cancel = GenerationParams(), threading.Event()
    manager.generate(backend="instant", model="m", messages=PROMPT)
    bare, managed = [], []
    for _ in range(calls):
        t0 = time.perf_counter()
        backend.generate("m", PROMPT, params, None, cancel)
        t1 = time.perf_counter()
        manager.generate(
            backend="instant", model="m", messages=PROMPT, params=params, caller="BRICK"
        )
        t2 = time.perf_counter()
        bare.append(t1 - t0)
        managed.append(t2 - t1)
    overhead = [(m - b) * 1e6 for m, b in zip(managed, bare, strict=True)]
    p50, p99 = percentile(overhead, 50), percentile(overhead, 99)
    log(f"scheduler overhead over {calls} resident calls: p50 {p50:.1f} us, p99 {p99:.1f} us")
    return {
        "scheduler_overhead_p50_us": round(p50, 1),
        "scheduler_overhead_p99_us": round(p99, 1),
        "target_scheduler_overhead_us": 1000,
        "target_scheduler_overhead_met": p99 <= 1000,
    }


def _rss_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def backend_rss() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        (home / "config.toml").write_text('[models]\nbackend = "embedded"\nmax_tokens = 16\n')
        proc = BackendProcess(home)
        proc.start()
        try:
            assert proc.proc is not None
            before = _rss_kib(proc.proc.pid)
            with proc.client(events=True) as client:
                client.wait_event(lambda e: e.kind == "heartbeat")
                client.request(AskPersona(proto="BRICK", text="Say hello."))
                client.wait_event(lambda e: e.kind == "persona_reply", timeout=120)
            after = _rss_kib(proc.proc.pid)
        finally:
            proc.stop()
    idle, peak = before["VmRSS"] / 1024, after["VmHWM"] / 1024
    log(f"backend RSS: {idle:.0f} MiB idle, peak {peak:.0f} MiB with the model")
    return {
        "backend_rss_idle_mib": round(before["VmRSS"] / 1024, 1),
        "backend_rss_model_loaded_mib": round(after["VmRSS"] / 1024, 1),
        "backend_peak_rss_mib": round(after["VmHWM"] / 1024, 1),
    }


def run(quick: bool = False) -> dict[str, Any]:
    figures: dict[str, Any] = {"benchmark": "models", "quick": quick}
    figures.update(tokens_per_second(quick))
    met = verdict(figures["target_overhead_met"])
    log(f"manager overhead {figures['manager_overhead_pct']}%: {met}")
    figures.update(scheduler_overhead(quick))
    figures.update(backend_rss())
    return figures
