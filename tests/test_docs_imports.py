"""What the docs and examples tell a user to import exists: every
`from vucompat... import name` in README.md, docs/*.md and examples/*.py resolves."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "examples").glob("*.py"))]
IMPORT = re.compile(r"^\s*from (vucompat[\w.]*) import \(?([\w, ]+)", re.MULTILINE)


def imports_in(path: Path) -> list[tuple[str, str]]:
    """(module, name) for each name a `from vucompat... import` line of `path` names."""
    return [(m.group(1), name.strip().split(" as ")[0]) for m in IMPORT.finditer(path.read_text())
            for name in m.group(2).split(",") if name.strip()]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_import_resolves(path: Path):
    missing = []
    for module, name in imports_in(path):
        try:
            found = importlib.import_module(module)
        except ImportError:
            missing.append(f"{module} (no such module)")
            continue
        if not hasattr(found, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"{module}.{name}")
    assert missing == []


def test_the_docs_name_imports_at_all():
    assert sum(len(imports_in(path)) for path in SOURCES) >= 5
