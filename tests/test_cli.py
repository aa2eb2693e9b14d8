"""The CLI through click's CliRunner, and once as a real subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import FIXTURES, capabilities_toml
from vucompat.core import catalog
from vucompat.cli import main


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def run_json(*args: str):
    code, out, err = run(*args, "--format", "json")
    return code, json.loads(out)


def test_features_lists_the_catalog_and_decodes_masks():
    code, data = run_json("features")
    assert code == 0 and len(data) == len(catalog.FEATURES)
    mq = next(f for f in data if f["name"] == "VIRTIO_NET_F_MQ")
    assert mq["bit"] == 22 and mq["requires"] == [["VIRTIO_NET_F_CTRL_VQ"]] and mq["requirement_breaks_guest"]
    code, out, _ = run("features", "--decode", "0x0000000950008000")
    assert code == 0 and out.split() == ["VIRTIO_NET_F_MRG_RXBUF", "VIRTIO_RING_F_INDIRECT_DESC",
                                         "VHOST_USER_F_PROTOCOL_FEATURES", "VIRTIO_F_VERSION_1",
                                         "VIRTIO_F_IN_ORDER"]
    code, out, err = run("features", "--decode", "0xnope")
    assert code == 2 and "is not a mask" in err


def test_list_json_contract():
    code, data = run_json("list")
    assert code == 0
    assert data[0]["name"] == "upstream.ovs-dpdk.v3.2"
    assert all({"name", "released", "digest"} <= set(item) for item in data)


def test_list_host_shows_runnable(make_host):
    caps = capabilities_toml(catalog.mask_to_names(0xD7C66A7CA, "virtio"), catalog.mask_to_names(0xCBF, "protocol"))
    host = make_host("b", upstream_until="2.13", capabilities=caps)
    code, data = run_json("list", "--host", str(host))
    by_name = {m["name"]: m for m in data}
    assert by_name["upstream.ovs-dpdk.v2.13"]["runnable"] is True
    assert by_name["upstream.ovs-dpdk.v2.11"]["unavailable"][0]["name"] == "VIRTIO_NET_F_HOST_UFO"
    code, out, _ = run("list", "--host", str(host))
    assert "no: missing VIRTIO_NET_F_HOST_UFO" in out


def test_show_json_contract_and_text():
    code, data = run_json("show", "upstream.ovs-dpdk.v2.13")
    assert code == 0
    for key in ("name", "lineage", "version", "released", "digest", "virtio_features", "protocol_features",
                "max_queue_pairs", "max_rx_queue_size", "max_tx_queue_size"):
        assert key in data
    assert data["released"] == "2020-02-14" and "VIRTIO_NET_F_HOST_UFO" not in data["virtio_features"]
    code, out, _ = run("show", "upstream.ovs-dpdk.v2.13", "--hex")
    assert "0x0000000d7c66a7ca" in out and "VIRTIO_NET_F_GSO  (deprecated)" in out


def test_compare_exit_codes_and_json():
    code, data = run_json("compare", "upstream.ovs-dpdk.v3.2", "upstream.ovs-dpdk.v2.15")
    assert code == 0 and data["result"] == "superset"
    assert data["responsible"] == [{"kind": "virtio_feature", "name": "VIRTIO_NET_F_CSUM", "a": True, "b": False}]
    code, data = run_json("compare", "upstream.ovs-dpdk.v3.2", "upstream.ovs-dpdk.v2.11")
    assert code == 1 and data["result"] == "incompatible"


def test_baseline_of_modes_and_capabilities(tmp_path: Path):
    caps = tmp_path / "caps.toml"
    caps.write_text(capabilities_toml(["VIRTIO_NET_F_CTRL_VQ", "VIRTIO_NET_F_MQ", "VIRTIO_F_VERSION_1",
                                       "VHOST_USER_F_PROTOCOL_FEATURES"], ["VHOST_USER_PROTOCOL_F_MQ"], 4))
    code, data = run_json("baseline", "upstream.ovs-dpdk.v2.6", str(caps))
    assert code == 0
    assert data["virtio_features"] == ["VIRTIO_NET_F_CTRL_VQ", "VIRTIO_NET_F_MQ", "VHOST_USER_F_PROTOCOL_FEATURES",
                                       "VIRTIO_F_VERSION_1"]
    assert data["max_queue_pairs"] == 4 and data["lineage"] == "custom.baseline"


def test_negotiate_text_and_json(make_host):
    a, b = make_host("a"), make_host("b", upstream_until="2.13")
    code, data = run_json("negotiate", "--source", str(a), "--dest", str(b))
    assert code == 0 and data["mode"] == "upstream.ovs-dpdk.v2.13"
    assert [c["name"] for c in data["candidates"]] == [
        "upstream.ovs-dpdk.v3.2", "upstream.ovs-dpdk.v2.15", "upstream.ovs-dpdk.v2.13"]
    assert data["candidates"][0]["reasons"] == [{"kind": "missing", "side": "destination"}]
    code, out, _ = run("negotiate", "--source", str(a), "--dest", str(b))
    assert "mode: upstream.ovs-dpdk.v2.13" in out and "refused: not defined on the destination" in out


def test_negotiate_no_common_mode_exits_1(make_host):
    a = make_host("a", distro=False)
    b = make_host("b", distro=False, capabilities=capabilities_toml(["VIRTIO_F_VERSION_1"], []))
    code, data = run_json("negotiate", "--source", str(a), "--dest", str(b))
    assert code == 1 and data["mode"] is None and len(data["candidates"]) == 7


def test_lint_exit_codes(tmp_path: Path, shipped: Path):
    code, data = run_json("lint", str(shipped))
    # the orphan offload bits real backends offer: upstream 2.11 (HOST_ECN, HOST_UFO)
    assert code == 0 and data["ok"] and data["errors"] == [] and len(data["warnings"]) == 2
    code, _, _ = run("lint", str(shipped), "--strict")
    assert code == 1
    shutil.copy(FIXTURES / "invalid" / "duplicate_version" / "acme.vswitch.toml", tmp_path)
    code, out, _ = run("lint", str(tmp_path))
    assert code == 1 and "version 1.1 is listed twice" in out


@pytest.mark.parametrize("args, message", [
    (["show", "upstream.ovs-dpdk.v7"], "unknown mode upstream.ovs-dpdk.v7"),
    (["list", "--tables", "/nonexistent"], "does not exist"),
    (["list", "--tables", str(FIXTURES / "invalid" / "unknown_key")], "mode[1].relased: unknown key"),
    (["negotiate", "--source", "/nonexistent", "--dest", "/nonexistent"], "is not a directory"),
    (["baseline", "/nonexistent/caps.toml"], "cannot read"),
    (["compare", "upstream.ovs-dpdk.v2.6"], "Missing argument"),
    (["list", "--format", "yaml"], "Invalid value"),
])
def test_bad_input_exits_2_without_traceback(args, message):
    code, out, err = run(*args)
    assert code == 2
    assert message in err and "Traceback" not in out + err


def test_real_subprocess(make_host):
    """The installed console script, as an operator runs it."""
    env = {**os.environ, "NO_COLOR": "1"}
    exe = Path(sys.executable).parent / "vucompat"
    a, b = make_host("a"), make_host("b", upstream_until="2.11")
    done = subprocess.run([str(exe), "negotiate", "--source", str(a), "--dest", str(b), "--format", "json"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["mode"] == "upstream.ovs-dpdk.v2.11"
    bad = subprocess.run([str(exe), "show", "nope"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "unknown mode nope" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("command", [["lint"], ["list", "--tables"]])
def test_a_table_that_is_not_utf8_is_a_clear_error_not_a_traceback(tmp_path, shipped, command):
    site = tmp_path / "site"
    site.mkdir()
    text = (shipped / "fc26.ovs-dpdk.toml").read_bytes()
    (site / "fc26.ovs-dpdk.toml").write_bytes(text.replace(b"\n", b"\n# caf\xe9\n", 1))  # Latin-1, not UTF-8
    code, out, err = run(*command, str(site))
    assert code != 0
    said = out + err  # lint reports on stdout, the other commands on stderr
    assert "fc26.ovs-dpdk.toml" in said and "not UTF-8 (byte 0xe9 at offset" in said and "save the file as UTF-8" in said
    assert "Traceback" not in said
