"""A VM really moves: a QEMU (TCG) guest with a virtio-net NIC live-migrates between
two real ovs-vswitchd-dpdk backends that differ (one with userspace TSO on), behind
vucompat's relays on both sides, and every check-migration verdict is held against
what really happens. Every process is started here and stopped by pid.

The ports are dpdkvhostuser ports (OVS serves the socket, QEMU connects to the
port's relay, as the agent mirrors it): the destination port is plugged before the
destination QEMU starts, as Nova's pre_live_migration does.
"""

from __future__ import annotations

import warnings
from typing import Callable, Iterator

import pytest

from vucompat_testing.switch import Switch, eventually, start_switch
from vucompat.core import catalog
from vucompat.api import Client
from vucompat_testing.guest import Guest, GuestError, GuestImage, ensure_guest
from vucompat.core.migration import Verdict

TSO = {"userspace-tso-enable": "true"}
CSUM = catalog.lookup("VIRTIO_NET_F_CSUM").value


@pytest.fixture(scope="module")
def image() -> GuestImage:
    return ensure_guest()


@pytest.fixture(scope="module")
def hosts() -> Iterator[dict[str, Switch]]:
    """plain: Debian's OVS 3.1 with default settings; tso: the same with
    userspace-tso-enable=true (in a network namespace of its own), so the two
    backends really differ."""
    plain = start_switch(enforce=True, name="plain", tables=())
    tso = start_switch(enforce=True, name="tso", other_config=TSO, own_netns=True, tables=())
    pair = {"plain": next(plain), "tso": next(tso)}
    try:
        yield pair
    finally:
        for generator in (tso, plain):
            next(generator, None)


@pytest.fixture(autouse=True)
def _stop_guests(hosts: dict[str, Switch]) -> Iterator[None]:
    yield
    for host in hosts.values():
        host.stop_guests()


def verdict(port: str, source: Switch, destination: Switch) -> Verdict:
    with Client() as client:  # what Nova's pre-check calls
        return client.check_migration(port, source.remote, destination.remote)


def boot(source: Switch, image: GuestImage, port: str, options: dict[str, str], **kw: object) -> Guest:
    guest = source.guest(image, port, source.plug(port, options), **kw)
    guest.wait_booted()
    eventually(lambda: (row := source.port_row(port)) and row["negotiated_features"] != ["set", []], timeout=60,
               what=f"{port}'s negotiation recorded")
    return guest


def move(guest: Guest, source: Switch, destination: Switch, image: GuestImage, port: str,
         options: dict[str, str], **kw: object) -> tuple[Guest, dict]:
    """Nova's flow: plug the destination port with `options`, start the destination
    QEMU (-incoming) on it, migrate; (the destination guest, query-migrate's answer)."""
    target = destination.guest(image, port, destination.plug(port, options), incoming=True, **kw)
    assert target.wait_ready(timeout=60) == "inmigrate"  # QEMU waits for its vhost-user backend first
    return target, guest.migrate_to(target, timeout=180)


def test_a_mode_only_the_source_runs_is_refused_and_unmasked_the_guest_really_fails(hosts, image):
    tso, plain = hosts["tso"], hosts["plain"]
    # a port in upstream.ovs-dpdk.v3.2 (CSUM): the TSO host's server ports run it, the plain host cannot
    guest = boot(tso, image, "vm-v32", {"vhost-compat": "upstream.ovs-dpdk.v3.2"})
    assert guest.features() & CSUM
    refused = verdict("vm-v32", tso, plain)
    assert not refused.allowed and {r.name for r in refused.reasons} == {"VIRTIO_NET_F_CSUM"}
    assert refused.destination_options == {}
    guest.stop()
    tso.unplug("vm-v32")
    # the same guest unmasked (passthrough): refused too (the backends differ), and really lost
    guest = boot(tso, image, "vm-raw", {"vhost-compat": "passthrough"})
    assert guest.features() & CSUM
    refused = verdict("vm-raw", tso, plain)
    assert not refused.allowed and refused.level == "none"
    assert {r.name for r in refused.reasons} == {"VIRTIO_NET_F_CSUM"}  # what a TSO host's server port adds
    target, info = move(guest, tso, plain, image, "vm-raw", {"vhost-compat": "passthrough"})
    eventually(lambda: not target.running(), timeout=60, what="the destination to give up")
    # the destination could not load the guest's NIC: it negotiated CSUM, which this backend lacks ...
    assert "Failed to load virtio-net" in target.log_text() and "unsupported" in target.log_text()
    # ... while the source says the migration completed, and stays stopped
    assert info["status"] == "completed" and guest.status() == "postmigrate"
    guest.cont()  # what someone must do, or the VM is lost
    last = guest.ticks()[-1]
    assert guest.wait_ticks(after=last, timeout=60) > last
    tso.unplug("vm-raw")
    plain.unplug("vm-raw")


def once_more_if_qemu_crashes(scenario: Callable[[str], None], port: str, *backends: Switch) -> None:
    """Run `scenario(port)`; if a QEMU of it dies of a signal (QEMU 7.2 under TCG
    segfaults now and then around vhost-user NICs, with no message: a QEMU bug, not
    an outcome of the move), say so, clean up and run it once more on a fresh port.
    A second crash, and every other failure, fails the test."""
    try:
        scenario(port)
    except GuestError as err:
        if not err.crash:
            raise
        warnings.warn(f"QEMU crashed ({err.crash}) during {port}'s scenario; running it once more: {err}")
        for backend in backends:
            backend.stop_guests()
            backend.unplug(port)
        scenario(f"{port}-again")


@pytest.mark.parametrize("direction", ["tso-to-plain", "plain-to-tso"])
def test_the_selected_mode_really_moves_and_the_traffic_goes_on(hosts, image, direction):
    source, destination = (hosts["tso"], hosts["plain"]) if direction == "tso-to-plain" else \
        (hosts["plain"], hosts["tso"])
    # a multiqueue guest one way (MQ and per-queue state through both relays), a single queue the other
    queues = 2 if direction == "plain-to-tso" else 1
    once_more_if_qemu_crashes(lambda port: selected_mode_moves(source, destination, image, port, queues),
                              f"vm-{direction}", source, destination)


def selected_mode_moves(source: Switch, destination: Switch, image: GuestImage, port: str, queues: int) -> None:
    with Client() as client:
        selection = client.select_mode("hosts", [source.remote, destination.remote])
    assert selection.mode is not None
    guest = boot(source, image, port, {"vhost-compat": selection.mode.name}, queues=queues, cpus=queues)
    if queues > 1:
        assert guest.queue_counts() == (2, 2)
    allowed = verdict(port, source, destination)
    assert allowed.allowed and allowed.level == "contract", allowed.sentence
    assert allowed.destination_options == {"vhost-compat": selection.mode.name}
    before = guest.ticks()[-1]
    target, info = move(guest, source, destination, image, port, allowed.destination_options, queues=queues,
                        cpus=queues)
    assert info["status"] == "completed", info
    eventually(lambda: guest.status() == "postmigrate", timeout=30, what="the source to stop")
    eventually(lambda: target.status() == "running", timeout=60, what="the destination to run the guest")
    # the guest goes on where it was
    assert target.wait_ticks(after=before, timeout=90) > before
    # and its NIC works on the destination (multiqueue too): a packet counts as sent only once
    # the backend took it off the ring (OVS 3.1 keeps no packet counters for dpdkvhostuser ports)
    sent = target.traffic()[1]
    eventually(lambda: target.traffic()[1] > sent + 3, timeout=60,
               what=f"the guest's traffic on the destination (tx {sent} at its first tick there; console: "
                    f"{target.serial_text()[-300:]!r})")
    if queues > 1:
        # every queue pair's rings were set up again on the destination, through its relay
        status = destination.vswitchd.vsctl("get", "Interface", port, "status")
        assert 'num_of_vrings="4"' in status and "status=connected" in status, status
    row = eventually(lambda: (r := destination.port_row(port)) and r["negotiated_features"] != ["set", []] and r,
                     timeout=60, what="the destination port's verification")
    assert row["state"] == "applied" and row["resolved"] == selection.mode.name
    assert row["verification"].startswith("conformant"), row["verification"]
    # Nova unplugs the source port: its Port row goes with its Interface
    guest.stop()
    source.unplug(port)
    eventually(lambda: source.port_row(port) is None, what="the source's Port row to go")
    destination.unplug(port)


def test_without_enforcement_the_selected_mode_does_not_move(hosts, image):
    """What the allowed case owes to the relays: with the agents recording and
    verifying but not enforcing, the guest on the TSO host negotiates CSUM beyond the
    selected mode, so its port is nonconformant, check-migration refuses it, and the
    real move indeed loses the guest on the destination. (The allowed test, run like
    this, fails on its first assertions.)"""
    tso, plain = hosts["tso"], hosts["plain"]
    agents = [b.agent for b in (tso, plain)]
    for agent in agents:
        agent.stop()
        agent.enforce = False
        agent.start()
    try:
        with Client() as client:
            mode = client.select_mode("hosts", [tso.remote, plain.remote]).mode
        guest = boot(tso, image, "vm-off", {"vhost-compat": mode.name})
        assert guest.features() & CSUM  # nothing masked it
        eventually(lambda: tso.port_row("vm-off")["state"] == "nonconformant", timeout=60,
                   what="the agent to see the guest beyond its mode")
        refused = verdict("vm-off", tso, plain)
        assert not refused.allowed and "nonconformant" in refused.sentence
        target, info = move(guest, tso, plain, image, "vm-off", {"vhost-compat": "passthrough"})
        eventually(lambda: not target.running(), timeout=60, what="the destination to give up")
        assert "Failed to load virtio-net" in target.log_text() and info["status"] == "completed"
        guest.cont()
    finally:
        for backend in (tso, plain):
            backend.stop_guests()
            backend.unplug("vm-off")
        for agent in agents:
            agent.stop()
            agent.enforce = True
            agent.start()
