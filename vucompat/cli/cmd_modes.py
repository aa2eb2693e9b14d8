"""Commands on modes: features, list, show, compare, baseline, negotiate, lint."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import click

from vucompat.core.errors import UsageError
from vucompat.cli import _DB, _FORMAT, _TABLES, _conn, _connection_options, _emit, _modeset, main


@main.command()
@click.option("--decode", metavar="HEX", help="Print the feature names of a mask, e.g. 0xd7c66a7ca.")
@click.option("--mask", type=click.Choice(["virtio", "protocol"]), default="virtio", show_default=True,
              help="Which mask --decode reads.")
@_FORMAT
def features(decode: str | None, mask: str, fmt: str) -> None:
    """List the feature catalog (or decode a mask into names)."""
    from vucompat.core.contracts import stamp
    from vucompat.core import catalog
    from vucompat.cli import render

    if decode is not None:
        try:
            value = catalog.parse_hex(decode)
        except ValueError as err:
            raise UsageError(message=f"--decode: {err}") from None
        names = catalog.mask_to_names(value, mask)  # type: ignore[arg-type]
        _emit(fmt, stamp("vucompat.feature-decode", {"mask": mask, "hex": catalog.to_hex(value), "features": names}),
              lambda: "\n".join(names))
        return
    data = [{"name": f.name, "bit": f.bit, "mask": f.mask, "summary": f.summary,
             "requires": [list(g) for g in f.requires], "requirement_breaks_guest": f.requirement_breaks_guest,
             "host_dependent": f.host_dependent, "deprecated": f.deprecated, "guest_abi": f.guest_abi,
             "aliases": list(f.aliases)} for f in catalog.FEATURES]
    _emit(fmt, data, render.feature_table)


@main.command("list")
@_TABLES
@_DB
@click.option("--host", metavar="HOST",
              help="List this host's modes, with whether its backend can run each: a host directory "
                   "or the OVSDB remote of its registry.")
@_connection_options
@_FORMAT
def list_(tables: tuple[Path, ...], db: str | None, host: str | None, fmt: str, **kw: Any) -> None:
    """List the modes, newest first."""
    from vucompat.cli import render

    conn = _conn(kw)
    loaded = None
    if host:  # only a host's listing checks runnability: the plain one imports neither module
        from vucompat.cli.hosts import open_host
        from vucompat.core.compare import runnable

        loaded = open_host(host, **conn)
    registry = loaded.modeset if loaded else _modeset(tables, db, conn)
    capabilities = loaded.capabilities if loaded else None
    caps = capabilities.abi if capabilities else None
    types = capabilities.by_type if capabilities and capabilities.types_differ else {}
    rows, data = [], []
    for mode in registry.newest_first:
        verdict = runnable(mode.abi, caps) if loaded else None
        by_type = {t: runnable(mode.abi, offer) for t, offer in sorted(types.items())}
        item: dict[str, Any] = {"name": mode.name, "lineage": mode.lineage, "version": mode.version,
                                "released": mode.released.isoformat() if mode.released else None,
                                "digest": mode.digest}
        if mode.superseded_by:
            item["superseded_by"] = mode.superseded_by
        if verdict is not None:
            item.update(verdict.as_dict())
        if by_type:
            item["runnable_by_type"] = {t: v.as_dict() for t, v in by_type.items()}
        data.append(item)
        name = mode.name + (" (superseded by an erratum)" if mode.superseded_by else "")
        rows.append([name, item["released"] or "-", render.short_digest(mode.digest)]
                    + ([render.runnable_cell(verdict, by_type)] if loaded else []))
    header = ["NAME", "RELEASED", "DIGEST"] + (["RUNNABLE"] if loaded else [])
    offer = f"what the backend offers: {capabilities.source}\n" if capabilities else \
        ("what the backend offers: not known (every mode counts as runnable)\n" if loaded else "")
    _emit(fmt, data, lambda: offer + render.table(rows, header))


@main.command()
@click.argument("mode")
@_TABLES
@_DB
@click.option("--hex", "hex_masks", is_flag=True, help="Also print the masks in hex.")
@_connection_options
@_FORMAT
def show(mode: str, tables: tuple[Path, ...], db: str | None, hex_masks: bool, fmt: str, **kw: Any) -> None:
    """Show one mode, expanded (MODE+recommended: without deprecated features)."""
    from vucompat.core.contracts import stamp
    from vucompat.core import catalog
    from vucompat.cli import render

    expanded = _modeset(tables, db, _conn(kw)).expand(mode)
    data = stamp("vucompat.mode", expanded.as_dict())
    if hex_masks:
        data.update(virtio_mask=catalog.to_hex(expanded.abi.virtio), protocol_mask=catalog.to_hex(expanded.abi.protocol))
    _emit(fmt, data, lambda: render.mode_text(expanded, hex_masks))


@main.command()
@click.argument("a")
@click.argument("b")
@_TABLES
@_DB
@_connection_options
@_FORMAT
def compare(a: str, b: str, tables: tuple[Path, ...], db: str | None, fmt: str, **kw: Any) -> None:
    """Compare mode A with mode B: identical, superset, subset or incompatible.

    Exit 1 when incompatible."""
    from vucompat.core.contracts import stamp
    from vucompat.cli import render
    from vucompat.core.compare import compare as compare_abis

    registry = _modeset(tables, db, _conn(kw))
    result = compare_abis(registry.expand(a).abi, registry.expand(b).abi)
    _emit(fmt, stamp("vucompat.comparison", {"a": a, "b": b, **result.as_dict()}),
          lambda: render.comparison_text(a, b, result))
    if result.result == "incompatible":
        raise SystemExit(1)


_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]*$")


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@_TABLES
@_DB
@click.option("--fleet", "fleet_remotes", metavar="REMOTES", envvar="VUCOMPAT_FLEET",
              help="The fleet database that pool:NAME inputs are read from: comma-separated remotes of its "
                   "servers, as for `vucompat fleet`. Env: VUCOMPAT_FLEET.")
@click.option("--include-stale", is_flag=True, help="pool:NAME inputs count hosts that stopped publishing too.")
@click.option("--version", "version", metavar="VERSION",
              help="--format toml: the version of the entry (default: today's date, YYYY.MM.DD).")
@click.option("--append-to", "append_to", type=click.Path(path_type=Path, dir_okay=False), metavar="TABLE",
              help="--format toml: write the entry as the next version of this table file's lineage (a delta "
                   "on its last version) instead of a lineage's complete first version.")
@_connection_options
@click.option("--format", "fmt", type=click.Choice(["text", "json", "toml"]), default="text", show_default=True,
              help="text for people, json for programs, toml: a ready-to-paste [[mode]] table entry.")
def baseline(inputs: tuple[str, ...], tables: tuple[Path, ...], db: str | None, fleet_remotes: str | None,
             include_stale: bool, version: str | None, append_to: Path | None, fmt: str, **kw: Any) -> None:
    """The greatest configuration that every input can run.

    Each input is a mode name, a capabilities file (a path ending in .toml), a
    host (the OVSDB remote of its registry, unix:/tcp:/ssl:, or a host directory:
    what its backend offers), or pool:NAME (every fresh host of that pool of the
    fleet database, --fleet). Deprecated features are left out. --format toml
    prints it as a [[mode]] entry for a table file."""
    from datetime import date

    from vucompat.core import catalog
    from vucompat.core.contracts import stamp
    from vucompat.cli import render
    from vucompat.core.compare import baseline as baseline_of
    from vucompat.cli.hosts import REMOTE_PREFIXES, host_offer, load_host, open_host, open_pool
    from vucompat.core.tables import read_capabilities, read_table
    from vucompat.core.tomlwrite import mode_entry_toml

    if fmt != "toml" and (version or append_to):
        raise UsageError(message="--version and --append-to shape a table entry: give them with --format toml")
    today = date.today()
    version = version or today.strftime("%Y.%m.%d")
    if not _VERSION.match(version):
        raise UsageError(message=f"--version {version!r}: a version is letters, digits, '.', '_' and '-', "
                         "starting with a letter or digit (e.g. 2026.12.03 or 1.1)")
    previous = read_table(append_to).modes[-1] if append_to else None
    conn = _conn(kw)
    registry = None
    abis = []
    #: per input: what it was and, for hosts and pools, which hosts were used or skipped
    sources: list[dict[str, Any]] = []
    labels: list[str] = []
    for item in inputs:
        if item.startswith("pool:"):
            pool = item.removeprefix("pool:")
            if not pool:
                raise UsageError(message="pool:NAME: give the pool's name, e.g. pool:rack-1")
            if not fleet_remotes:
                raise UsageError(message=f"{item} is read from the fleet database: give --fleet REMOTES "
                                 "(or set VUCOMPAT_FLEET)")
            members = open_pool(pool, fleet_remotes, include_stale=include_stale, **conn)
            names = [h.name for h in members.used]
            abis += [host_offer(h, h.name) for h in members.used]
            sources.append({"input": item, "kind": "pool", "hosts": names, "skipped": dict(members.skipped)})
            labels.append(f"{item} ({', '.join(names)})")
        elif item.startswith(REMOTE_PREFIXES) or ("/" in item and not item.endswith(".toml")) or \
                Path(item).is_dir():
            host = open_host(item, **conn) if item.startswith(REMOTE_PREFIXES) else load_host(Path(item))
            abis.append(host_offer(host, item))
            sources.append({"input": item, "kind": "host", "hosts": [host.name], "skipped": {}})
            labels.append(host.name)
        elif item.endswith(".toml"):
            abis.append(read_capabilities(Path(item)).abi)
            sources.append({"input": item, "kind": "capabilities", "hosts": [], "skipped": {}})
            labels.append(item)
        else:
            registry = registry or _modeset(tables, db, conn)
            abis.append(registry.expand(item).abi)
            sources.append({"input": item, "kind": "mode", "hosts": [], "skipped": {}})
            labels.append(item)
    result = baseline_of(abis, inputs)
    if fmt != "toml":
        _emit(fmt, stamp("vucompat.baseline", {**result.as_dict(), "inputs": sources}),
              lambda: render.mode_text(result) + "\n" + render.baseline_sources_text(sources))
        return
    abi = result.abi
    comments = [(f"baseline of {', '.join(labels)} (vucompat baseline, {today.isoformat()}): the greatest "
                 "configuration every input can run, deprecated features left out."),
                f"The next version of {previous.lineage}: paste it at the end of {append_to}." if previous else
                "A lineage's complete first version: paste it under the lineage and summary of a new table file."]
    for source in sources:
        if source["kind"] == "pool":
            comments.append(f"{source['input']}: used {', '.join(source['hosts'])}")
            comments += [f"  skipped {name}: {why}" for name, why in source["skipped"].items()]
    if previous is not None and previous.abi.digest == abi.digest:
        comments.append(f"NOTE: v{previous.version} defines this already: the lineage may not need a new version")
    note = (f"baseline of {', '.join(labels)}: virtio {catalog.to_hex(abi.virtio)}, "
            f"protocol {catalog.to_hex(abi.protocol)}")
    entry = mode_entry_toml(abi, version, today, {"baseline": ", ".join(labels)}, note, comments,
                                   previous=previous.abi if previous else None)
    if append_to is not None:
        _check_appended(append_to, entry, abi)
    click.echo(entry, nl=False)


def _check_appended(table: Path, entry: str, abi: Any) -> None:
    """Read `table` with `entry` appended (in a scratch copy): an entry that would not
    load there (a version the file has, a date before its last) is a UsageError."""
    import tempfile

    from vucompat.core.errors import TableError
    from vucompat.core.tables import read_table

    with tempfile.TemporaryDirectory(prefix="vucompat-baseline-") as scratch:
        copy = Path(scratch) / table.name
        copy.write_text(table.read_text().rstrip("\n") + "\n\n" + entry)
        try:
            loaded = read_table(copy).modes[-1]
        except TableError as err:
            problems = "; ".join(p.message for p in err.problems)
            raise UsageError(message=f"the entry would not load at the end of {table}: {problems} "
                             "(give another --version)") from None
    if loaded.abi.digest != abi.digest:  # a renderer bug, never the user's
        raise AssertionError(f"the entry reads back as {loaded.abi.digest}, not {abi.digest}")


@main.command()
@click.option("--source", required=True, metavar="HOST",
              help="The source host: the OVSDB remote of its registry, or a directory of table files "
                   "(+ optional capabilities.toml).")
@click.option("--dest", required=True, metavar="HOST", help="The destination host, likewise.")
@click.option("--policy", default="latest", show_default=True,
              help="latest, recommended (latest minus deprecated features) or a mode name.")
@_connection_options
@_FORMAT
def negotiate(source: str, dest: str, policy: str, fmt: str, **kw: Any) -> None:
    """The newest mode both hosts define with the same digest and can run.

    Exit 1 when there is none; the candidates say why."""
    from vucompat.cli import render
    from vucompat.cli.hosts import open_host
    from vucompat.core.negotiate import negotiate as negotiate_hosts

    conn = _conn(kw)
    result = negotiate_hosts(open_host(source, **conn), open_host(dest, **conn), policy)
    _emit(fmt, result.as_dict(), lambda: render.negotiation_text(result))
    if result.mode is None:
        raise SystemExit(1)


@main.command()
@click.argument("dirs", nargs=-1, type=click.Path(path_type=Path))
@_TABLES
@click.option("--strict", is_flag=True, help="Warnings fail the lint too.")
@click.option("--update-lock", is_flag=True,
              help="Release: add the modes not yet in each DIR's released.lock (never changes an entry).")
@click.option("--erratum", metavar="MODE",
              help="Correct the released MODE in DIR's released.lock to what its table now defines, recording "
                   "an erratum (needs --reason and --evidence).")
@click.option("--reason", default="", help="--erratum: why the released definition was wrong.")
@click.option("--evidence", multiple=True, metavar="REF",
              help="--erratum: where the truth is written (upstream file, tag and line; an evidence fact). "
                   "Repeatable.")
@_FORMAT
def lint(dirs: tuple[Path, ...], tables: tuple[Path, ...], strict: bool, update_lock: bool, erratum: str | None,
         reason: str, evidence: tuple[str, ...], fmt: str) -> None:
    """Check table directories (default: the search path), their released.lock and
    its errata, and their evidence files.

    Exit 1 on errors (and on warnings with --strict)."""
    from vucompat.core.contracts import stamp
    from vucompat.cli import render
    from vucompat.core.lint import add_erratum, lint as lint_dirs, update_lock as add_to_lock
    from vucompat.core.tables import search_path

    # lint DIR checks DIR as `load --tables DIR` does, and what that search path would refuse
    search = search_path([*dirs, *tables], os.environ)
    targets = list(dirs) or search
    if update_lock or erratum:
        if not dirs or (erratum and len(dirs) != 1):
            raise UsageError(message="--update-lock and --erratum need the directory to release, "
                             "e.g. compat_tables/ (--erratum: one directory)")
        if erratum:
            done = add_erratum(dirs[0], erratum, reason, evidence)
            _emit(fmt, stamp("vucompat.erratum", done.as_dict()), lambda: f"{dirs[0]}: recorded the {done.describe()}")
            return
        added = {str(d): add_to_lock(d) for d in targets}
        _emit(fmt, stamp("vucompat.lock-update", {"added": added}), lambda: "\n".join(
            f"{d}: added {', '.join(names) or 'nothing'} to released.lock" for d, names in added.items()))
        return
    report = lint_dirs(targets, search if dirs else None)
    _emit(fmt, stamp("vucompat.lint", {"ok": not report.failed(strict), **report.as_dict()}),
          lambda: render.lint_text(report, strict))
    if report.failed(strict):
        raise SystemExit(1)


@main.command("frontend-args")
@click.argument("mode")
@_TABLES
@_DB
@click.option("--format", "fmt", type=click.Choice(["qemu", "libvirt", "json"]), default="qemu", show_default=True,
              help="qemu: -netdev/-device arguments; libvirt: <interface> settings; json: the properties.")
@click.option("--qemu-version", default="7.2", show_default=True,
              help="Only properties this QEMU release has (e.g. the USO ones need 8.2).")
@_connection_options
def frontend_args(mode: str, tables: tuple[Path, ...], db: str | None, fmt: str, qemu_version: str, **kw: Any) -> None:
    """The QEMU virtio-net-pci properties and libvirt settings that make the guest's
    frontend itself ask for no more than MODE (masking from the guest side)."""
    from vucompat.core.contracts import stamp
    from vucompat.core import frontend

    try:
        qemu = tuple(int(part) for part in qemu_version.split(".")[:2])
    except ValueError:
        raise UsageError(message=f"--qemu-version {qemu_version}: give MAJOR.MINOR, e.g. 8.2") from None
    expanded = _modeset(tables, db, _conn(kw)).expand(mode)
    if fmt == "json":
        import json

        click.echo(json.dumps(stamp("vucompat.frontend-args", {
            "mode": expanded.name, "digest": expanded.digest, "qemu_version": qemu_version,
            "virtio_net_pci": frontend.qemu_device_properties(expanded, qemu),  # type: ignore[arg-type]
            "queues": expanded.abi.max_queue_pairs,
            "masked_only_by_the_relay": frontend.features_without_property(expanded)}), indent=2))
    elif fmt == "libvirt":
        click.echo(frontend.libvirt_interface(expanded, qemu))  # type: ignore[arg-type]
    else:
        click.echo(frontend.qemu_args(expanded, qemu))  # type: ignore[arg-type]
