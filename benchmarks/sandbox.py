"""Sandbox cold start, per runtime, side by side with a bare interpreter in the same run.

Each sample is one complete ``SecureCodeExecutor.run_python("pass")``: a fresh scratch
directory, the runtime's whole set-up (cgroup, seccomp program, OCI bundle...), the sandboxed
``python3 main.py`` and the clean-up, i.e. what a caller waits for. The baseline is
``/usr/bin/python3 -c pass`` (the interpreter the sandboxes run) spawned with
``subprocess.run``. Rounds interleave the contenders, rotating their order. Median of 20
(5 with ``--quick``). Targets: bubblewrap <= 5x bare, runsc <= 600 ms.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

from backend.sandbox import SecureCodeExecutor, default_runtimes
from benchmarks._common import log, summary, verdict

BARE = ["/usr/bin/python3", "-c", "pass"]
TARGET_BWRAP_X_BARE = 5.0
TARGET_RUNSC_MS = 600.0


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def run(quick: bool = False) -> dict[str, Any]:
    rounds = 5 if quick else 20
    contenders: dict[str, Callable[[], object]] = {
        "bare_python": lambda: subprocess.run(BARE, check=True),
    }
    figures: dict[str, Any] = {"benchmark": "sandbox", "quick": quick, "rounds": rounds}
    unavailable = {}
    for runtime in default_runtimes():
        why = runtime.available()  # probes once (a real sandboxed print), before timing
        if why is not None:
            unavailable[runtime.name] = why
            log(f"{runtime.name}: not available ({why})")
            continue
        executor = SecureCodeExecutor([runtime])
        contenders[runtime.name] = lambda ex=executor: _check(ex.run_python("pass"))
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for name in names:  # one warm-up each: page cache, first cgroup, ...
        contenders[name]()
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            samples[name].append(_timed(contenders[name]))
    for name in names:
        stats = summary(samples[name], digits=1)
        figures[f"{name}_ms"] = stats
        log(f"{name:14s} p50 {stats['p50']} ms  p99 {stats['p99']} ms")
    bare = summary(samples["bare_python"])["p50"] or 0.0
    if "bubblewrap" in samples:
        ratio = (summary(samples["bubblewrap"])["p50"] or 0.0) / bare
        figures["bubblewrap_x_bare"] = round(ratio, 2)
        figures["target_bubblewrap_x_bare"] = TARGET_BWRAP_X_BARE
        figures["target_bubblewrap_met"] = ratio <= TARGET_BWRAP_X_BARE
        log(f"bubblewrap {ratio:.2f}x bare: {verdict(ratio <= TARGET_BWRAP_X_BARE)}")
    if "runsc" in samples:
        p50 = summary(samples["runsc"])["p50"] or 0.0
        figures["target_runsc_ms"] = TARGET_RUNSC_MS
        figures["target_runsc_met"] = p50 <= TARGET_RUNSC_MS
        log(f"runsc {p50:.0f} ms: {verdict(p50 <= TARGET_RUNSC_MS)}")
    if "docker-gvisor" in samples:
        figures["docker-gvisor_x_bare"] = round(
            (summary(samples["docker-gvisor"])["p50"] or 0.0) / bare, 2
        )
    figures["unavailable"] = unavailable
    return figures


def _check(result: Any) -> None:
    if result.exit_code != 0:
        raise RuntimeError(f"sandboxed `pass` failed: {result}")
