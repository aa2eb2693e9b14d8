"""Every JSON output keeps its versioned contract (vucompat/core/contracts.py,
docs/cli.md "JSON contracts"): each command that offers `--format json`, found by
walking the click command tree, is run on real inputs (the shipped tables, host
directories, a real switch: ovsdb-server, ovs-vswitchd-dpdk, the agent, a testpmd
guest; a one-server fleet cluster) and its output validated against its shipped
schema; so are the Python API's values and a fleet HostRecord."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import click
import jsonschema
import pytest

from conftest import build_host, capabilities_toml
from vucompat.cli import main
from vucompat.core import catalog
from vucompat.core.contracts import COMMANDS, CONTRACTS, KEY, SCHEMA_DIR, VALUES, ContractError, validate
from vucompat.core.lock import LOCK_FILE
from vucompat.core.tables import shipped_tables_dir
from vucompat_testing import EXAMPLES
from vucompat_testing.switch import ENV, VUCOMPAT, Switch, eventually, negotiated, start_switch
from vucompat_testing.tablegen import table_text_until

DOCS = Path(__file__).parent.parent / "docs" / "cli.md"
INVALID = Path(__file__).parent / "fixtures" / "invalid"
V213_OFFER, V32_OFFER, PROTOCOL_OFFER = 0xD7C66A7CA, 0xD7C66A7CB, 0x10CBF
REPLY_ACK = '    "VHOST_USER_PROTOCOL_F_REPLY_ACK",\n'


# ---- the command tree and the registry of contracts -----------------------------------------------

def json_commands(group: click.Group = main, prefix: str = "") -> Iterator[str]:
    """Every command (as typed after `vucompat`) with a --format option that offers json.
    Through list_commands/get_command, so a lazily loaded subcommand counts too."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            yield from json_commands(command, path + " ")
        elif any(isinstance(p, click.Option) and "--format" in p.opts and isinstance(p.type, click.Choice)
                 and "json" in p.type.choices for p in command.params):
            yield path


@dataclass(frozen=True)
class Case:
    """One run of a command: its contract, the inputs it needs, its arguments."""

    command: str
    contract: str
    #: offline | switch | fleet: the fixture that provides the inputs
    env: str
    args: Callable[[Any], list[str]]
    codes: tuple[int, ...] = (0,)

    @property
    def id(self) -> str:
        return f"{self.command.replace(' ', '-')}:{self.contract.removeprefix('vucompat.')}"


def _erratum(env: Any) -> list[str]:
    """lint --erratum on a packager's lineage whose 2.8 lost REPLY_ACK (as test_errata)."""
    table = env.acme / "acme.ovs-dpdk.toml"
    table.write_text(table.read_text().replace(REPLY_ACK, ""))
    return ["lint", str(env.acme), "--erratum", "acme.ovs-dpdk.v2.8", "--reason", "DPDK 17.05 never offers REPLY_ACK",
            "--evidence", "https://github.com/DPDK/dpdk/blob/v17.05/lib/librte_vhost/vhost_user.h#L59"]


CASES = [
    # offline: the shipped tables and host directories
    Case("features", "vucompat.features", "offline", lambda e: ["features"]),
    Case("features", "vucompat.feature-decode", "offline", lambda e: ["features", "--decode", "0xd7c66a7ca"]),
    Case("features", "vucompat.feature-decode", "offline",
         lambda e: ["features", "--decode", "0x10cbf", "--mask", "protocol"]),
    Case("list", "vucompat.modes", "offline", lambda e: ["list"]),
    Case("list", "vucompat.modes", "offline", lambda e: ["list", "--host", str(e.old)]),
    Case("list", "vucompat.modes", "offline", lambda e: ["list", "--host", str(e.typed)]),  # runnable_by_type
    Case("show", "vucompat.mode", "offline", lambda e: ["show", "upstream.ovs-dpdk.v2.13", "--hex"]),
    Case("show", "vucompat.mode", "offline", lambda e: ["show", "upstream.ovs-dpdk.v2.8+recommended"]),
    Case("compare", "vucompat.comparison", "offline",
         lambda e: ["compare", "upstream.ovs-dpdk.v3.2", "upstream.ovs-dpdk.v2.13"]),
    Case("compare", "vucompat.comparison", "offline",
         lambda e: ["compare", "upstream.ovs-dpdk.v2.6", "upstream.ovs-dpdk.v3.2"], (1,)),
    Case("baseline", "vucompat.baseline", "offline",
         lambda e: ["baseline", "upstream.ovs-dpdk.v3.2", str(EXAMPLES / "capabilities-ovs-2.13.toml"), str(e.old)]),
    Case("negotiate", "vucompat.negotiation", "offline",
         lambda e: ["negotiate", "--source", str(e.new), "--dest", str(e.old)]),
    Case("negotiate", "vucompat.negotiation", "offline",
         lambda e: ["negotiate", "--source", str(e.new), "--dest", str(e.old), "--policy", "recommended"]),
    Case("negotiate", "vucompat.negotiation", "offline",  # none: the hosts give the name other contents
         lambda e: ["negotiate", "--source", str(e.new), "--dest", str(e.redefined), "--policy",
                    "acme.ovs-dpdk.v1.0"], (1,)),
    Case("negotiate", "vucompat.negotiation", "offline",  # none: neither backend runs it
         lambda e: ["negotiate", "--source", str(e.new), "--dest", str(e.old), "--policy",
                    "upstream.ovs-dpdk.v2.11"], (1,)),
    Case("lint", "vucompat.lint", "offline", lambda e: ["lint"]),
    Case("lint", "vucompat.lint", "offline", lambda e: ["lint", str(INVALID / "duplicate_version")], (1,)),
    Case("lint", "vucompat.lock-update", "offline", lambda e: ["lint", "--update-lock", str(e.unreleased)]),
    Case("lint", "vucompat.erratum", "offline", _erratum),
    Case("frontend-args", "vucompat.frontend-args", "offline",
         lambda e: ["frontend-args", "upstream.ovs-dpdk.v2.8", "--format", "json"]),
    Case("contracts", "vucompat.contracts", "offline", lambda e: ["contracts"]),
    # a real switch (ovsdb-server, ovs-vswitchd-dpdk, the agent, a testpmd guest) and another host
    Case("load", "vucompat.load", "switch",  # added; corrected by an erratum (no port uses it)
         lambda e: ["load", "--db", e.fresh.unix_remote, "--tables", str(e.corrected)]),
    Case("load", "vucompat.load", "switch",  # superseded but in use; pruned; kept in use
         lambda e: ["load", "--db", e.remote, "--tables", str(e.corrected), "--prune"]),
    Case("probe", "vucompat.probe", "switch",
         lambda e: ["probe", "--db", e.remote, "--ovs-rundir", str(e.switch.directory)]),
    Case("list", "vucompat.modes", "switch", lambda e: ["list", "--host", e.remote]),
    Case("relay status", "vucompat.relay-status", "switch",
         lambda e: ["relay", "status", "--relay-dir", str(e.switch.directory / "relays")]),
    Case("show", "vucompat.mode", "switch", lambda e: ["show", "acme.ovs-dpdk.v2.8", "--db", e.remote]),
    Case("port list", "vucompat.ports", "switch", lambda e: ["port", "list", "--db", e.remote]),
    Case("port show", "vucompat.port", "switch", lambda e: ["port", "show", "guest", "--db", e.remote]),
    Case("port show", "vucompat.port", "switch", lambda e: ["port", "show", "unrunnable", "--db", e.remote]),
    Case("port show", "vucompat.port", "switch", lambda e: ["port", "show", "packed", "--db", e.remote]),
    Case("check-migration", "vucompat.verdict", "switch",
         lambda e: ["check-migration", "--port", "guest", "--source", e.remote, "--dest", e.old.tcp_remote], (1,)),
    Case("check-migration", "vucompat.verdict", "switch",
         lambda e: ["check-migration", "--port", "guest", "--source", e.remote, "--dest", e.old.tcp_remote,
                    "--allow-outside-contract"]),
    Case("check-migration", "vucompat.verdict", "switch",
         lambda e: ["check-migration", "--port", "old-mode", "--source", e.remote, "--dest", e.old.tcp_remote]),
    Case("select-mode", "vucompat.selection", "switch",
         lambda e: ["select-mode", "--scope", "everywhere", "--host", e.remote, "--host", e.old.tcp_remote]),
    Case("select-mode", "vucompat.selection", "switch", lambda e: ["select-mode", "--scope", "none"]),
    Case("traits", "vucompat.traits", "switch", lambda e: ["traits", "--db", e.remote, "--format", "json"]),
    Case("plan-upgrade", "vucompat.upgrade-plan", "switch",
         lambda e: ["plan-upgrade", "--db", e.remote, "--tables", str(e.old_tables), "--capabilities",
                    str(EXAMPLES / "capabilities-ovs-2.13.toml")], (1,)),
    # a fleet cluster (one server) the hosts are published into, one of them stale
    Case("fleet status", "vucompat.cluster-status", "fleet", lambda e: ["fleet", "status", "--ctl", str(e.ctl)]),
    Case("fleet relay-status", "vucompat.fleet-relay-status", "fleet",
         lambda e: ["fleet", "relay-status", "--rundir", str(e.relay)]),
    Case("fleet hosts", "vucompat.fleet-hosts", "fleet", lambda e: ["fleet", "hosts", "--fleet", e.remote]),
    Case("fleet hosts", "vucompat.fleet-hosts", "fleet",  # through a read relay of the cluster
         lambda e: ["fleet", "hosts", "--fleet", e.relay_remote]),
    Case("fleet hosts", "vucompat.can-run", "fleet",
         lambda e: ["fleet", "hosts", "--fleet", e.remote, "--can-run", "upstream.ovs-dpdk.v3.2"]),
    Case("fleet hosts", "vucompat.can-run", "fleet",  # the backends of two hosts lack HOST_UFO
         lambda e: ["fleet", "hosts", "--fleet", e.remote, "--can-run", "upstream.ovs-dpdk.v2.11"]),
    Case("baseline", "vucompat.baseline", "fleet",  # f-bare's offer is not known: skipped
         lambda e: ["baseline", "pool:east", "--fleet", e.remote]),
    Case("fleet select-mode", "vucompat.selection", "fleet",
         lambda e: ["fleet", "select-mode", "--fleet", e.remote, "--scope", "everywhere"]),
    Case("fleet check-migration", "vucompat.verdict", "fleet",
         lambda e: ["fleet", "check-migration", "--fleet", e.remote, "--port", "vm1", "--source", "f-new", "--dest",
                    "f-old"], (1,)),
    Case("fleet check-migration", "vucompat.verdict", "fleet",
         lambda e: ["fleet", "check-migration", "--fleet", e.remote, "--port", "vm2", "--source", "f-new", "--dest",
                    "f-stale"]),
    Case("fleet report", "vucompat.pool-report", "fleet",
         lambda e: ["fleet", "report", "--fleet", e.remote, "--max-active", "1"], (1,)),
]


def test_every_command_that_offers_json_has_a_contract_and_is_run():
    offered = set(json_commands())
    assert offered, "no command offers --format json: the walk of the command tree is broken"
    assert offered - set(COMMANDS) == set(), "these commands offer --format json without a contract in COMMANDS"
    assert set(COMMANDS) - offered == set(), "COMMANDS names commands that do not offer --format json"
    run = {(c.command, c.contract) for c in CASES}
    forms = {(command, name) for command, names in COMMANDS.items() for name in names}
    assert forms - run == set(), "these forms of an output have no case in CASES"
    assert run - forms == set(), "these cases are not forms COMMANDS lists"
    assert set(CONTRACTS) == {n for names in COMMANDS.values() for n in names} | set(VALUES.values()), \
        "a contract that no output keeps"


def test_every_schema_is_a_valid_schema_of_its_contract_and_version():
    files = {p.name for p in SCHEMA_DIR.glob("*.schema.json")}
    assert files == {c.path.name for c in CONTRACTS.values()}, "a schema file without a contract, or the reverse"
    for contract in CONTRACTS.values():
        assert re.fullmatch(r"vucompat\.[a-z][a-z-]*", contract.name) and re.fullmatch(r"\d+\.\d+", contract.version)
        schema = json.loads(contract.path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["title"] == contract.id, f"{contract.path.name}: its title is not {contract.id}"
        if contract.stamped:
            assert schema["type"] == "object" and schema["properties"][KEY] == {
                "const": contract.id, "description": schema["properties"][KEY]["description"]}
            assert schema["required"][0] == KEY and schema["additionalProperties"] is False
        else:
            assert schema["type"] == "array" and schema["items"]["additionalProperties"] is False


def test_the_docs_list_every_contract_with_its_file_and_version():
    rows = re.findall(r"^\| `(vucompat\.[a-z-]+)` \| `([a-z-]+\.schema\.json)` \| ([0-9.]+) \|", DOCS.read_text(),
                      re.MULTILINE)
    assert sorted(rows) == sorted((c.name, c.path.name, c.version) for c in CONTRACTS.values())


def test_a_renamed_or_missing_key_breaks_the_contract(offline):
    """The schemas are strict enough to catch what would break a consumer."""
    data = _run(["negotiate", "--source", str(offline.new), "--dest", str(offline.old)])
    validate("vucompat.negotiation", data)
    renamed = {("explain" if k == "explanation" else k): v for k, v in data.items()}
    with pytest.raises(ContractError) as caught:
        validate("vucompat.negotiation", renamed)
    assert "'explain' was unexpected" in str(caught.value) and "'explanation' is a required property" in str(
        caught.value)
    with pytest.raises(ContractError, match="candidates/0/released"):
        validate("vucompat.negotiation", {**data, "candidates": [{**data["candidates"][0], "released": 2020}]})
    with pytest.raises(ContractError, match="'vucompat.negotiation/1.0' was expected"):
        validate("vucompat.negotiation", {**data, KEY: "vucompat.negotiation/0.9"})
    # a limit reported as a boolean
    gap = {"kind": "limit", "name": "max_queue_pairs", "required": True, "offered": False}
    status = {KEY: CONTRACTS["vucompat.mode-status"].id, "name": "m.v1", "released": None,
              "digest": "sha256:" + "0" * 64, "runnable": False, "unavailable": [gap]}
    with pytest.raises(ContractError, match="True is not of type 'integer'"):
        validate("vucompat.mode-status", status)


# ---- the inputs -----------------------------------------------------------------------------------

def packager_dir(root: Path, name: str) -> Path:
    """A packager's released lineage (acme.ovs-dpdk: the fc26 table under another name)
    and its released.lock, as test_errata makes it."""
    shipped = shipped_tables_dir()
    directory = root / name
    directory.mkdir()
    (directory / "acme.ovs-dpdk.toml").write_text((shipped / "fc26.ovs-dpdk.toml").read_text()
                                                  .replace('"fc26.ovs-dpdk"', '"acme.ovs-dpdk"'))
    head, *entries = (shipped / LOCK_FILE).read_text().split("\n[[errata]]")[0].split("\n[modes.")
    (directory / LOCK_FILE).write_text(head + "".join("\n[modes." + e.replace('"fc26.', '"acme.') for e in entries
                                                      if e.startswith('"fc26.')))
    return directory


@dataclass
class Offline:
    new: Path
    old: Path
    typed: Path
    redefined: Path
    unreleased: Path
    acme: Path


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Offline:
    """Host directories (new: the shipped tables and a site lineage, backend of OVS 3.2
    on both port types; old: tables up to 2.13, backend of 2.13; typed: the client ports
    offer more than the server ports; redefined: the site lineage with other contents),
    and a packager's lineage twice (unreleased: no lock entries; acme: released, for an
    erratum)."""
    root = tmp_path_factory.mktemp("contracts")
    names = catalog.mask_to_names
    new_offer = capabilities_toml(names(V32_OFFER, "virtio"), names(PROTOCOL_OFFER, "protocol"))
    old_offer = capabilities_toml(names(V213_OFFER, "virtio"), names(PROTOCOL_OFFER, "protocol"))
    typed_offer = old_offer + "\n[port_types.dpdkvhostuserclient]\n" + new_offer
    site = (EXAMPLES / "one-queue-pair" / "acme.ovs-dpdk.toml").read_text()
    redefined = site.replace("max_queue_pairs = 1\n", "max_queue_pairs = 2\n")
    assert redefined != site
    unreleased = packager_dir(root, "unreleased")
    (unreleased / LOCK_FILE).unlink()
    return Offline(new=build_host(root, "new", capabilities=new_offer, extra={"acme.ovs-dpdk.toml": site}),
                   old=build_host(root, "old", upstream_until="2.13", capabilities=old_offer),
                   typed=build_host(root, "typed", capabilities=typed_offer),
                   redefined=build_host(root, "redefined", capabilities=new_offer,
                                        extra={"acme.ovs-dpdk.toml": redefined}),
                   unreleased=unreleased, acme=packager_dir(root, "acme"))


@dataclass
class SwitchHosts:
    switch: Switch
    #: another host's registry (tables up to 2.13, the 2.13 backend), over TCP
    old: Any
    old_tables: Path
    #: a registry that holds a packager's lineage as released
    fresh: Any
    #: that lineage with an erratum to its v2.8
    corrected: Path

    @property
    def remote(self) -> str:
        return self.switch.server.unix_remote


@pytest.fixture(scope="module")
def switch_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwitchHosts]:
    """A real switch whose agent resolved a testpmd guest in the newest mode, a port on an
    old mode, one requesting a mode the backend cannot run, a packed-ring guest beyond
    its mode, and ports on a site lineage and on a packager's lineage whose v2.8 an
    erratum then corrected (loaded: ports keep the superseded definition); another
    host's registry; a registry holding the packager's lineage as released."""
    from vucompat.core.lint import add_erratum
    from vucompat_testing.ovsdb_server import OvsdbSandbox

    root = tmp_path_factory.mktemp("contracts-switch")
    released, corrected = packager_dir(root, "released"), packager_dir(root, "corrected")
    table = corrected / "acme.ovs-dpdk.toml"
    table.write_text(table.read_text().replace(REPLY_ACK, ""))
    add_erratum(corrected, "acme.ovs-dpdk.v2.8", "DPDK 17.05 never offers REPLY_ACK", ["vhost_user.h#L59"])

    def load(*args: str) -> None:
        subprocess.run([VUCOMPAT, "load", *args], check=True, capture_output=True, env=ENV)

    old_tables = root / "old"
    old_tables.mkdir()
    old_tables.joinpath("upstream.ovs-dpdk.toml").write_text(
        table_text_until((shipped_tables_dir() / "upstream.ovs-dpdk.toml").read_text(), "2.13"))
    servers = []
    try:
        for name, tcp in (("old", True), ("fresh", False)):
            server = OvsdbSandbox(Path(tempfile.mkdtemp(prefix=f"vuc-jc-{name}-", dir="/tmp")), tcp=tcp)
            servers.append(server)
            server.start()
        old, fresh = servers
        load("--db", old.unix_remote, "--host-name", "compute-old", "--tables", str(old_tables), "--capabilities",
             str(EXAMPLES / "capabilities-ovs-2.13.toml"))
        load("--db", fresh.unix_remote, "--host-name", "fresh", "--tables", str(released))
        for switch in start_switch(enforce=False, name="compute-new"):
            vs = switch.vswitchd
            # what ovs-ctl records when it starts OVS (the sandbox's vswitchd does not)
            version = subprocess.run(["ovs-vsctl", "--version"], capture_output=True, text=True).stdout.split()[3]
            vs.vsctl("set", "Open_vSwitch", ".", f"ovs_version={version}")
            load("--db", switch.server.unix_remote, "--tables", str(released))
            guest = switch.frontend("fe-guest", queues=1, queue_size=256)
            packed = switch.frontend("fe-packed", queues=2, queue_size=512, packed=True)
            vs.add_vhost_port("guest", guest.socket, compat="latest")
            vs.add_vhost_port("packed", packed.socket, compat="upstream.ovs-dpdk.v2.8")  # 2.8 has no packed rings
            for name, mode in (("old-mode", "upstream.ovs-dpdk.v2.9"), ("unrunnable", "upstream.ovs-dpdk.v2.11"),
                               ("site", "acme.ovs-dpdk.v1.0"), ("packaged", "acme.ovs-dpdk.v2.8")):
                vs.add_vhost_port(name, switch.directory / f"{name}.sock", compat=mode)
            for name in ("old-mode", "site", "packaged"):
                assert switch.mirrored(name)["vhost-compat-state"] == "applied", name
            assert switch.mirrored("unrunnable")["vhost-compat-state"] == "rejected"
            negotiated(switch, "guest")
            eventually(lambda: switch.port("guest")["verification"], timeout=30, what="the guest verified")
            eventually(lambda: switch.port("packed")["state"] == "nonconformant", timeout=30,
                       what="the packed-ring guest caught", explain=lambda: switch.explain("packed"))
            load("--db", switch.server.unix_remote, "--tables", str(corrected))  # v2.8 kept for its port
            # a relay process of its own (this agent enforces nothing); stopped with the agent
            subprocess.Popen([VUCOMPAT, "relay", "serve", "--relay-dir", str(switch.directory / "relays")], env=ENV,
                             stderr=subprocess.DEVNULL)
            eventually(lambda: (switch.directory / "relays" / "relayd.ctl").exists(), what="the relay process")
            yield SwitchHosts(switch, old, old_tables, fresh, corrected)
    finally:
        for server in servers:
            server.stop()
            shutil.rmtree(server.directory, ignore_errors=True)


@dataclass
class FleetHosts:
    #: the admin remote of the cluster's one server
    remote: str
    ctl: Path
    records: list[Any]
    #: the run directory of a read relay of the cluster, and its listener's remote
    relay: Path
    relay_remote: str


@pytest.fixture(scope="module")
def fleet_hosts(offline: Offline) -> Iterator[FleetHosts]:
    """A one-server fleet cluster made with the documented commands (create-cluster,
    start), a read relay of it (start-relay), and three hosts published into it as their
    agents do: f-new (OVS 3.2 backend; ports in several states), f-old (2.13), f-stale
    (no publish for long)."""
    from vucompat.core.portview import PortView
    from vucompat.cli.hosts import load_host
    from vucompat.core.fleet import HostRecord
    from vucompat_testing.net import free_port
    from vucompat.ovsdb.fleet_publish import publish
    from vucompat.ovsdb.session import Session
    from vucompat.ovsdb.schema import FLEET_DB
    from vucompat_testing.processes import stop_pid

    run = Path(tempfile.mkdtemp(prefix="vuc-jc-fleet-", dir="/tmp"))  # short: unix socket paths
    pid = relay_pid = None
    try:
        for args in (["create-cluster", "--db-file", str(run / "fleet.db"), "--local", f"tcp:127.0.0.1:{free_port()}"],
                     ["start", "--db-file", str(run / "fleet.db"), "--rundir", str(run),  # its own listener:
                      "--reader-listener", "ptcp:0:127.0.0.1"]):  # fleet status shows its bound port
            subprocess.run([VUCOMPAT, "fleet", *args], check=True, capture_output=True, timeout=60)
        pid = int((run / "fleet.pid").read_text())
        remote = f"unix:{run / 'fleet.sock'}"

        def record(directory: Path, name: str, pool: str | None, ports: dict[str, tuple[str, str]]) -> HostRecord:
            host = replace(load_host(directory), name=name)
            views = {}
            for iface, (requested, state) in ports.items():
                mode = host.modeset.expand(requested) if state == "applied" and requested != "passthrough" else None
                views[iface] = PortView(
                    name=iface, interface_uuid="", requested=requested,
                    resolved=None if state == "rejected" else requested, state=state,
                    error=f"{requested} is not runnable on this host" if state == "rejected" else None, mode=mode,
                    negotiated_features=mode.abi.virtio if mode else 0,
                    verification="conformant: the negotiated features and limits are within the mode" if mode
                    else None, interface_type="dpdkvhostuserclient")
            return HostRecord(host=host, ports=views, pool=pool, ovs_version="3.2.0", dpdk_version="22.11.4",
                              capabilities_source="declared" if host.capabilities else "none", heartbeat_interval=30,
                              agent_version="0.1.0")

        bare = build_host(run, "bare")  # no capabilities.toml: the offer is not known
        records = [record(offline.new, "f-new", "east", {"vm1": ("upstream.ovs-dpdk.v3.2", "applied"),
                                                         "vm2": ("upstream.ovs-dpdk.v2.13", "applied"),
                                                         "vm3": ("upstream.ovs-dpdk.v9.9", "rejected"),
                                                         "vm4": ("passthrough", "applied")}),
                   record(offline.old, "f-old", "east", {"vm5": ("upstream.ovs-dpdk.v2.9", "applied")}),
                   record(offline.typed, "f-stale", None, {}),
                   record(bare, "f-bare", "east", {})]
        session = Session(remote, FLEET_DB, 20)
        try:
            for one in records:
                assert publish(session, one).written
            session.transact([{"op": "update", "table": "Host", "where": [["name", "==", "f-stale"]],
                               "row": {"last_seen": 0}}])
        finally:
            session.close()
        subprocess.run([VUCOMPAT, "fleet", "start-relay", "--rundir", str(run / "relay"), "--cluster", remote,
                        "--reader-listener", "ptcp:0:127.0.0.1"], check=True, capture_output=True, timeout=60)
        relay_pid = int((run / "relay" / "relay.pid").read_text())
        status = ["fleet", "relay-status", "--rundir", str(run / "relay"), "--format", "json"]
        eventually(lambda: subprocess.run([VUCOMPAT, *status], capture_output=True).returncode == 0, timeout=30,
                   what="the relay to connect")
        (listener,) = json.loads(subprocess.run([VUCOMPAT, *status], capture_output=True, text=True,
                                                check=True).stdout)["listeners"]
        yield FleetHosts(remote, run / "fleet.ctl", records, run / "relay", f"tcp:127.0.0.1:{listener['bound_port']}")
    finally:
        stop_pid(relay_pid)
        stop_pid(pid)
        shutil.rmtree(run, ignore_errors=True)


_ENVS = {"offline": "offline", "switch": "switch_hosts", "fleet": "fleet_hosts"}


def _run(args: list[str], codes: tuple[int, ...] = (0,)) -> Any:
    """Run vucompat with `args` (adding --format json unless given) and return its parsed
    standard output; the exit code must be one of `codes`."""
    if "--format" not in args:
        args = [*args, "--format", "json"]
    done = subprocess.run([VUCOMPAT, *args], capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode in codes, f"vucompat {' '.join(args)}: exit {done.returncode}: {done.stderr}"
    return json.loads(done.stdout)


# ---- the outputs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=[f"{c.id}:{i}" for i, c in enumerate(CASES)])
def test_each_json_output_keeps_its_contract(case: Case, request: pytest.FixtureRequest):
    env = request.getfixturevalue(_ENVS[case.env])
    args = case.args(env)
    assert args[:len(case.command.split())] == case.command.split(), "the case runs another command"
    data = _run(args, case.codes)
    validate(case.contract, data)
    contract = CONTRACTS[case.contract]
    if contract.stamped:
        assert next(iter(data)) == KEY and data[KEY] == contract.id
    else:
        assert isinstance(data, list) and data, "an empty list proves nothing about its items"


def test_the_python_api_values_keep_their_contracts(switch_hosts: SwitchHosts):
    from vucompat.api import Client

    new, old = switch_hosts.remote, switch_hosts.old.tcp_remote
    with Client(timeout=10) as client:
        statuses = client.modes(old)
        assert {s.runnable for s in statuses} == {True, False}  # unavailable gaps too
        for status in statuses:
            validate("vucompat.mode-status", status.as_dict())
        for policy in ("latest", "recommended", "upstream.ovs-dpdk.v3.2"):
            validate("vucompat.negotiation", client.negotiate(new, old, policy).as_dict())
        for port, outside in (("guest", False), ("guest", True), ("old-mode", False), ("unrunnable", False)):
            validate("vucompat.verdict", client.check_migration(port, new, old, outside).as_dict())
        for scope in ("everywhere", "lineage=upstream.ovs-dpdk", "none"):
            validate("vucompat.selection", client.select_mode(scope, [new, old]).as_dict())


def test_a_published_host_record_keeps_its_contract(fleet_hosts: FleetHosts):
    states = set()
    for record in fleet_hosts.records:
        data = record.as_dict()
        validate("vucompat.host-record", data)
        states |= {p["state"] for p in data["ports"]}
        assert data["name"] == record.name and json.loads(json.dumps(data)) == data
    assert states == {"applied", "rejected"}
    by_name = {r.name: r.as_dict() for r in fleet_hosts.records}
    assert by_name["f-bare"]["capabilities"] is None and by_name["f-stale"]["capabilities"]["by_type"]
