"""Helpers shared by the benchmarks: percentiles, progress lines, the final JSON line."""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any


def log(message: str) -> None:
    """A human-readable progress line (stdout, flushed so it interleaves correctly)."""
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", flush=True)


def emit(figures: dict[str, Any]) -> None:
    """The benchmark's one final line: a JSON object of figures."""
    print(json.dumps(figures, sort_keys=False), flush=True)
    sys.stdout.flush()


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary(values: Sequence[float], digits: int = 1) -> dict[str, float | None]:
    """n / p50 / p99 / max / mean of ``values`` (already in the unit to report); None when
    there are no values (JSON has no NaN)."""
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None, "mean": None}
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), digits),
        "p99": round(percentile(values, 99), digits),
        "max": round(max(values), digits),
        "mean": round(statistics.fmean(values), digits),
    }


def verdict(met: bool) -> str:
    return "MET" if met else "MISSED"
