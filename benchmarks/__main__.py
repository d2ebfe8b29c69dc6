"""``python -m benchmarks [--quick] [NAME ...]``: run all benchmarks, or the named ones.

Each benchmark prints progress lines, then exactly one final line: a JSON object of figures.
Missed targets are reported, never fatal; the exit status is non-zero only if a benchmark
crashed (its final line is then ``{"benchmark": NAME, "error": ...}``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback

from benchmarks._common import emit

BENCHMARKS = {
    "protocol_rtt": "round trip of a ~1 KB command: ours vs. raw pyzmq and jupyter_client",
    "image_save": "image save of 4 x 10,000 interactions vs. pickle+fsync; pings during saves",
    "swaps": "1,000 atomic swaps under 4 concurrently invoking clients",
    "models": "embedded tokens/s via ModelManager vs direct llama.cpp; scheduler overhead; RSS",
    "ui_frames": "200 morphs under 10 Hz events: 3 runs, one texture + culling vs baseline",
    "sandbox": "forged-tool call via warm pool vs cold start vs in-process; cold start vs bare",
    "dialogue": "debugger step/continue/edit latency; checkpoint bytes, 1,000 steps pruned or not",
    "memory": "100k memories: IVF_PQ and HNSW-SQ recall@10/p50 vs exact; ingest chunks/s; RSS",
    "forge": "forged-tool call via each sandbox vs in-process; forge success on 10 tasks",
    "learning": "CPU fine-tune s per 100 examples; ALFRED's judged win rate of the candidate",
    "restart": "backend restart after a crash with 100k unsaved journal records vs empty journal",
    "checkpoints_pg": "debugger step/edit/history p95 with checkpoints on PostgreSQL vs SQLite",
    "memory_s3": "memory ingest chunks/s and search p50 on S3 (SeaweedFS) vs local disk",
    "openai_server": "tokens/s via our OpenAI-compatible backend vs the openai client, same server",
    "startup": "workbench start: first frame, backend ready, ready to ask, quit vs bare Kivy",
    "mind": "capable model: forge 24 tasks on hidden checks; judge 18 pairs; chat + speed",
    "prompt_cache": "persona-reply TTFT with the system-prefix cache vs without, personas in turn",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        epilog="benchmarks: " + "; ".join(f"{k}: {v}" for k, v in BENCHMARKS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    crashed = 0
    for name in args.names or list(BENCHMARKS):
        print(f"== {name}: {BENCHMARKS[name]}{' (quick)' if args.quick else ''}", flush=True)
        started = time.perf_counter()
        try:
            figures = importlib.import_module(f"benchmarks.{name}").run(quick=args.quick)
        except Exception as exc:
            crashed += 1
            traceback.print_exc(file=sys.stdout)
            figures = {"benchmark": name, "error": f"{exc.__class__.__name__}: {exc}"}
        figures["seconds"] = round(time.perf_counter() - started, 1)
        emit(figures)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
