"""Sandbox cost per runtime, side by side in one run: a forged tool's call through the pool
of warm sandboxes vs a cold start vs in-process; and a cold ``pass`` vs a bare interpreter.

1. A forged tool's call: the program the Tool Forge runs for one call of ``word_count`` (its
   source loaded, called with JSON arguments, the JSON result read back), as
   ``SecureCodeExecutor.run_python`` runs it:
   - ``pool``: a warm sandbox is ready (the pool refilled since the last call; the wait is
     not timed), which is how a persona's calls, seconds apart, find it;
   - ``pool_back_to_back``: calls one right after the other, the pool refilling meanwhile
     (those that find none start cold; ``served`` says how many did not);
   - ``cold``: a sandbox started for the call (pool size 0);
   - ``in_process``: the same function called directly (the baseline).
   Targets (issue 16): pool p50 <= 15 ms on bubblewrap, <= 60 ms on runsc.
2. Cold start: ``run_python("pass")`` vs ``/usr/bin/python3 -c pass`` spawned with
   ``subprocess.run`` (targets: bubblewrap <= 5x bare, runsc <= 600 ms).

Rounds interleave the contenders of each part, rotating their order. 20 calls each (5 with
``--quick``); p50 and p99 in ms. ``call_<runtime>_pool_x_bare_python`` relates the pool's p50
to the bare interpreter's of the same run, which a loaded machine slows alike.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

from backend.forge.program import call_program, report
from backend.sandbox import Runtime, SecureCodeExecutor, default_runtimes
from benchmarks._common import log, summary, verdict

SOURCE = "def word_count(text):\n    return len(text.split())\n"
ARGS = {"text": "the quick brown fox jumps over the lazy dog"}
BARE = ["/usr/bin/python3", "-c", "pass"]
TARGET_POOL_MS = {"bubblewrap": 15.0, "runsc": 60.0}
TARGET_BWRAP_X_BARE = 5.0
TARGET_RUNSC_MS = 600.0


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def run(quick: bool = False) -> dict[str, Any]:
    rounds = 5 if quick else 20
    figures: dict[str, Any] = {"benchmark": "sandbox", "quick": quick, "rounds": rounds}
    runtimes: list[Runtime] = []
    unavailable = {}
    for runtime in default_runtimes():
        why = runtime.available()  # probes once (a real sandboxed print), before timing
        if why is None:
            runtimes.append(runtime)
        else:
            unavailable[runtime.name] = why
            log(f"{runtime.name}: not available ({why})")
    figures.update(_tool_calls(runtimes, rounds))
    figures.update(_cold_starts(runtimes, rounds))
    # Against the bare interpreter of the same run: a figure the machine's load moves less.
    bare = figures["bare_python_ms"]["p50"] or 1e-6
    for runtime in runtimes:
        pool = figures[f"call_{runtime.name}_pool_ms"]["p50"] or 0.0
        figures[f"call_{runtime.name}_pool_x_bare_python"] = round(pool / bare, 2)
        log(f"call {runtime.name} pool p50 = {pool / bare:.2f}x a bare `python3 -c pass`")
    figures["unavailable"] = unavailable
    return figures


def _tool_calls(runtimes: list[Runtime], rounds: int) -> dict[str, Any]:
    space: dict[str, Any] = {}
    exec(SOURCE, space)  # our own constant source: the in-process baseline
    function = space["word_count"]
    program = call_program("word_count", SOURCE, ARGS)

    def call(executor: SecureCodeExecutor) -> None:
        found, value = report(executor.run_python(program))
        if (found, value) != (True, 9):
            raise RuntimeError("the sandboxed call went wrong")

    out: dict[str, Any] = {}
    samples = {"in_process": [_timed(lambda: function(**ARGS)) for _ in range(rounds)]}
    base = summary(samples["in_process"], digits=4)["p50"] or 1e-6
    out["call_in_process_ms"] = summary(samples["in_process"], digits=4)
    for runtime in runtimes:
        name = runtime.name
        times, served = _measure_calls(runtime, rounds, call)
        out[f"call_{name}_pool_back_to_back_served"] = served
        for mode, values in times.items():
            stats = summary(values, digits=1)
            out[f"call_{name}_{mode}_ms"] = stats
            out[f"call_{name}_{mode}_x_in_process"] = round((stats["p50"] or 0) / base)
            log(f"call {name:13s} {mode:17s} p50 {stats['p50']} ms  p99 {stats['p99']} ms")
        if name in TARGET_POOL_MS:
            p50 = out[f"call_{name}_pool_ms"]["p50"] or 0.0
            met = p50 <= TARGET_POOL_MS[name]
            out[f"target_{name}_pool_ms"] = TARGET_POOL_MS[name]
            out[f"target_{name}_pool_met"] = met
            log(f"{name} pool p50 {p50} ms vs target {TARGET_POOL_MS[name]} ms: {verdict(met)}")
    return out


def _measure_calls(
    runtime: Runtime, rounds: int, call: Callable[[SecureCodeExecutor], None]
) -> tuple[dict[str, list[float]], int]:
    """Per mode, the call times in ms; and how many back-to-back calls the pool served."""
    cold = SecureCodeExecutor([runtime], pool_size=0)
    pooled = SecureCodeExecutor([runtime], pool_size=2)
    try:
        call(cold)  # warm-ups: page cache, the first cgroup, the pool's first fill
        pooled.warm_up()
        times: dict[str, list[float]] = {"pool": [], "cold": []}
        for r in range(rounds):
            for mode in ["pool", "cold"] if r % 2 == 0 else ["cold", "pool"]:
                if mode == "pool":
                    pooled.warm_up()  # a warm sandbox is ready, as between a persona's calls
                    _settle(pooled)
                    times["pool"].append(_timed(lambda: call(pooled)))
                else:
                    times["cold"].append(_timed(lambda: call(cold)))
        served = pooled.pool.served
        _settle(pooled)
        times["pool_back_to_back"] = [_timed(lambda: call(pooled)) for _ in range(rounds)]
        return times, pooled.pool.served - served
    finally:
        pooled.close()
        cold.close()


def _settle(pooled: SecureCodeExecutor, timeout: float = 30.0) -> None:
    """Wait until the pool is full and idle (no start or clean-up running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pooled.pool.ready() < pooled.pool.size:
        time.sleep(0.01)
    time.sleep(0.05)


def _cold_starts(runtimes: list[Runtime], rounds: int) -> dict[str, Any]:
    contenders: dict[str, Callable[[], object]] = {
        "bare_python": lambda: subprocess.run(BARE, check=True),
    }
    executors = []
    for runtime in runtimes:
        executor = SecureCodeExecutor([runtime], pool_size=0)
        executors.append(executor)
        contenders[runtime.name] = lambda ex=executor: _check(ex.run_python("pass"))
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for name in names:  # one warm-up each: page cache, first cgroup, ...
        contenders[name]()
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            samples[name].append(_timed(contenders[name]))
    out: dict[str, Any] = {}
    for name in names:
        stats = summary(samples[name], digits=1)
        out[f"{name}_ms"] = stats
        log(f"cold {name:14s} p50 {stats['p50']} ms  p99 {stats['p99']} ms")
    bare = summary(samples["bare_python"])["p50"] or 0.0
    if "bubblewrap" in samples:
        ratio = (summary(samples["bubblewrap"])["p50"] or 0.0) / bare
        out["bubblewrap_x_bare"] = round(ratio, 2)
        out["target_bubblewrap_x_bare"] = TARGET_BWRAP_X_BARE
        out["target_bubblewrap_met"] = ratio <= TARGET_BWRAP_X_BARE
        log(f"bubblewrap cold {ratio:.2f}x bare: {verdict(ratio <= TARGET_BWRAP_X_BARE)}")
    if "runsc" in samples:
        p50 = summary(samples["runsc"])["p50"] or 0.0
        out["target_runsc_ms"] = TARGET_RUNSC_MS
        out["target_runsc_met"] = p50 <= TARGET_RUNSC_MS
        log(f"runsc cold {p50:.0f} ms: {verdict(p50 <= TARGET_RUNSC_MS)}")
    if "docker-gvisor" in samples:
        out["docker-gvisor_x_bare"] = round(
            (summary(samples["docker-gvisor"])["p50"] or 0.0) / bare, 2
        )
    return out


def _check(result: Any) -> None:
    if result.exit_code != 0:
        raise RuntimeError(f"sandboxed `pass` failed: {result}")
