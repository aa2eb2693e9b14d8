"""Test, demo and benchmark support for vucompat: sandboxes for the daemons the
tests start, process helpers, table generators and the synthetic fleet publisher.
Its own distribution (testing/pyproject.toml), installed editable into the
development venv; never in the vucompat wheel, never imported by product code."""

from pathlib import Path

#: the source tree of this (editable) install: examples/, compat_tables/, run/
REPO = Path(__file__).resolve().parents[2]
#: sample files shipped for users, also used by the tests, the demo and the benchmarks
EXAMPLES = REPO / "examples"
