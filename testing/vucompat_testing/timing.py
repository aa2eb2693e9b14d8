"""Timing for the benchmarks and the tests: repeated runs and their median; a call
that must not hang."""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any, Callable


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


def within(seconds: float, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) in a thread; return what it returns, raise what it raises. Fails
    (AssertionError, rather than hang the test) when it takes longer than `seconds`."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn(*args)
        except BaseException as err:  # noqa: BLE001 - handed to the caller
            result["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{getattr(fn, '__name__', fn)} blocked for more than {seconds} s"
    if "error" in result:
        raise result["error"]
    return result.get("value")
