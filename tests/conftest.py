"""Shared fixtures: the shipped tables, and builders for table/host directories."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import pytest

from vucompat.core.tables import shipped_tables_dir
from vucompat_testing.tablegen import table_text_until

#: the tests, and the commands they start (which inherit the environment), keep their
#: table cache (vucompat/core/tablecache.py) here, never in the user's ~/.cache
os.environ["VUCOMPAT_CACHE_DIR"] = tempfile.mkdtemp(prefix="vucompat-test-cache-")
atexit.register(shutil.rmtree, os.environ["VUCOMPAT_CACHE_DIR"], True)

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def shipped() -> Path:
    return shipped_tables_dir()


@pytest.fixture(autouse=True)
def _no_environment_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never pick up tables from the machine's environment."""
    monkeypatch.delenv("VUCOMPAT_TABLES", raising=False)


def build_host(root: Path, name: str, upstream_until: str | None = None, capabilities: str | None = None,
               extra: dict[str, str] | None = None, distro: bool = True) -> Path:
    """A host directory under `root`: the shipped upstream table (cut after
    `upstream_until`), the fc26 lineage, a capabilities file, `extra` files."""
    shipped = shipped_tables_dir()
    host = root / name
    host.mkdir()
    text = (shipped / "upstream.ovs-dpdk.toml").read_text()
    if upstream_until:
        text = table_text_until(text, upstream_until)
    (host / "upstream.ovs-dpdk.toml").write_text(text)
    if distro:
        shutil.copy(shipped / "fc26.ovs-dpdk.toml", host)
    if capabilities is not None:
        (host / "capabilities.toml").write_text(capabilities)
    for file, content in (extra or {}).items():
        (host / file).write_text(content)
    return host


@pytest.fixture
def make_host(tmp_path: Path) -> Callable[..., Path]:
    """make_host(name, upstream_until=None, capabilities=None, extra={file: text}) -> dir."""
    return lambda name, **kw: build_host(tmp_path, name, **kw)


def capabilities_toml(virtio: list[str], protocol: list[str], queue_pairs: int = 128,
                      rx: int = 1024, tx: int = 1024) -> str:
    def names(values: list[str]) -> str:
        return "[" + ", ".join(f'"{v}"' for v in values) + "]"

    return (f"virtio_features = {names(virtio)}\nprotocol_features = {names(protocol)}\n"
            f"max_queue_pairs = {queue_pairs}\nmax_rx_queue_size = {rx}\nmax_tx_queue_size = {tx}\n")


@pytest.fixture
def ovsdb_servers():
    """make(name, tcp=False, vswitch=True, schema=None) -> a started private
    ovsdb-server (a short /tmp directory: unix socket paths are limited to 108
    bytes); every server is stopped by its pid at teardown."""
    import tempfile

    from vucompat_testing.ovsdb_server import OvsdbSandbox

    if shutil.which("ovsdb-server") is None:
        pytest.fail("ovsdb-server is not installed: run `make setup` (Debian openvswitch-switch)")
    started: list[OvsdbSandbox] = []
    dirs: list[str] = []

    def make(name: str = "host", tcp: bool = False, vswitch: bool = True, schema: Path | None = None):
        directory = Path(tempfile.mkdtemp(prefix=f"vuc-{name}-", dir="/tmp"))
        dirs.append(str(directory))
        server = OvsdbSandbox(directory, vswitch=vswitch, tcp=tcp)
        if schema is not None:
            server.create(schema)
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
    for directory in dirs:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def standalone_fleet():
    """A standalone ovsdb-server serving the fleet database (no cluster, no RBAC), on a
    private unix socket: agents publish into it with --fleet its unix_remote."""
    import tempfile

    from vucompat.ovsdb.schema import FLEET_SCHEMA_FILE
    from vucompat_testing.ovsdb_server import OvsdbSandbox

    server = OvsdbSandbox(Path(tempfile.mkdtemp(prefix="vuc-fleet1-", dir="/tmp")), vswitch=False)
    server.create(FLEET_SCHEMA_FILE)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.directory, ignore_errors=True)
