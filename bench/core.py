#!/usr/bin/env python3
"""Benchmarks of the pure core and the CLI's cold start. Prints figures; not a test.

Run: make bench   (or .venv/bin/python bench/core.py)
Targets (issue 2): negotiate between two 500-mode hosts < 1 ms median;
1,000-mode lineage load+validate+expand < 300 ms; `vucompat list` cold start < 250 ms.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from vucompat.core.compare import compare
from vucompat.core.mode import Capabilities
from vucompat.core.negotiate import negotiate
from vucompat.core.modeset import Host, ModeSet
from vucompat.core.tables import read_table
from vucompat_testing.tablegen import lineage_toml
from vucompat_testing.timing import ms, timed


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.vswitch.toml"
        path.write_text(lineage_toml(1000))
        first = timed(lambda: read_table(path), 1)
        warm = timed(lambda: read_table(path), 7)
        print(f"load+validate+expand, 1,000-mode lineage: first (imports jsonschema) {first[0] * 1e3:.1f} ms; "
              f"then {ms(warm)}   [target < 300 ms]")
        modes = list(read_table(path).modes)

    # two hosts of 500 modes: the destination is an older install (it shares only
    # the oldest 250 and has 250 of its own) whose backend offers what mode 100
    # needs, so negotiate walks past modes missing on one side and modes it cannot run
    source = Host("source", ModeSet({m.name: m for m in modes[:500]}))
    dest_caps = Capabilities(modes[100].abi)
    dest = Host("dest", ModeSet({m.name: m for m in modes[:250] + modes[500:750]}), dest_caps)
    result = negotiate(source, dest)
    print(f"negotiate 500 x 500 modes -> {result.mode.name if result.mode else None}, "
          f"{len(result.candidates)} candidates in its explanation")
    print(f"  decision, warm hosts (long-lived values): {ms(timed(lambda: negotiate(source, dest), 2000))}"
          "   [target < 1 ms]")
    print("  decision, fresh hosts (incl. sorting 1,000 modes): " + ms(timed(
        lambda: negotiate(Host("s", ModeSet(dict(source.modeset.modes))),
                          Host("d", ModeSet(dict(dest.modeset.modes)), dest_caps)), 200)))
    print("  decision + full explanation (what the CLI prints): "
          + ms(timed(lambda: negotiate(source, dest).candidates, 200)))

    pairs = [(random.choice(modes).abi, random.choice(modes).abi) for _ in range(10_000)]
    total = timed(lambda: [compare(a, b) for a, b in pairs], 5)
    print(f"10,000 compares: {ms(total)} per batch")

    exe = Path(sys.executable).parent / "vucompat"
    python = timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), 10)
    cold = timed(lambda: subprocess.run([str(exe), "list"], check=True, capture_output=True), 10)
    print(f"cold start `vucompat list`: {ms(cold)}   [target < 250 ms]; bare python start {ms(python)}; "
          f"ratio {statistics.median(cold) / statistics.median(python):.1f}x")


if __name__ == "__main__":
    main()
