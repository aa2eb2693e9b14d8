"""Timing for the benchmarks: repeated runs and their median."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    """Run `fn` `repeat` times; return the seconds each run took."""
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def ms(values: list[float]) -> str:
    """Return "median X ms (min Y, n=N)" of durations in seconds."""
    return f"median {statistics.median(values) * 1e3:.3f} ms (min {min(values) * 1e3:.3f}, n={len(values)})"
