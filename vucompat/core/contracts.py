"""The JSON contracts: every JSON output of vucompat (each command's `--format json`,
the Python API's `as_dict()` values, a fleet HostRecord) has a name, a version and a
JSON Schema shipped in vucompat/schemas/contracts/ (docs/cli.md, "JSON contracts").

A version is MAJOR.MINOR, as os-vif versions its objects: MINOR grows when optional
keys are added (a consumer of MAJOR.x reads any later MAJOR.y, ignoring keys it does
not know); MAJOR grows for anything a consumer could break on (a key renamed, removed,
retyped or made nullable, a value's meaning changed). An object output says which
contract it keeps in its first key, `"schema": "<name>/<version>"`; a list output (a
bare JSON array, as it was before contracts) does not: `vucompat contracts` lists
them all with their versions.

The schemas are closed (required keys, types, no key they do not name), so a test
catches a renamed, missing or unexpected key; each one describes exactly the output of
the vucompat that ships it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from vucompat.core.errors import VucompatError

SCHEMA_DIR = Path(__file__).parent.parent / "schemas" / "contracts"
#: the key of an object output that names its contract
KEY = "schema"


class ContractError(VucompatError):
    """An output does not keep its contract (a vucompat bug, or a consumer's input
    that is not such an output). Fields: contract (its id), problems (strings)."""

    def render(self) -> str:
        problems = self.fields["problems"]
        return (f"not a valid {self.fields['contract']} ({len(problems)} problem(s)):\n"
                + "\n".join(f"  {p}" for p in problems))


@dataclass(frozen=True)
class Contract:
    """One JSON output's contract."""

    #: vucompat.<what>, e.g. vucompat.verdict
    name: str
    #: MAJOR.MINOR
    version: str
    #: what the output is, in a few words
    summary: str
    #: an object output with the `schema` key (False: a bare JSON array)
    stamped: bool = True

    @property
    def id(self) -> str:
        """<name>/<version>, the value of an object output's `schema` key."""
        return f"{self.name}/{self.version}"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def path(self) -> Path:
        """The shipped JSON Schema file."""
        return SCHEMA_DIR / f"{self.name.removeprefix('vucompat.')}.schema.json"

    @property
    def outputs(self) -> tuple[str, ...]:
        """Where vucompat produces it: CLI commands (their `--format json`), then Python values."""
        return tuple([" ".join(filter(None, ("vucompat", command, forms[self.name])))
                      for command, forms in COMMANDS.items() if self.name in forms]
                     + [value for value, name in VALUES.items() if name == self.name])

    def schema(self) -> dict[str, Any]:
        """The JSON Schema (parsed)."""
        return _schema(self.name)

    def validate(self, data: Any) -> None:
        """Check `data` against the schema; raise ContractError naming every problem
        (where, and what) when it does not keep the contract."""
        problems = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
                    for e in sorted(_validator(self.name).iter_errors(data), key=lambda e: list(map(str, e.path)))]
        if problems:
            raise ContractError(contract=self.id, problems=problems)


_ALL = (
    Contract("vucompat.features", "1.0", "the feature catalog", stamped=False),
    Contract("vucompat.feature-decode", "1.0", "the feature names of a mask"),
    Contract("vucompat.modes", "1.0", "modes, newest first (with --host: whether the host runs each)",
             stamped=False),
    Contract("vucompat.mode", "1.1", "one expanded mode"),
    Contract("vucompat.baseline", "1.0", "the greatest mode every input can run, and the inputs"),
    Contract("vucompat.comparison", "1.0", "how mode A compares with mode B"),
    Contract("vucompat.negotiation", "1.0", "the newest mode two hosts share, and the candidates tried"),
    Contract("vucompat.lint", "1.0", "what lint found"),
    Contract("vucompat.lock-update", "1.0", "the modes a release added to released.lock"),
    Contract("vucompat.erratum", "1.0", "an erratum recorded in released.lock"),
    Contract("vucompat.frontend-args", "1.0", "the QEMU properties that keep a frontend within a mode"),
    Contract("vucompat.load", "1.0", "what a load wrote into a registry"),
    Contract("vucompat.probe", "1.0", "what the live backend offers, per port type"),
    Contract("vucompat.ports", "1.1", "the ports the agent resolved", stamped=False),
    Contract("vucompat.port", "1.1", "one port the agent resolved"),
    Contract("vucompat.verdict", "1.1", "may a port live-migrate, and why"),
    Contract("vucompat.selection", "1.1", "the mode for a new port of a migration scope"),
    Contract("vucompat.traits", "1.0", "Placement traits and node labels of the runnable modes"),
    Contract("vucompat.upgrade-plan", "1.0", "what an upgrade would do to each port"),
    Contract("vucompat.cluster-status", "1.2", "one fleet server's view of its cluster, and its listeners"),
    Contract("vucompat.relay-status", "1.0", "the relay process: identity, upgrades in place, relays, open files"),
    Contract("vucompat.fleet-relay-status", "1.0", "a read relay of the fleet: connected to its source, listeners"),
    Contract("vucompat.fleet-hosts", "1.1", "the fleet's hosts"),
    Contract("vucompat.can-run", "1.1", "the fleet's hosts that can run a mode"),
    Contract("vucompat.pool-report", "1.1", "the modes in use per pool"),
    Contract("vucompat.mode-status", "1.0", "one mode of a host, and whether its backend runs it"),
    Contract("vucompat.host-record", "1.0", "what a host's agent publishes into the fleet"),
    Contract("vucompat.contracts", "1.0", "these contracts"),
)

#: name -> contract
CONTRACTS: Mapping[str, Contract] = {c.name: c for c in _ALL}

#: CLI command (as typed after `vucompat`) -> the contracts its `--format json` may
#: print: one per form of the output, with the option that selects it ("" for the
#: plain form). A test runs each form, and fails for a command that offers json
#: without an entry here.
COMMANDS: Mapping[str, Mapping[str, str]] = {
    "features": {"vucompat.features": "", "vucompat.feature-decode": "--decode HEX"},
    "list": {"vucompat.modes": ""},
    "show": {"vucompat.mode": ""},
    "compare": {"vucompat.comparison": ""},
    "baseline": {"vucompat.baseline": ""},
    "negotiate": {"vucompat.negotiation": ""},
    "lint": {"vucompat.lint": "", "vucompat.lock-update": "--update-lock", "vucompat.erratum": "--erratum MODE"},
    "frontend-args": {"vucompat.frontend-args": ""},
    "load": {"vucompat.load": ""},
    "probe": {"vucompat.probe": ""},
    "port list": {"vucompat.ports": ""},
    "port show": {"vucompat.port": ""},
    "check-migration": {"vucompat.verdict": ""},
    "select-mode": {"vucompat.selection": ""},
    "traits": {"vucompat.traits": ""},
    "plan-upgrade": {"vucompat.upgrade-plan": ""},
    "fleet status": {"vucompat.cluster-status": ""},
    "fleet relay-status": {"vucompat.fleet-relay-status": ""},
    "relay status": {"vucompat.relay-status": ""},
    "fleet hosts": {"vucompat.fleet-hosts": "", "vucompat.can-run": "--can-run MODE"},
    "fleet select-mode": {"vucompat.selection": ""},
    "fleet check-migration": {"vucompat.verdict": ""},
    "fleet report": {"vucompat.pool-report": ""},
    "contracts": {"vucompat.contracts": ""},
}

#: Python values whose as_dict() keeps a contract -> its name
VALUES: Mapping[str, str] = {
    "ModeStatus.as_dict() (Client.modes)": "vucompat.mode-status",
    "Negotiation.as_dict() (Client.negotiate)": "vucompat.negotiation",
    "Verdict.as_dict() (Client.check_migration)": "vucompat.verdict",
    "Selection.as_dict() (Client.select_mode)": "vucompat.selection",
    "HostRecord.as_dict() (what an agent publishes)": "vucompat.host-record",
}


def stamp(name: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` with the `schema` key of contract `name` first."""
    return {KEY: CONTRACTS[name].id, **data}


def validate(name: str, data: Any) -> None:
    """Check `data` against contract `name`; raise ContractError (KeyError for an
    unknown name)."""
    CONTRACTS[name].validate(data)


@lru_cache(maxsize=None)
def _schema(name: str) -> dict[str, Any]:
    import json  # lazy: `vucompat list` (text) imports this module and never reads a schema

    return json.loads(CONTRACTS[name].path.read_text())


@lru_cache(maxsize=None)
def _validator(name: str) -> Any:
    import jsonschema  # lazy: the import costs ~90 ms

    return jsonschema.Draft202012Validator(_schema(name))
