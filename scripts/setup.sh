#!/usr/bin/env bash
# Idempotent set-up for `make demo` and `make test` on a fresh Debian machine:
# the Debian packages that are missing (installed once, after one apt-get update),
# then the project's venv in .venv, and os-vif's in .venv-osvif (each re-installed only
# when pyproject.toml changes).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the project needs: python3 (>= 3.11) and its venv module;
# openvswitch-switch for ovsdb-server, ovsdb-tool, ovsdb-client, ovs-vsctl, ovs-appctl, ovs-pki;
# openvswitch-switch-dpdk for ovs-vswitchd-dpdk (vhost-user ports); dpdk-dev for
# dpdk-testpmd, a real vhost-user frontend (the guest side) in the tests and the demo;
# qemu-system-x86 to check `vucompat frontend-args` against a real QEMU; busybox-static for
# the initramfs of the small test guest QEMU boots and live-migrates (testing/vucompat_testing/guest.py; its
# kernel is downloaded on demand with apt-get download, never installed).
APT_PACKAGES=(python3 python3-venv openvswitch-switch openvswitch-switch-dpdk dpdk-dev qemu-system-x86 busybox-static)

python_ok() {
    python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    case "$pkg" in
        python3|python3-venv) python_ok && continue ;;
    esac
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # never let a package start the system's OVS services: vucompat runs its own
    # servers on private sockets. policy-rc.d answers "denied" while we install.
    policy=/usr/sbin/policy-rc.d
    made_policy=
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && made_policy=1
    fi
    trap 'if [[ -n "$made_policy" ]]; then rm -f "$policy"; fi' EXIT
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp=.venv/.vucompat-stamp
want=$(cat pyproject.toml testing/pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ ! -x .venv/bin/python || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "setup: creating the venv in .venv"
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test]' -e ./testing 2>&1 | grep -v '^WARNING: Location' || true
    .venv/bin/python -c 'import vucompat, vucompat_testing, click, jsonschema, pytest, hypothesis'
    echo "$want" > "$stamp"
fi

# os-vif for tests/test_osvif.py, in a venv of its own as on a compute node (nova-compute's
# environment): vucompat with its osvif extra (the plugin ovs_vucompat), os-vif and ovsdbapp.
# Not in .venv: os-vif brings eventlet, which the ovs library imports whenever it can, and
# every vucompat command would then start slower and print eventlet's deprecation warning.
osvif_stamp=.venv-osvif/.vucompat-stamp
if [[ ! -x .venv-osvif/bin/python || "$(cat "$osvif_stamp" 2>/dev/null)" != "$want" ]]; then
    echo "setup: creating os-vif's venv in .venv-osvif"
    python3 -m venv .venv-osvif
    .venv-osvif/bin/pip install -q --disable-pip-version-check -e '.[osvif,test-osvif]' -e ./testing 2>&1 | grep -v '^WARNING: Location' || true
    .venv-osvif/bin/python -W ignore -c 'import os_vif, ovsdbapp, vif_plug_ovs.ovs, vucompat.osvif.plugin, vucompat_testing.osvif'
    echo "$want" > "$osvif_stamp"
fi
