"""A certificate authority for tests, the demo and the benchmarks, made with ovs-pki."""

from __future__ import annotations

import subprocess
from pathlib import Path

from vucompat.ovsdb.tls import SslOptions


class Pki:
    """A certificate authority made with ovs-pki in `directory`: identity(name) signs
    a certificate whose CN is exactly `name` (`-u`), as RBAC compares it with a
    host's name. Raises subprocess.CalledProcessError when ovs-pki fails."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ovs-pki", f"--dir={directory / 'ca'}", "init"], check=True, capture_output=True)

    def identity(self, name: str) -> SslOptions:
        """Return the key, certificate and CA files of `name`, made on first use."""
        key = self.directory / f"{name}-privkey.pem"
        if not key.exists():
            subprocess.run(["ovs-pki", f"--dir={self.directory / 'ca'}", "-u", "req+sign", name, "switch"],
                           cwd=self.directory, check=True, capture_output=True)
        return SslOptions(str(key), str(self.directory / f"{name}-cert.pem"),
                          str(self.directory / "ca" / "switchca" / "cacert.pem"))
