"""The package's layers, read from its imports: nothing imports upward, the pure
core imports no shell, the planner imports only the core, and product code never
imports the test support (vucompat_testing). Every import counts, lazy ones in
function bodies and TYPE_CHECKING ones included."""

from __future__ import annotations

import ast
from pathlib import Path

import vucompat

PACKAGE = Path(vucompat.__file__).parent

#: what each part of the package may import from vucompat (by top-level part)
ALLOWED = {
    "core": {"core"},
    "vhostuser": {"core", "vhostuser"},
    "ovsdb": {"core", "ovsdb"},
    "agent": {"core", "vhostuser", "ovsdb", "agent"},
    "api": {"core", "ovsdb", "api"},
    "cli": {"core", "vhostuser", "ovsdb", "agent", "api", "cli"},
    # the optional os-vif plugin (extra vucompat[osvif]): a shell over os_vif/vif_plug_ovs
    "osvif": {"core", "ovsdb", "osvif"},
    # `python -m vucompat`: the command line (the relay process re-executes itself so)
    "__main__": {"cli"},
}
#: finer rules inside a part: module -> the parts it may import
NARROWER = {"agent.plan": {"core"}}
#: third-party libraries that make a module a shell: the core stays free of them
SHELL_LIBRARIES = {"ovs", "click", "socket", "subprocess", "threading"}


def part_of(module: str) -> str:
    """"vucompat.core.mode" -> "core"; "vucompat.api" -> "api"; "vucompat" -> ""."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports_of(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """Every module `source` imports, absolute, with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from vucompat.core import mode` imports the module vucompat.core.mode
            modules = [f"{base}.{alias.name}" for alias in node.names
                       if (PACKAGE.parent / f"{base}.{alias.name}".replace(".", "/")).with_suffix(".py").exists()]
            found += [(node.lineno, name) for name in modules or [base]]
    return found


def violations(root: Path = PACKAGE) -> list[str]:
    """One line per import that breaks the layers, as "file:line: what"."""
    out: list[str] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        is_package = rel.name == "__init__"
        module = ".".join(rel.parts[:-1] if is_package else rel.parts)
        part = part_of(module)
        if not part:
            continue
        inner = ".".join(module.split(".")[1:])
        allowed = NARROWER.get(inner, ALLOWED.get(part))
        if allowed is None:
            out.append(f"{rel}: part {part!r} is not a known layer (add it to ALLOWED)")
            continue
        for line, imported in imports_of(path.read_text(), module, is_package):
            where = f"{rel}.py:{line}"
            top = imported.split(".")[0]
            if top == "vucompat_testing":
                out.append(f"{where}: product code imports the test support ({imported})")
            elif top == "vucompat" and part_of(imported) and part_of(imported) not in allowed:
                out.append(f"{where}: {part} imports {imported} ({part_of(imported)} is not below it)")
            elif part == "core" and top in SHELL_LIBRARIES:
                out.append(f"{where}: the pure core imports {imported}")
    return out


#: violations being removed by work in flight (issue 13), as "file: imported module";
#: the test fails when one of them is gone too, so the list only shrinks
PENDING: set[str] = set()


def _key(violation: str) -> str:
    where, what = violation.split(": ", 1)
    if " imports " not in what and "test support" not in what:
        return violation
    imported = what.split("(")[-1].rstrip(")") if "test support" in what else what.split(" imports ")[1].split()[0]
    return f"{where.split(':')[0].removesuffix('.py')}.py: {imported}"


def test_no_layer_imports_upward_and_the_core_imports_no_shell():
    found = violations()
    assert [v for v in found if _key(v) not in PENDING] == []
    assert PENDING <= {_key(v) for v in found}, "a pending violation is gone: remove it from PENDING"


def test_the_check_sees_an_upward_import_a_shell_in_the_core_and_test_support(tmp_path):
    fake = tmp_path / "vucompat"
    for folder, text in {"core": "import ovs.db\nfrom vucompat.ovsdb import rpc\n",
                         "ovsdb": "def f():\n    from vucompat.agent.loop import Agent\n",
                         "agent": "from vucompat_testing.guest import Guest\n"}.items():
        (fake / folder).mkdir(parents=True)
        (fake / folder / "x.py").write_text(text)
    found = violations(fake)
    assert len(found) == 4, found
    assert any("core/x.py:1: the pure core imports ovs.db" in v for v in found)
    assert any("core/x.py:2: core imports vucompat.ovsdb" in v for v in found)
    assert any("ovsdb/x.py:2: ovsdb imports vucompat.agent.loop" in v for v in found)
    assert any("agent/x.py:1: product code imports the test support" in v for v in found)
