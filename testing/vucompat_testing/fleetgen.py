"""A load generator for the fleet database: synthetic hosts (each with its
lineage's modes, a backend that can run most of them, and ports), published the
way agents publish them, over a few pipelined connections (generate_parallel)
instead of one process per host. Used by bench/fleet.py and the leader-kill test;
run it by hand to size a cluster (docs/fleet.md):

    python -m vucompat_testing.fleetgen --fleet ADMIN_REMOTES --hosts 10000 [--connections K]

The synthetic fleet: `lineages` lineages of `modes_per_host` modes each (distinct
digests: the queue-pair limit grows with the version); host i runs lineage
i % lineages, sits in pool "pool-<i % pools>" (with pools a multiple of lineages, one lineage per pool), and its backend offers up to
`modes_per_host - (i // lineages) % 4` queue pairs, so its newest modes are unavailable by name.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from typing import Callable, Sequence

from vucompat.core import catalog
from vucompat.core.fleet import HostRecord, needed_modes
from vucompat.core.mode import CLIENT_TYPE, Abi, Capabilities, Mode
from vucompat.ovsdb.fleet_publish import publish
from vucompat.ovsdb.fleet_rows import Published, now_ms, publish_operations
from vucompat.ovsdb.rpc import OvsdbError, failed_operation
from vucompat.ovsdb.session import Session
from vucompat.ovsdb.tls import SslOptions
from vucompat.ovsdb.schema import FLEET_DB
from vucompat.core.portview import PortView
from vucompat.core.modeset import Host, ModeSet
from vucompat.core.resolve import APPLIED

_VIRTIO = catalog.names_to_mask(["VIRTIO_NET_F_CSUM", "VIRTIO_NET_F_GUEST_CSUM", "VIRTIO_NET_F_MRG_RXBUF",
                                 "VIRTIO_NET_F_CTRL_VQ", "VIRTIO_NET_F_MQ", "VIRTIO_F_VERSION_1",
                                 "VIRTIO_RING_F_INDIRECT_DESC", "VIRTIO_RING_F_EVENT_IDX"], "virtio")
_PROTOCOL = catalog.names_to_mask(["VHOST_USER_PROTOCOL_F_MQ", "VHOST_USER_PROTOCOL_F_REPLY_ACK"], "protocol")


@dataclass(frozen=True)
class FleetShape:
    hosts: int = 1000
    modes_per_host: int = 50
    ports_per_host: int = 20
    lineages: int = 4
    pools: int = 8


@lru_cache(maxsize=8)
def lineage_modes(lineage: int, count: int) -> tuple[Mode, ...]:
    """The `count` modes of synthetic lineage `lineage`, oldest first."""
    name = f"synthetic{lineage}.ovs-dpdk"
    return tuple(Mode(name=f"{name}.v{v}", lineage=name, version=str(v),
                      released=date(2020, 1, 1) + timedelta(days=v),
                      abi=Abi(virtio=_VIRTIO, protocol=_PROTOCOL, max_queue_pairs=v + 1,
                              max_rx_queue_size=256 << (lineage % 4), max_tx_queue_size=256))
                 for v in range(count))


def synthetic_record(index: int, shape: FleetShape) -> HostRecord:
    """Host number `index` of the synthetic fleet."""
    lineage = index % shape.lineages
    modes = lineage_modes(lineage, shape.modes_per_host)
    offered = max(1, shape.modes_per_host - (index // shape.lineages) % 4)
    caps = Capabilities(Abi(virtio=_VIRTIO, protocol=_PROTOCOL, max_queue_pairs=offered,
                            max_rx_queue_size=256 << (lineage % 4), max_tx_queue_size=256), "synthetic")
    host = Host(f"host-{index:05d}", ModeSet({m.name: m for m in modes}), caps)
    usable = [m for m in modes if m.abi.max_queue_pairs <= offered]
    ports = {}
    for p in range(shape.ports_per_host):
        mode = usable[-1 - p % min(3, len(usable))]  # the ports use its 3 newest runnable modes
        ports[f"vhu{index:05d}-{p:02d}"] = PortView(
            name=f"vhu{index:05d}-{p:02d}", interface_uuid="", requested="latest", resolved=mode.name,
            state=APPLIED, error=None, mode=mode, negotiated_features=_VIRTIO, interface_type=CLIENT_TYPE)
    return HostRecord(host=host, ports=ports, pool=f"pool-{index % shape.pools}", ovs_version="3.1.0",
                      dpdk_version="22.11.4", capabilities_source="probed", agent_version="loadgen")


@dataclass
class Progress:
    """What a generate() run did."""

    published: int = 0
    #: first publishes whose outcome was unknown (connection lost) or that were refused: read back and finished
    retried: int = 0
    #: wall-clock seconds
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def _known_modes(session: Session) -> dict[tuple[str, str], str]:
    rows = session.transact([{"op": "select", "table": "Compat_Mode", "where": [],
                              "columns": ["_uuid", "name", "digest"]}])[0]["rows"]
    return {(r["name"], r["digest"]): r["_uuid"][1] for r in rows}


def generate(session: Session, records: Sequence[HostRecord], window: int = 64, batch: int = 512,
             on_batch: Callable[[int], None] | None = None, retry_for: float = 60.0) -> Progress:
    """Publish `records` (hosts new to the fleet): pipelined first publishes for
    hosts whose modes the fleet already has; a read-then-write publish() for the
    others, and for every transaction whose reply was lost (a leader killed
    mid-flight) or refused. Nothing is written twice: every row has a unique
    natural key, and retries read what the fleet holds first. Raises OvsdbError
    when the fleet stays unreachable for `retry_for` seconds."""
    progress = Progress()
    started = time.perf_counter()
    known: dict[tuple[str, str], str] = {}
    todo = list(records)
    while todo:
        chunk, todo = todo[:batch], todo[batch:]
        while chunk:
            try:
                known = known or _known_modes(session)
            except OvsdbError:
                known = {}
            ready, ops, waiting = [], [], []
            for record in chunk:
                keys = needed_modes(record)
                if all(k in known for k in keys):
                    ready.append(record)
                    ops.append(publish_operations(record, Published(modes={k: known[k] for k in keys}), now_ms()))
                else:
                    waiting.append(record)
            chunk = waiting
            if not ready:  # the first host of a lineage brings its modes; the next ones refer to them
                _publish_until_done(session, chunk.pop(0), retry_for, progress)
                known = {}
                continue
            try:
                results = session.transact_many(ops, window)
            except OvsdbError:
                results = [None] * len(ops)
            for record, result in zip(ready, results):
                if result is None or failed_operation(result) is not None:
                    progress.retried += 1
                    _publish_until_done(session, record, retry_for, progress)
                else:
                    progress.published += 1
        if on_batch is not None:
            on_batch(progress.published)
    progress.seconds = time.perf_counter() - started
    return progress


def generate_parallel(remotes: str, records: Sequence[HostRecord], connections: int = 2, window: int = 64,
                      timeout: float = 60.0, ssl: SslOptions | None = None) -> Progress:
    """generate() over `connections` sessions at once (threads, records dealt out in
    turn). Raises the first OvsdbError a connection gave up with."""
    results: list[Progress | BaseException] = [Progress()] * connections
    started = time.perf_counter()

    def run(k: int) -> None:
        session = Session(remotes, FLEET_DB, timeout, ssl)
        try:
            results[k] = generate(session, records[k::connections], window)
        except BaseException as err:  # noqa: BLE001 - raised below, in the caller's thread
            results[k] = err
        finally:
            session.close()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = Progress(seconds=time.perf_counter() - started)
    for result in results:
        if isinstance(result, BaseException):
            raise result
        total.published += result.published
        total.retried += result.retried
        total.errors += result.errors
    return total


def _publish_until_done(session: Session, record: HostRecord, retry_for: float, progress: Progress) -> None:
    deadline = time.monotonic() + retry_for
    while True:
        try:
            publish(session, record)
            progress.published += 1
            return
        except OvsdbError as err:
            if time.monotonic() > deadline:
                raise
            progress.errors.append(str(err))
            time.sleep(0.2)


def _int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is not in {low}..{high if high is not None else ''}")
        return value
    return parse


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m vucompat_testing.fleetgen`: publish synthetic hosts host-NNNNN as
    agents would, to size a cluster; print one JSON line (hosts, retried, seconds,
    hosts_per_second). Return 0, or 2 when the fleet cannot be reached (argparse
    exits 2 on bad options)."""
    parser = argparse.ArgumentParser(
        prog="python -m vucompat_testing.fleetgen",
        description="Publish synthetic hosts (host-NNNNN) into a fleet cluster as agents would, to size it. "
                    "Needs an admin remote (no RBAC role): one certificate cannot stand for many hosts.")
    parser.add_argument("--fleet", dest="remotes", metavar="REMOTES", default=os.environ.get("VUCOMPAT_FLEET"),
                        required="VUCOMPAT_FLEET" not in os.environ,
                        help="comma-separated remotes of the cluster's servers (env: VUCOMPAT_FLEET)")
    parser.add_argument("--hosts", dest="count", type=_int_range(1), metavar="N", default=1000, help="default: 1000")
    parser.add_argument("--first", type=_int_range(0), metavar="N", default=0, help="number of the first host (default: 0)")
    parser.add_argument("--modes", type=_int_range(1, 256), metavar="N", default=50, help="modes per host (default: 50)")
    parser.add_argument("--ports", type=_int_range(0), metavar="N", default=20, help="ports per host (default: 20)")
    parser.add_argument("--window", type=_int_range(1), metavar="N", default=64,
                        help="transactions in flight at once, per connection (default: 64)")
    parser.add_argument("--connections", type=_int_range(1, 64), metavar="N", default=1, help="default: 1")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", default=5.0,
                        help="seconds to wait for an ovsdb-server before giving up (default: 5)")
    parser.add_argument("--ssl-key", metavar="FILE", help="private key for ssl: remotes")
    parser.add_argument("--ssl-cert", metavar="FILE", help="certificate for ssl: remotes")
    parser.add_argument("--ssl-ca", metavar="FILE", help="CA certificate for ssl: remotes")
    args = parser.parse_args(argv)
    files = (args.ssl_key, args.ssl_cert, args.ssl_ca)
    if any(files) and not all(files):
        parser.error("ssl: remotes need all of --ssl-key, --ssl-cert and --ssl-ca")
    shape = FleetShape(hosts=args.first + args.count, modes_per_host=args.modes, ports_per_host=args.ports)
    records = [synthetic_record(i, shape) for i in range(args.first, args.first + args.count)]
    try:
        progress = generate_parallel(args.remotes, records, args.connections, args.window, args.timeout,
                                     SslOptions(*files) if all(files) else None)
    except OvsdbError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"hosts": progress.published, "retried": progress.retried,
                      "seconds": round(progress.seconds, 2),
                      "hosts_per_second": round(progress.published / max(progress.seconds, 1e-9))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
