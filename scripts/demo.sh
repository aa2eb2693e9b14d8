#!/usr/bin/env bash
# The main job, offline: two hosts as directories with the shipped tables, then
# negotiate, compare, baseline, and a bad table refused. (The OVSDB registry issue
# turns the hosts into real ovsdb-servers.)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
work=$(mktemp -d "${TMPDIR:-/tmp}/vucompat-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT

bold=; plain=
if [[ -t 1 ]]; then bold=$'\033[1m'; plain=$'\033[0m'; fi
step() { printf '\n%s== %s%s\n$ %s\n' "$bold" "$1" "$plain" "${*:2}"; "${@:2}" || echo "(exit code $?)"; }

# Host A: installed with today's vucompat, all shipped tables; its backend is
# assumed to offer what its modes need.
mkdir -p "$work/host-a" "$work/host-b"
cp compat_tables/*.toml "$work/host-a/"
# Host B: an older install whose upstream table stops at OVS 2.13, and whose
# backend (OVS 2.13 + DPDK 19.11) offers the 2.13 masks.
python3 - "$work/host-b/upstream.ovs-dpdk.toml" <<'PY'
import sys
text = open("compat_tables/upstream.ovs-dpdk.toml").read()
chunks = text.split("\n[[mode]]\n")
keep = [c for c in chunks if not c.lstrip().startswith(('version = "2.15"', 'version = "3.2"'))]
open(sys.argv[1], "w").write("\n[[mode]]\n".join(keep))
PY
cat > "$work/host-b/capabilities.toml" <<'TOML'
# what host B's backend offers (OVS 2.13, DPDK 19.11: virtio 0xd7c66a7ca, protocol 0xcbf)
virtio_features = ["VIRTIO_NET_F_GUEST_CSUM", "VIRTIO_NET_F_MTU", "VIRTIO_NET_F_GSO",
  "VIRTIO_NET_F_GUEST_TSO4", "VIRTIO_NET_F_GUEST_TSO6", "VIRTIO_NET_F_GUEST_ECN",
  "VIRTIO_NET_F_GUEST_UFO", "VIRTIO_NET_F_HOST_ECN", "VIRTIO_NET_F_MRG_RXBUF",
  "VIRTIO_NET_F_CTRL_VQ", "VIRTIO_NET_F_CTRL_RX", "VIRTIO_NET_F_GUEST_ANNOUNCE",
  "VIRTIO_NET_F_MQ", "VHOST_F_LOG_ALL", "VIRTIO_F_ANY_LAYOUT", "VIRTIO_RING_F_INDIRECT_DESC",
  "VIRTIO_RING_F_EVENT_IDX", "VHOST_USER_F_PROTOCOL_FEATURES", "VIRTIO_F_VERSION_1",
  "VIRTIO_F_RING_PACKED", "VIRTIO_F_IN_ORDER"]
protocol_features = ["VHOST_USER_PROTOCOL_F_MQ", "VHOST_USER_PROTOCOL_F_LOG_SHMFD",
  "VHOST_USER_PROTOCOL_F_RARP", "VHOST_USER_PROTOCOL_F_REPLY_ACK", "VHOST_USER_PROTOCOL_F_MTU",
  "VHOST_USER_PROTOCOL_F_BACKEND_REQ", "VHOST_USER_PROTOCOL_F_CRYPTO_SESSION",
  "VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD", "VHOST_USER_PROTOCOL_F_HOST_NOTIFIER"]
max_queue_pairs = 128
max_rx_queue_size = 1024
max_tx_queue_size = 1024
TOML

repo=$PWD
cd "$work"  # short host names in the output: host-a, host-b
step "the shipped tables" vucompat list
step "host B: its modes, and which its backend can run" vucompat list --host host-b
step "negotiate A -> B: the newest mode both define identically and can run" \
    vucompat negotiate --source host-a --dest host-b
step "the same, as JSON for Nova" vucompat negotiate --source host-a --dest host-b --format json
step "policy recommended: the same without deprecated features" \
    vucompat negotiate --source host-a --dest host-b --policy recommended
step "why 3.2 cannot go to B: compare it with B's newest" \
    vucompat compare upstream.ovs-dpdk.v3.2 upstream.ovs-dpdk.v2.13
step "baseline of host B's backend and the distro mode" \
    vucompat baseline host-b/capabilities.toml fc26.ovs-dpdk.v2.8

# A packager's typo: the whole directory is refused, nothing is loaded.
mkdir -p bad
cp "$repo/compat_tables/fc26.ovs-dpdk.toml" bad/
sed -i 's/"VIRTIO_RING_F_INDIRECT_DESC",/"VIRTIO_RING_F_INDIRECT_DESCS",/' bad/fc26.ovs-dpdk.toml
step "a bad table is refused with file, key and a suggestion" vucompat list --tables bad
step "lint of the shipped tables and their released.lock" vucompat lint "$repo/compat_tables"
