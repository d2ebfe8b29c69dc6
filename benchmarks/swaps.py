"""1,000 atomic swaps of BRICK while four clients keep invoking the method being swapped.

Against a real backend subprocess: ``work(self, x)`` (returns ``x * 2``) is defined on BRICK;
four threads, each with its own ``Client``, invoke it in a loop; a fifth thread performs the
swaps, each ``describe_proto`` (for the version) then ``swap_proto`` with the method's source
(a varied comment) and a new state ``{"n": i}``.

Must hold: no invoke fails (no ``ErrorReply``, no timeout, always ``2 * x``), and no swap is
refused as ``stale_version`` (there is only one swapper). Reports swap latency p50/p99.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks._common import log, summary, verdict

NAME = "swaps"
PROTO = "BRICK"
INVOKERS = 4
WORK_SOURCE = "def work(self, x):\n    return x * 2\n"


def _work_source(i: int) -> str:
    return f"# swap {i}\n{WORK_SOURCE}"


def run(quick: bool = False) -> dict[str, Any]:
    from backend.launcher import BackendProcess
    from shared_api.commands import DefineMethod, DescribeProto, Invoke, SwapProto
    from shared_api.errors import ErrorReply, RequestTimeout
    from shared_api.replies import InvokeResult, ProtoDescription, ProtoUpdated

    swaps = 100 if quick else 1_000
    log(f"{NAME}: {swaps} swaps of {PROTO} under {INVOKERS} concurrently invoking clients")

    stop = threading.Event()
    invoke_ms: list[list[float]] = [[] for _ in range(INVOKERS)]
    invoke_failures: Counter[str] = Counter()
    failure_examples: list[str] = []
    fail_lock = threading.Lock()

    def fail(reason: str, example: str) -> None:
        with fail_lock:
            invoke_failures[reason] += 1
            if len(failure_examples) < 5:
                failure_examples.append(example[:300])

    def invoker(slot: int, backend: BackendProcess) -> None:
        x = slot * 1_000_000_000
        with backend.client(timeout=10.0) as client:
            while not stop.is_set():
                x += 1
                t0 = time.perf_counter()
                try:
                    reply = client.call_raw(
                        "invoke", Invoke(proto=PROTO, method="work", args={"x": x})
                    )
                except RequestTimeout as exc:
                    fail("timeout", str(exc))
                    continue
                except Exception as exc:  # anything else is a failed request too
                    fail(f"exception:{exc.__class__.__name__}", str(exc))
                    continue
                invoke_ms[slot].append((time.perf_counter() - t0) * 1000.0)
                if isinstance(reply, ErrorReply):
                    fail(f"error:{reply.code}", reply.message)
                elif not isinstance(reply, InvokeResult):
                    fail(f"reply:{reply.kind}", repr(reply))
                elif reply.result != 2 * x:
                    fail("wrong_result", f"work({x}) returned {reply.result!r}")

    swap_ms: list[float] = []
    cycle_ms: list[float] = []
    stale = 0
    swap_errors: Counter[str] = Counter()
    final: ProtoDescription | None = None
    invokes_during = 0
    elapsed = 0.0
    with tempfile.TemporaryDirectory(prefix="entropic-bench-") as tmp:
        backend = BackendProcess(Path(tmp) / "home")
        backend.start()
        threads: list[threading.Thread] = []
        try:
            with backend.client(timeout=30.0) as ctl:
                ctl.request(DefineMethod(proto=PROTO, name="work", source=WORK_SOURCE))
                threads = [
                    threading.Thread(
                        target=invoker, args=(i, backend), name=f"invoker-{i}", daemon=True
                    )
                    for i in range(INVOKERS)
                ]
                for t in threads:
                    t.start()
                time.sleep(0.3)  # the invokers are in full swing before the first swap
                before = sum(len(s) for s in invoke_ms)
                started = time.perf_counter()
                for i in range(swaps):
                    t0 = time.perf_counter()
                    desc = ctl.request(DescribeProto(proto=PROTO))
                    assert isinstance(desc, ProtoDescription)
                    t1 = time.perf_counter()
                    reply = ctl.call_raw(
                        "swap_proto",
                        SwapProto(
                            proto=PROTO,
                            base_version=desc.version,
                            methods={"work": _work_source(i)},
                            state={"n": i},
                        ),
                    )
                    t2 = time.perf_counter()
                    swap_ms.append((t2 - t1) * 1000.0)
                    cycle_ms.append((t2 - t0) * 1000.0)
                    if isinstance(reply, ErrorReply):
                        if reply.code == "stale_version":
                            stale += 1
                        else:
                            swap_errors[str(reply.code)] += 1
                    elif not isinstance(reply, ProtoUpdated):
                        swap_errors[reply.kind] += 1
                    if (i + 1) % max(1, swaps // 5) == 0:
                        log(
                            f"{i + 1}/{swaps} swaps, "
                            f"{sum(len(s) for s in invoke_ms)} invokes so far, "
                            f"{sum(invoke_failures.values())} failed"
                        )
                elapsed = time.perf_counter() - started
                invokes_during = sum(len(s) for s in invoke_ms) - before
                stop.set()
                for t in threads:
                    t.join(30)
                final_reply = ctl.request(DescribeProto(proto=PROTO))
                assert isinstance(final_reply, ProtoDescription)
                final = final_reply
        finally:
            stop.set()
            for t in threads:
                t.join(30)
            backend.stop()

    failures = sum(invoke_failures.values())
    completed = sum(len(s) for s in invoke_ms)
    swap_st = summary(swap_ms, 2)
    cycle_st = summary(cycle_ms, 2)
    inv_st = summary([v for s in invoke_ms for v in s], 2)
    final_ok = (
        final is not None
        and final.state == {"n": swaps - 1}
        and final.methods.get("work") == _work_source(swaps - 1)
    )
    log(
        f"swap_proto latency: p50 {swap_st['p50']} ms, p99 {swap_st['p99']} ms, max "
        f"{swap_st['max']} ms; describe+swap cycle p50 {cycle_st['p50']} ms, p99 "
        f"{cycle_st['p99']} ms ({swaps / elapsed:.0f} swaps/s)"
    )
    log(
        f"invokes: {completed} completed ({invokes_during} during the swaps, "
        f"{invokes_during / elapsed:.0f}/s), p50 {inv_st['p50']} ms, p99 {inv_st['p99']} ms"
    )
    kinds = f" {dict(invoke_failures)}" if invoke_failures else ""
    log(f"failed invokes: {failures}{kinds} (must be 0): {verdict(failures == 0)}")
    for example in failure_examples:
        log(f"  e.g. {example}")
    log(
        f"stale_version swaps: {stale} (must be 0): {verdict(stale == 0)}; other swap errors: "
        f"{dict(swap_errors) or 0}; final version {final.version if final else '?'}, final "
        f"state and method match the last swap: {final_ok}"
    )
    return {
        "benchmark": NAME,
        "quick": quick,
        "swaps": swaps,
        "invokers": INVOKERS,
        "swap_p50_ms": swap_st["p50"],
        "swap_p99_ms": swap_st["p99"],
        "swap_max_ms": swap_st["max"],
        "describe_swap_cycle_p50_ms": cycle_st["p50"],
        "describe_swap_cycle_p99_ms": cycle_st["p99"],
        "swaps_per_s": round(swaps / elapsed, 1) if elapsed else None,
        "stale_version_swaps": stale,
        "other_swap_errors": sum(swap_errors.values()),
        "invokes_completed": completed,
        "invokes_during_swaps": invokes_during,
        "invoke_p50_ms": inv_st["p50"],
        "invoke_p99_ms": inv_st["p99"],
        "invoke_failures": failures,
        "invoke_failure_kinds": dict(invoke_failures),
        "final_version": final.version if final else None,
        "final_state_ok": final_ok,
        "zero_failures_met": failures == 0 and stale == 0 and not swap_errors,
    }
