"""Text output for people: aligned tables, features by name, colour only on a tty
(click strips the styles when stdout is not a terminal)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import click

from vucompat.core import catalog
from vucompat.core.mode import LIMITS, Mode

if TYPE_CHECKING:  # only annotations: `list` needs none of these modules
    from vucompat.core.compare import Comparison, Runnability
    from vucompat.core.lint import LintReport
    from vucompat.core.negotiate import Negotiation


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """Return rows aligned in columns under a header."""
    def width(cell: object) -> int:
        return len(click.unstyle(str(cell)))

    widths = [max(width(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c) + " " * (w - width(c)) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines[0] = click.style(lines[0], bold=True)
    return "\n".join(lines)


def short_digest(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def runnable_cell(verdict: Runnability | None, by_type: dict[str, Runnability] | None = None) -> str:
    """'yes', 'no: missing ...', or, where the port types differ, which type runs it."""
    if verdict is None:
        return ""
    if by_type and len({v.runnable for v in by_type.values()}) > 1:
        yes = [t for t, v in by_type.items() if v.runnable]
        no = "; ".join(f"{t} missing {v.describe()}" for t, v in by_type.items() if not v.runnable)
        return click.style(f"{', '.join(yes)} only", fg="yellow") + f" ({no})"
    if verdict.runnable:
        return click.style("yes", fg="green")
    return click.style("no", fg="red") + ": missing " + verdict.describe()


def feature_table() -> str:
    rows = []
    for f in catalog.FEATURES:
        notes = []
        if f.requires:
            need = "; ".join(" or ".join(g) for g in f.requires)
            notes.append(("needs " if not f.requirement_breaks_guest else "NEEDS ") + need)
        if f.host_dependent:
            notes.append("host-dependent")
        if f.deprecated:
            notes.append("deprecated")
        if not f.guest_abi:
            notes.append("not guest ABI")
        rows.append([f.mask, str(f.bit), f.name, ", ".join(notes)])
    legend = ("NEEDS: a guest refuses the device without it (an error in tables); "
              "needs: the spec asks for it (a lint warning)")
    return table(rows, ["MASK", "BIT", "NAME", "NOTES"]) + "\n\n" + legend


def mode_text(mode: Mode, hex_masks: bool = False) -> str:
    abi = mode.abi
    deprecated = set(abi.deprecated_features)
    host_dependent = set(abi.host_dependent_features)
    required = set(catalog.mask_to_names(abi.required_protocol, "protocol"))
    optional = set(abi.protocol_features) - required

    def feature_lines(names: list[str]) -> list[str]:
        out = []
        for name in names:
            marks = [m for m, s in (("deprecated", deprecated), ("host-dependent", host_dependent),
                                    ("required of the backend", required), ("optional", optional)) if name in s]
            out.append(f"  {name}" + (f"  ({', '.join(marks)})" if marks else ""))
        return out

    version = mode.version + (f"  ({mode.version_scheme} version scheme)" if mode.version_scheme != "natural" else "")
    fields = [("name", click.style(mode.name, bold=True)), ("lineage", mode.lineage), ("version", version),
              ("released", mode.released.isoformat() if mode.released else "-"), ("digest", mode.digest)]
    if mode.provenance:
        fields.append(("provenance", ", ".join(f"{k} {v}" for k, v in mode.provenance.items())))
    if mode.derived_from:
        fields.append(("derived from", ", ".join(mode.derived_from)))
    if mode.note:
        fields.append(("note", mode.note))
    if mode.superseded_by:
        fields.append(("SUPERSEDED", f"an erratum corrected this definition to {mode.superseded_by}; ports still "
                                     "use it, so this registry keeps it for them"))
    fields += [(k, str(abi.limit(k))) for k in LIMITS]
    if hex_masks:
        fields += [("virtio mask", catalog.to_hex(abi.virtio)), ("protocol mask", catalog.to_hex(abi.protocol))]
    width = max(len(k) for k, _ in fields)
    lines = [f"{k.ljust(width)}  {v}" for k, v in fields]
    lines.append(f"virtio features ({len(abi.virtio_features)}):")
    lines += feature_lines(abi.virtio_features)
    lines.append(f"protocol features ({len(abi.protocol_features)}):")
    lines += feature_lines(abi.protocol_features)
    return "\n".join(lines)


def comparison_text(a: str, b: str, result: Comparison) -> str:
    colour = {"identical": "green", "incompatible": "red"}.get(result.result, "yellow")
    verb = {"identical": "is identical to", "superset": "is a superset of", "subset": "is a subset of",
            "incompatible": "is incompatible with"}[result.result]
    lines = [f"{a} {click.style(verb, fg=colour, bold=True)} {b}"]
    for d in result.responsible:
        if d.kind == "limit":
            lines.append(f"  {d.name}: {d.a} vs {d.b}")
        else:
            lines.append(f"  {'+' if d.a else '-'} {d.name}  (only in {a if d.a else b})")
    return "\n".join(lines)


def negotiation_text(result: Negotiation) -> str:
    if result.mode is not None:
        head = click.style(f"mode: {result.mode.name}", fg="green", bold=True) + f"  ({result.mode.digest})"
    else:
        head = click.style("mode: none", fg="red", bold=True)
    lines = [head, result.explain(), "candidates, newest first:"]
    rows = []
    for c in result.candidates:
        verdict = click.style("chosen", fg="green") if c.qualifies else \
            click.style("refused", fg="red") + ": " + "; ".join(r.describe() for r in c.reasons)
        rows.append([f"  {c.name}", c.released or "-", verdict])
    if rows:
        lines.append(table(rows, ["  NAME", "RELEASED", "VERDICT"]))
    else:
        lines.append("  (neither host defines any mode)")
    return "\n".join(lines)


def lint_text(report: LintReport, strict: bool) -> str:
    lines = [click.style("error: ", fg="red", bold=True) + str(p) for p in report.errors]
    lines += [click.style("warning: ", fg="yellow") + str(p) for p in report.warnings]
    lines += [click.style("note: ", fg="cyan") + e.describe() for e in report.errata]
    verdict = "FAILED" if report.failed(strict) else "ok"
    lines.append(f"lint {verdict}: {len(report.errors)} error(s), {len(report.warnings)} warning(s), "
                 f"{report.checked} released mode(s) checked against the lock, {report.evidenced} against evidence")
    return "\n".join(lines)


def state_cell(state: str) -> str:
    colour = {"applied": "green", "rejected": "red", "nonconformant": "red"}.get(state, "yellow")
    return click.style(state, fg=colour, bold=state != "applied")


def port_text(data: dict) -> str:
    fields = [("interface", data["interface"]), ("requested", data["requested"])]
    if data.get("rule"):
        fields.append(("rule", data["rule"] + (f": {data['rule_detail']}" if data.get("rule_detail") else "")))
    if data.get("iface_id"):
        fields.append(("iface-id", data["iface_id"]))
    fields += [("resolved", data["resolved"] or "-"), ("state", state_cell(data["state"]))]
    if data["error"]:
        fields.append(("error", data["error"]))
    if data["verification"]:
        fields.append(("verification", data["verification"]))
    if data.get("relay_socket"):
        if data.get("frontend_socket"):  # dpdkvhostuserclient: OVS connects to the relay, the relay to the frontend
            fields.append(("sockets", f"OVS -> relay {data['relay_socket']} -> frontend {data['frontend_socket']}"))
        else:  # dpdkvhostuser: the frontend connects to the relay, the relay to OVS
            fields.append(("sockets", f"frontend -> relay {data['relay_socket']} (use this path) -> OVS"))
    if data["negotiated"]:
        fields.append(("negotiated", ", ".join(f"{k}={v}" for k, v in data["negotiated"].items())))
    width = max(len(k) for k, _ in fields)
    lines = [f"{k.ljust(width)}  {v}" for k, v in fields]
    offending = {o["name"] for o in data["offending"]}
    if data["negotiated_features"]:
        lines.append(f"negotiated features ({len(data['negotiated_features'])}):")
        lines += [f"  {n}" + (click.style("  (beyond the mode)", fg="red") if n in offending else "")
                  for n in data["negotiated_features"]]
    return "\n".join(lines)


# ---- table entries (TOML) -----------------------------------------------------------------------

def baseline_sources_text(sources: Sequence[Mapping[str, Any]]) -> str:
    """What a baseline was computed from: per input, the hosts used and skipped."""
    lines = ["computed from:"]
    for source in sources:
        line = f"  {source['input']}  ({source['kind']}"
        hosts = source.get("hosts") or []
        if source["kind"] == "pool":
            line += f": {len(hosts)} host(s) used: {', '.join(hosts)}"
        elif source["kind"] == "host" and hosts and hosts != [source["input"]]:
            line += f" {hosts[0]}"
        lines.append(line + ")")
        lines += [f"    skipped {name}: {why}" for name, why in source.get("skipped", {}).items()]
    return "\n".join(lines)
