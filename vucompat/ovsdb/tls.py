"""SSL for ssl: remotes: the files (SslOptions) and the process-wide state. The
ovs library keeps its key, certificate and CA files per process (it has no
per-stream ones): configure_ssl() sets them, and rpc.connect() refuses an ssl:
remote until they were set."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SslOptions:
    """Files for ssl: remotes (as made by ovs-pki)."""

    private_key: str
    certificate: str
    ca_cert: str

    def cli_args(self) -> list[str]:
        """The same files as `vucompat` options."""
        return ["--ssl-key", self.private_key, "--ssl-cert", self.certificate, "--ssl-ca", self.ca_cert]


_ssl_configured = False


def configure_ssl(ssl: SslOptions | None) -> None:
    """Set the process-wide SSL files of the ovs library (None: leave them as they are)."""
    global _ssl_configured
    if ssl is not None:
        import ovs.stream  # here: SslOptions alone needs no ovs library (the CLI builds it early)

        _ssl_configured = True
        ovs.stream.Stream.ssl_set_private_key_file(ssl.private_key)
        ovs.stream.Stream.ssl_set_certificate_file(ssl.certificate)
        ovs.stream.Stream.ssl_set_ca_cert_file(ssl.ca_cert)


def ssl_configured() -> bool:
    """Whether SSL files were given in this process (an ssl: remote needs them)."""
    return _ssl_configured
