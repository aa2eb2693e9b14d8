#!/usr/bin/env python3
"""Cold start of the CLI against a bare Python start (issue 13). Prints figures; not a test.

Run: make bench-coldstart   (or .venv/bin/python bench/coldstart.py [ROUNDS])
Target: `vucompat list` <= 3x `python -c pass`, with a warm table cache.

Each round runs every command once, in turn (bare python first), each as a whole new
process: wall time from start to exit, and CPU time (user + system) of the child from
the kernel's accounting. Ratios are taken round by round against that round's bare
start, then the median is printed, so a machine that slows down mid-run does not skew
them. Commands:
- `vucompat list`, warm cache: the tables were loaded once before (the usual case);
- `vucompat list`, cold cache: an empty cache directory every run (the first run after
  an install or a table change: validation, expansion, and writing the entry);
- `vucompat list`, cache off (VUCOMPAT_NO_CACHE=1: validation every run, as before);
- `vucompat --help` (imports every command's module).
The children run with bytecode writing allowed and one warm-up run each, so they read
.pyc files as an installed package does.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 30
EXE = str(Path(sys.executable).parent / "vucompat")


def run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run `argv` to completion; return (wall, cpu) seconds of the child."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    base = {k: v for k, v in os.environ.items()
            if k not in ("PYTHONDONTWRITEBYTECODE", "VUCOMPAT_TABLES", "VUCOMPAT_NO_CACHE", "VUCOMPAT_CACHE_DIR")}
    with tempfile.TemporaryDirectory(prefix="vucompat-coldstart-") as tmp:
        warm_dir, cold_root = Path(tmp) / "warm", Path(tmp) / "cold"
        cold_root.mkdir()
        counter = iter(range(10**9))

        def cold_env() -> dict[str, str]:
            fresh = cold_root / str(next(counter))  # an empty cache directory for every run
            return {**base, "VUCOMPAT_CACHE_DIR": str(fresh)}

        commands = [
            ("python -c pass", [sys.executable, "-c", "pass"], lambda: base),
            ("vucompat list (warm cache)", [EXE, "list"], lambda: {**base, "VUCOMPAT_CACHE_DIR": str(warm_dir)}),
            ("vucompat list (cold cache)", [EXE, "list"], cold_env),
            ("vucompat list (cache off)", [EXE, "list"], lambda: {**base, "VUCOMPAT_NO_CACHE": "1"}),
            ("vucompat --help", [EXE, "--help"], lambda: base),
        ]
        for _, argv, env in commands:  # warm-up: bytecode written, the warm cache filled
            run(argv, env())
        walls: dict[str, list[float]] = {name: [] for name, _, _ in commands}
        cpus: dict[str, list[float]] = {name: [] for name, _, _ in commands}
        for _ in range(ROUNDS):
            for name, argv, env in commands:
                wall, cpu = run(argv, env())
                walls[name].append(wall)
                cpus[name].append(cpu)
            shutil.rmtree(cold_root)
            cold_root.mkdir()

    bare = "python -c pass"
    print(f"cold start, {ROUNDS} rounds, commands in turn; medians of whole processes "
          f"(wall; cpu = user + system of the child); ratio = median of per-round ratios to {bare!r}")
    print(f"  {'command':<28} {'wall ms':>8} {'cpu ms':>8} {'ratio wall':>11} {'ratio cpu':>10}")
    for name in walls:
        wall_ratio = statistics.median(w / b for w, b in zip(walls[name], walls[bare]))
        cpu_ratio = statistics.median(c / b for c, b in zip(cpus[name], cpus[bare]) if b > 0)
        target = "   [target <= 3x]" if name == "vucompat list (warm cache)" else ""
        print(f"  {name:<28} {statistics.median(walls[name]) * 1e3:8.1f} {statistics.median(cpus[name]) * 1e3:8.1f} "
              f"{wall_ratio:10.2f}x {cpu_ratio:9.2f}x{target}")


if __name__ == "__main__":
    main()
