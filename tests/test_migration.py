"""Migration decisions: the pure rules, a property, and the API and CLI against
real ovsdb-servers standing for three hosts."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from vucompat_testing import EXAMPLES
from vucompat_testing.ovsdb_server import select
from vucompat_testing.tablegen import table_text_until
from vucompat.core import catalog
from vucompat.api import Client
from vucompat.core.migration import Scope, check_migration, select_mode
from vucompat.core.mode import Capabilities
from vucompat.ovsdb import rpc
from vucompat.core.portview import PortView
from vucompat.core.modeset import Host
from vucompat.core.tables import load_modeset, read_capabilities

VUCOMPAT = str(Path(sys.executable).parent / "vucompat")
V213_OFFER = 0xD7C66A7CA
V32_OFFER = 0xD7C66A7CB


@pytest.fixture
def hosts(shipped: Path, tmp_path: Path) -> dict[str, Host]:
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    (old_dir / "upstream.ovs-dpdk.toml").write_text(
        table_text_until((shipped / "upstream.ovs-dpdk.toml").read_text(), "2.13"))
    new_caps = read_capabilities(EXAMPLES / "capabilities-ovs-2.13.toml")
    new_caps = Capabilities(type(new_caps.abi)(V32_OFFER, 0x10CBF, 128, 32768, 32768))
    return {"new": Host("new", load_modeset([shipped]), new_caps),
            "old": Host("old", load_modeset([old_dir]), read_capabilities(EXAMPLES / "capabilities-ovs-2.13.toml"))}


def port(host: Host, mode: str | None, negotiated: int = 0, state: str = "applied", resolved: str | None = None):
    m = host.modeset.expand(mode) if mode else None
    return PortView("vhu0", "u", mode or "passthrough", resolved or (mode or "passthrough"), state, None, m,
                    negotiated_features=negotiated)


def test_allowed_by_contract(hosts):
    verdict = check_migration(port(hosts["new"], "upstream.ovs-dpdk.v2.13"), hosts["new"], hosts["old"])
    assert verdict.allowed and verdict.level == "contract"


def test_refused_by_contract_names_the_features(hosts):
    verdict = check_migration(port(hosts["new"], "upstream.ovs-dpdk.v2.11"), hosts["new"], hosts["old"])
    assert not verdict.allowed
    assert verdict.sentence.startswith("old cannot run upstream.ovs-dpdk.v2.11: missing VIRTIO_NET_F_HOST_UFO")
    assert [(r.kind, r.name) for r in verdict.reasons] == [("unavailable", "VIRTIO_NET_F_HOST_UFO")]
    missing = check_migration(port(hosts["new"], "upstream.ovs-dpdk.v3.2"), hosts["new"], hosts["old"])
    assert missing.reasons[0].kind == "missing_mode" and "does not define upstream.ovs-dpdk.v3.2" in missing.sentence


def test_outside_the_contract_only_when_asked(hosts):
    # a guest on 2.11 that did not negotiate HOST_UFO
    negotiated = catalog.names_to_mask(["VIRTIO_NET_F_MRG_RXBUF", "VIRTIO_F_VERSION_1"], "virtio")
    p = port(hosts["new"], "upstream.ovs-dpdk.v2.11", negotiated)
    refused = check_migration(p, hosts["new"], hosts["old"])
    assert not refused.allowed and refused.would_work_outside_contract
    assert "would work with the features the guest negotiated, outside the contract" in refused.sentence
    accepted = check_migration(p, hosts["new"], hosts["old"], allow_outside_contract=True)
    assert accepted.allowed and accepted.level == "outside-contract"
    # a guest that did negotiate HOST_UFO is refused even then
    with_ufo = port(hosts["new"], "upstream.ovs-dpdk.v2.11", negotiated | catalog.lookup("VIRTIO_NET_F_HOST_UFO").value)
    assert not check_migration(with_ufo, hosts["new"], hosts["old"], allow_outside_contract=True).allowed


def test_passthrough_and_nonconformant_need_an_identical_backend(hosts):
    p = port(hosts["new"], None, resolved="passthrough")
    refused = check_migration(p, hosts["new"], hosts["old"])
    assert not refused.allowed and [r.name for r in refused.reasons] == ["VIRTIO_NET_F_CSUM",
                                                                          "VHOST_USER_PROTOCOL_F_REPLY_ACK", "VHOST_USER_PROTOCOL_F_STATUS",
                                                                          "max_rx_queue_size", "max_tx_queue_size"]
    same = Host("twin", hosts["new"].modeset, hosts["new"].capabilities)
    assert check_migration(p, hosts["new"], same).level == "identical-backend"
    bad = port(hosts["new"], "upstream.ovs-dpdk.v2.8", state="nonconformant")
    assert not check_migration(bad, hosts["new"], hosts["old"]).allowed
    assert check_migration(bad, hosts["new"], same).allowed


OFFERS = st.integers(0, (1 << 64) - 1)


MODES_UNDER_TEST = ["upstream.ovs-dpdk.v2.6", "upstream.ovs-dpdk.v2.11", "upstream.ovs-dpdk.v2.13"]
REGISTRY = load_modeset([Path(__file__).parent.parent / "compat_tables"])


def hard_case(rng: random.Random) -> tuple[int, int, bool, str]:
    """(negotiated, offer, outside, mode), aimed at the guarded case: the destination
    offers the mode (so its contract holds) minus a bit or two, and the guest negotiated
    within the mode plus a bit or two, so a negotiated feature the destination lacks is
    common, not one case in a thousand."""
    mode = rng.choice(MODES_UNDER_TEST)
    bits = REGISTRY.modes[mode].abi.virtio
    offer = bits | rng.getrandbits(64)
    for _ in range(rng.randint(0, 2)):
        offer &= ~(1 << rng.randrange(64))  # the destination lacks a feature (in the mode or not)
    negotiated = bits & rng.getrandbits(64)
    for _ in range(rng.randint(0, 2)):
        negotiated |= 1 << rng.randrange(64)  # the guest went beyond the mode here and there
    return negotiated, offer, rng.random() < 0.5, mode


def _verdict(negotiated: int, offer: int, outside: bool, mode: str):
    source = Host("s", REGISTRY)
    dest = Host("d", REGISTRY, Capabilities(type(REGISTRY.modes[mode].abi)(offer, (1 << 20) - 1, 256, 32768, 32768)))
    p = PortView("vhu0", "u", mode, mode, "applied", None, REGISTRY.modes[mode], negotiated_features=negotiated)
    return check_migration(p, source, dest, allow_outside_contract=outside)


@given(st.one_of(st.tuples(OFFERS, OFFERS, st.booleans(), st.sampled_from(MODES_UNDER_TEST)),
                 st.randoms(use_true_random=False).map(hard_case)))
def test_never_allowed_when_the_destination_lacks_a_negotiated_feature(case):
    negotiated, offer, outside, mode = case
    if _verdict(negotiated, offer, outside, mode).allowed:
        assert negotiated & ~catalog.NON_ABI_VIRTIO_MASK & ~offer == 0


def test_the_hard_cases_reach_the_guarded_case():
    """The generator above is not vacuous: of 300 cases it makes, many are allowed and
    many have a negotiated feature the destination lacks."""
    rng = random.Random(3)
    seen = {"allowed": 0, "lacks": 0}
    for _ in range(300):
        negotiated, offer, outside, mode = hard_case(rng)
        seen["allowed"] += _verdict(negotiated, offer, outside, mode).allowed
        seen["lacks"] += bool(negotiated & ~catalog.NON_ABI_VIRTIO_MASK & ~offer)
    assert seen["allowed"] >= 30 and seen["lacks"] >= 30, seen


def test_a_guest_beyond_its_mode_is_refused_where_the_destination_lacks_that_feature():
    """The explicit example: the destination runs the port's mode, but the guest
    negotiated a feature outside the mode that the destination does not offer."""
    mode = "upstream.ovs-dpdk.v2.13"
    bits = REGISTRY.modes[mode].abi.virtio
    csum = catalog.lookup("VIRTIO_NET_F_CSUM").value
    assert not bits & csum
    offer = bits | catalog.NON_ABI_VIRTIO_MASK
    for outside in (False, True):
        verdict = _verdict(bits | csum, offer, outside, mode)
        assert not verdict.allowed, verdict.sentence
    assert _verdict(bits, offer, False, mode).allowed  # the same guest within its mode may move


def test_select_mode_by_scope(hosts):
    both = [hosts["new"], hosts["old"]]
    assert select_mode(Scope.parse("everywhere"), both).mode.name == "upstream.ovs-dpdk.v2.13"
    refused = select_mode(Scope.parse("everywhere"), both).refused
    assert refused["upstream.ovs-dpdk.v3.2"] == ["old: not defined"]
    assert select_mode(Scope.parse("lineage=fc26.ovs-dpdk"), [hosts["new"]]).mode.name == "fc26.ovs-dpdk.v2.8"
    assert select_mode(Scope.parse("none"), both).passthrough
    with pytest.raises(ValueError):
        Scope.parse("galaxy")


# ---- against real ovsdb-servers ------------------------------------------------------------------

def insert_port(remote: str, name: str, mode: str | None, negotiated: int = 0, state: str = "applied") -> None:
    (modes,) = rpc.transact(remote, "VuCompat", [{"op": "select", "table": "Compat_Mode", "where": [
        ["name", "==", mode or ""]], "columns": ["_uuid"]}])
    row = {"interface_name": name, "interface_uuid": ["uuid", "6f1a3e5c-6d8e-4d5b-9c1e-0a4b8e1d2c3f"],
           "interface_type": "dpdkvhostuserclient", "requested": mode or "passthrough",
           "resolved": mode or "passthrough", "state": state,
           "negotiated_features": ["set", catalog.bits_of(negotiated)]}
    if modes["rows"]:
        row["mode"] = modes["rows"][0]["_uuid"]
    rpc.transact(remote, "VuCompat", [{"op": "insert", "table": "Port", "row": row}])


def cli(*args: str) -> tuple[int, dict]:
    done = subprocess.run([VUCOMPAT, *args, "--format", "json"], capture_output=True, text=True, timeout=60)
    return done.returncode, (json.loads(done.stdout) if done.stdout.strip() else {"stderr": done.stderr})


def test_api_and_cli_against_real_hosts(ovsdb_servers, tmp_path: Path, shipped: Path):
    new, old = ovsdb_servers("mig-new", tcp=True), ovsdb_servers("mig-old", tcp=True)
    old_tables = tmp_path / "old"
    old_tables.mkdir()
    (old_tables / "upstream.ovs-dpdk.toml").write_text(
        table_text_until((shipped / "upstream.ovs-dpdk.toml").read_text(), "2.13"))
    subprocess.run([VUCOMPAT, "load", "--db", new.unix_remote, "--host-name", "compute-new"], check=True,
                   capture_output=True)
    subprocess.run([VUCOMPAT, "load", "--db", old.unix_remote, "--host-name", "compute-old", "--tables",
                    str(old_tables), "--capabilities", str(EXAMPLES / "capabilities-ovs-2.13.toml")], check=True,
                   capture_output=True)
    insert_port(new.unix_remote, "vhu-new", "upstream.ovs-dpdk.v2.11")
    insert_port(new.unix_remote, "vhu-ok", "upstream.ovs-dpdk.v2.13")
    with Client(timeout=5) as client:
        verdict = client.check_migration("vhu-new", new.tcp_remote, old.tcp_remote)
        assert not verdict.allowed and verdict.reasons[0].name == "VIRTIO_NET_F_HOST_UFO"
        assert "compute-old cannot run upstream.ovs-dpdk.v2.11: missing VIRTIO_NET_F_HOST_UFO" in verdict.sentence
        assert client.check_migration("vhu-ok", new.tcp_remote, old.tcp_remote).allowed
        # v2.6 offered 0x8000 queue pairs (its erratum): no DPDK since 17.05 answers more than 128
        assert [m.name for m in client.modes(old.tcp_remote) if not m.runnable] == ["upstream.ovs-dpdk.v2.11",
                                                                                   "upstream.ovs-dpdk.v2.6"]
        assert client.negotiate(new.tcp_remote, old.tcp_remote).mode.name == "upstream.ovs-dpdk.v2.13"
        assert client.select_mode("everywhere", [new.tcp_remote, old.tcp_remote]).mode.name == \
            "upstream.ovs-dpdk.v2.13"
    code, data = cli("check-migration", "--port", "vhu-new", "--source", new.tcp_remote, "--dest", old.tcp_remote)
    assert code == 1 and data["allowed"] is False and data["reasons"][0]["kind"] == "unavailable"
    code, data = cli("check-migration", "--port", "vhu-ok", "--source", new.tcp_remote, "--dest", old.tcp_remote)
    assert code == 0 and data["level"] == "contract"
    code, data = cli("select-mode", "--scope", "everywhere", "--host", new.tcp_remote, "--host", old.tcp_remote)
    assert code == 0 and data["mode"] == "upstream.ovs-dpdk.v2.13"
    # a destination whose table gives a mode another meaning: refused, loudly
    site = tmp_path / "site"
    site.mkdir()
    acme = (EXAMPLES / "one-queue-pair" / "acme.ovs-dpdk.toml").read_text()
    (site / "acme.ovs-dpdk.toml").write_text(acme)
    subprocess.run([VUCOMPAT, "load", "--db", new.unix_remote, "--tables", str(site)], check=True, capture_output=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "acme.ovs-dpdk.toml").write_text(acme.replace("max_queue_pairs = 1", "max_queue_pairs = 2"))
    subprocess.run([VUCOMPAT, "load", "--db", old.unix_remote, "--tables", str(other), "--tables", str(old_tables)],
                   check=True, capture_output=True)
    insert_port(new.unix_remote, "vhu-acme", "acme.ovs-dpdk.v1.0")
    code, data = cli("check-migration", "--port", "vhu-acme", "--source", new.tcp_remote, "--dest", old.tcp_remote)
    assert code == 1 and data["reasons"] == [{"kind": "digest_mismatch", "name": "max_queue_pairs", "source": 1,
                                              "destination": 2}]
    assert "DIGEST DIFFERS" in data["sentence"]
    # an unreachable destination is an error, not a verdict
    code, data = cli("check-migration", "--port", "vhu-ok", "--source", new.tcp_remote, "--dest", "tcp:127.0.0.1:1",
                     "--timeout", "1")
    assert code == 2 and "cannot reach ovsdb-server" in data["stderr"]
    assert select(new.unix_remote, "Port", ["interface_name"])  # the source was only read


# ---- frontend arguments, traits, plan-upgrade --------------------------------------------------------

def qemu_properties() -> set[str]:
    import shutil

    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 is not installed: run `make setup` (qemu-system-x86)")
    done = subprocess.run(["qemu-system-x86_64", "-device", "virtio-net-pci,help"], capture_output=True, text=True,
                          timeout=60)
    return {line.split("=")[0].strip() for line in done.stdout.splitlines() if "=" in line}


def installed_qemu() -> str:
    done = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True, timeout=60)
    return ".".join(done.stdout.split("version ")[1].split(".")[:2])


def test_frontend_args_name_real_qemu_properties(shipped: Path):
    from vucompat.core import frontend

    known = qemu_properties()
    version = tuple(int(x) for x in installed_qemu().split("."))
    registry = load_modeset([shipped])
    for mode in registry.modes.values():
        props = frontend.qemu_device_properties(mode, version)
        unknown = {p.split("=")[0] for p in props} - known
        assert not unknown, (mode.name, unknown)
    # and QEMU accepts the whole device: it starts (stopped) and quits
    props = frontend.qemu_device_properties(registry.expand("upstream.ovs-dpdk.v2.8"), version)
    done = subprocess.run(["qemu-system-x86_64", "-nodefaults", "-display", "none", "-S", "-monitor", "stdio",
                           "-machine", "q35,accel=tcg", "-netdev", "user,id=net0",
                           "-device", "virtio-net-pci,netdev=net0," + ",".join(props)],
                          input="quit\n", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "packed=off" in props and "event_idx=off" in props and "mrg_rxbuf=off" not in props


def test_frontend_args_cli_formats():
    code, data = cli("frontend-args", "upstream.ovs-dpdk.v2.8")  # cli() adds --format json
    assert code == 0 and "indirect_desc=off" not in data["virtio_net_pci"] and "packed=off" in data["virtio_net_pci"]
    assert "VIRTIO_F_IN_ORDER" in data["masked_only_by_the_relay"]
    libvirt = subprocess.run([VUCOMPAT, "frontend-args", "upstream.ovs-dpdk.v2.8", "--format", "libvirt"],
                             capture_output=True, text=True).stdout
    assert "<driver queues='128' rx_queue_size='1024' tx_queue_size='1024' event_idx='off' packed='off'" in libvirt
    assert "<qemu:property name='status' type='bool' value='false'/>" in libvirt


def test_traits_have_placement_syntax(ovsdb_servers):
    import re

    from vucompat.core.names import placement_trait

    assert placement_trait("upstream.ovs-dpdk.v2.13") == "CUSTOM_VHOSTUSER_COMPAT_UPSTREAM_OVS_DPDK_V2_13"
    server = ovsdb_servers("traits")
    subprocess.run([VUCOMPAT, "load", "--db", server.unix_remote, "--capabilities",
                    str(EXAMPLES / "capabilities-ovs-2.13.toml")], check=True, capture_output=True)
    out = subprocess.run([VUCOMPAT, "traits", "--db", server.unix_remote], capture_output=True, text=True).stdout.split()
    assert "CUSTOM_VHOSTUSER_COMPAT_UPSTREAM_OVS_DPDK_V2_13" in out
    assert "CUSTOM_VHOSTUSER_COMPAT_UPSTREAM_OVS_DPDK_V2_11" not in out  # not runnable: no HOST_UFO
    assert all(re.fullmatch(r"CUSTOM_[A-Z0-9_]+", t) and len(t) <= 255 for t in out)
    labels = subprocess.run([VUCOMPAT, "traits", "--db", server.unix_remote, "--format", "labels"],
                            capture_output=True, text=True).stdout.split()
    assert "vhostuser-compat.vucompat.io/upstream.ovs-dpdk.v2.13=true" in labels


def test_plan_upgrade_names_the_ports_an_upgrade_would_break(ovsdb_servers, tmp_path: Path, shipped: Path):
    server = ovsdb_servers("upgrade")
    subprocess.run([VUCOMPAT, "load", "--db", server.unix_remote], check=True, capture_output=True)
    insert_port(server.unix_remote, "vhu-211", "upstream.ovs-dpdk.v2.11")
    insert_port(server.unix_remote, "vhu-29", "upstream.ovs-dpdk.v2.9")
    insert_port(server.unix_remote, "vhu-fc26", "fc26.ovs-dpdk.v2.8")
    new = tmp_path / "new"
    new.mkdir()
    (new / "upstream.ovs-dpdk.toml").write_text((shipped / "upstream.ovs-dpdk.toml").read_text())
    done = subprocess.run([VUCOMPAT, "plan-upgrade", "--db", server.unix_remote, "--tables", str(new),
                           "--capabilities", str(EXAMPLES / "capabilities-ovs-2.13.toml"), "--format", "json"],
                          capture_output=True, text=True)
    assert done.returncode == 1
    outcomes = {p["port"]: (p["outcome"], p["detail"]) for p in json.loads(done.stdout)["ports"]}
    assert outcomes["vhu-29"] == ("keeps", "")
    assert outcomes["vhu-211"] == ("unrunnable", "missing VIRTIO_NET_F_HOST_UFO")
    assert outcomes["vhu-fc26"][0] == "loses-mode"
