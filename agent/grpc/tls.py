"""TLS material for the gRPC server and client: PEM files in, grpc credentials out.

Server: a certificate and key make TLS; adding a client CA makes it mutual TLS, where the server
requires a client certificate and verifies it against that CA. Client: a CA to verify the
server, and optionally its own certificate and key for mutual TLS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from agent.errors import ConfigError

__all__ = ["ClientTls", "ServerTls"]


def _read(path: str | os.PathLike[str] | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read TLS {what} {path}: {exc.strerror}") from None


@dataclass(frozen=True, slots=True)
class ServerTls:
    """Server certificate and key (PEM files); with `client_ca`, clients must present a certificate it signed."""

    cert: str | os.PathLike[str]
    key: str | os.PathLike[str]
    client_ca: str | os.PathLike[str] | None = None

    @property
    def is_mutual(self) -> bool:
        return self.client_ca is not None

    def credentials(self) -> grpc.ServerCredentials:
        cert, key = _read(self.cert, "certificate"), _read(self.key, "key")
        assert cert is not None and key is not None
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=_read(self.client_ca, "client CA"), require_client_auth=self.is_mutual,
        )


@dataclass(frozen=True, slots=True)
class ClientTls:
    """The CA that signed the server's certificate, and for mutual TLS this client's certificate and key."""

    ca: str | os.PathLike[str] | None = None
    cert: str | os.PathLike[str] | None = None
    key: str | os.PathLike[str] | None = None
    server_name: str | None = None  # verify the server certificate for this name instead of the host

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ConfigError("a client certificate needs its key, and a key its certificate")

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "CA"), private_key=_read(self.key, "key"),
            certificate_chain=_read(self.cert, "certificate"),
        )

    def channel_options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
