#!/usr/bin/env python3
"""Measure what the installed ovs-vswitchd-dpdk offers vhost-user frontends: the
numbers behind a measured distro lineage (compat_tables/distros/<distro>.ovs-dpdk.toml).

Four cases: default settings and other_config:userspace-tso-enable=true, each for a
dpdkvhostuserclient port and a dpdkvhostuser port. Each setting gets its own
ovsdb-server and ovs-vswitchd-dpdk (no hugepages) on private sockets in a temporary
directory, by default in a network namespace of its own so that it cannot clash with
another userspace datapath on the machine; both are stopped by pid. The system's OVS
is never touched.

Prints JSON: the component and package versions, and per case and port type the
virtio and protocol masks, the queue pairs, and the feature names enabled or disabled
relative to the default client port.

Run as root, from the checkout: .venv/bin/python scripts/measure-offers.py
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from vucompat.core import catalog
from vucompat_testing.vswitchd import VSWITCHD_DPDK, Vswitchd
from vucompat.core.mode import CLIENT_TYPE
from vucompat.ovsdb.vswitch import read_switch
from vucompat_testing.ovsdb_server import OvsdbSandbox
from vucompat.vhostuser.probe import Offer, probe_types

#: case name -> Open_vSwitch other_config set before ovs-vswitchd starts
CASES: dict[str, dict[str, str]] = {"default": {}, "tso": {"userspace-tso-enable": "true"}}
#: Debian/Ubuntu packages whose versions the report records
PACKAGES = ("openvswitch-switch-dpdk", "openvswitch-common", "dpdk", "librte-vhost23")
CLONE_NEWNET = 0x40000000


def enter_own_netns() -> None:
    """Move this process (and so everything it starts) into a new network namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "unshare(CLONE_NEWNET) failed (run as root, or pass --no-netns)")


def measure(settings: dict[str, str], workdir: Path | None, timeout: float) -> tuple[dict[str, Offer], str]:
    """Start a private ovs-vswitchd-dpdk with `settings`; return what each port type
    offers and the switch's dpdk_version."""
    with tempfile.TemporaryDirectory(prefix="vucompat-measure-", dir=workdir) as tmp:
        directory = Path(tmp)
        db = OvsdbSandbox(directory)
        switch = Vswitchd(directory, db.unix_remote)
        try:
            db.start()
            if settings:  # read by ovs-vswitchd at start: set them first
                switch.vsctl("init", wait=False)
                switch.vsctl("set", "Open_vSwitch", ".", *(f"other_config:{k}={v}" for k, v in settings.items()),
                             wait=False)
            switch.start()
            versions, _, _ = read_switch(db.unix_remote, timeout)
            offers = probe_types(db.unix_remote, switch.bridge, directory / "vhost", timeout=timeout)
        finally:
            switch.stop()
            db.stop()
            # DPDK's runtime directory (Vswitchd's --file-prefix starts with our pid)
            for runtime in Path("/var/run/dpdk").glob(f"vucvs{os.getpid()}x*"):
                shutil.rmtree(runtime, ignore_errors=True)
    return offers, versions.get("dpdk_version", "").removeprefix("DPDK ")


def package_versions() -> dict[str, str]:
    """The installed versions of PACKAGES (empty without dpkg)."""
    try:
        done = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Version}\\n", *PACKAGES],
                              check=False, capture_output=True, text=True)
    except FileNotFoundError:
        return {}
    return dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)


def describe(offer: Offer, reference: Offer) -> dict[str, Any]:
    """An offer as JSON: hex masks, queue pairs, and names gained/lost vs `reference`."""
    def names(mask: int, kind: str) -> list[str]:
        return catalog.mask_to_names(mask, kind)  # type: ignore[arg-type]

    gained = names(offer.virtio & ~reference.virtio, "virtio") + names(offer.protocol & ~reference.protocol,
                                                                        "protocol")
    lost = names(reference.virtio & ~offer.virtio, "virtio") + names(reference.protocol & ~offer.protocol,
                                                                      "protocol")
    return {"virtio": catalog.to_hex(offer.virtio), "protocol": catalog.to_hex(offer.protocol),
            "queue_pairs": offer.queue_pairs, "enable": gained, "disable": lost}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-netns", action="store_true",
                        help="stay in this network namespace (fails if another userspace datapath runs here)")
    parser.add_argument("--workdir", type=Path, help="make the temporary directories here (default: $TMPDIR)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each step")
    args = parser.parse_args()
    if not args.no_netns:
        enter_own_netns()

    version = subprocess.run([str(VSWITCHD_DPDK), "--version"], capture_output=True, text=True, check=True).stdout
    # "ovs-vswitchd-dpdk (Open vSwitch) 3.1.0\nDPDK 22.11.11"
    report: dict[str, Any] = {"ovs": version.splitlines()[0].rsplit(" ", 1)[-1], "dpdk": "",
                              "packages": package_versions(), "cases": {}}
    reference: Offer | None = None
    for case, settings in CASES.items():
        offers, dpdk = measure(settings, args.workdir, args.timeout)
        report["dpdk"] = report["dpdk"] or dpdk
        reference = reference or offers[CLIENT_TYPE]
        report["cases"][case] = {"settings": settings, **{t: describe(o, reference) for t, o in offers.items()}}
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
