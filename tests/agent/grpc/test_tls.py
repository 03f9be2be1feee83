"""TLS and mutual TLS on TCP, with certificates made in the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import trustme

from agent.grpc.client import AlertClient
from agent.grpc.server import AlertServer
from agent.grpc.tls import ClientTls
from tests.agent.grpc.conftest import StreamReader, make_alert, running_server

pytestmark = pytest.mark.server


def _write(path: Path, *blobs: bytes) -> Path:
    path.write_bytes(b"".join(blobs))
    return path


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca, other_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("forwarder@example.test")
    stranger = other_ca.issue_cert("stranger@example.test")
    return {
        "ca": _write(tmp_path / "ca.pem", ca.cert_pem.bytes()),
        "server_cert": _write(tmp_path / "server.pem", *(p.bytes() for p in server.cert_chain_pems)),
        "server_key": _write(tmp_path / "server.key", server.private_key_pem.bytes()),
        "client_cert": _write(tmp_path / "client.pem", *(p.bytes() for p in client.cert_chain_pems)),
        "client_key": _write(tmp_path / "client.key", client.private_key_pem.bytes()),
        "stranger_cert": _write(tmp_path / "stranger.pem", *(p.bytes() for p in stranger.cert_chain_pems)),
        "stranger_key": _write(tmp_path / "stranger.key", stranger.private_key_pem.bytes()),
    }


@pytest.fixture
def mtls_server(tmp_path: Path, pki: dict[str, Path]) -> Iterator[AlertServer]:
    with running_server(tmp_path / "spool", address="127.0.0.1:0", tls_cert=pki["server_cert"],
                        tls_key=pki["server_key"], tls_client_ca=pki["ca"]) as server:
        yield server


def _version_code(server: AlertServer, tls: ClientTls) -> grpc.StatusCode:
    with AlertClient(address=server.tcp_target, tls=tls) as client:
        try:
            client.version()
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


class TestMutualTls:
    def test_client_with_a_certificate_from_the_ca_is_served(self, mtls_server: AlertServer,
                                                              pki: dict[str, Path]) -> None:
        """A client presenting a certificate signed by the configured CA subscribes and receives alerts."""
        tls = ClientTls(ca=pki["ca"], cert=pki["client_cert"], key=pki["client_key"], server_name="localhost")
        with AlertClient(address=mtls_server.tcp_target, tls=tls) as client:
            reader = StreamReader(client.subscribe(resume_after=0, reconnect=False))
            mtls_server.output.emit(make_alert(1))
            assert [a.seq for a in reader.take(1)] == [1]

    def test_client_without_a_certificate_is_refused(self, mtls_server: AlertServer, pki: dict[str, Path]) -> None:
        """No client certificate: the handshake fails and the call is UNAVAILABLE."""
        assert _version_code(mtls_server, ClientTls(ca=pki["ca"], server_name="localhost")) \
            == grpc.StatusCode.UNAVAILABLE

    def test_client_with_a_certificate_from_another_ca_is_refused(self, mtls_server: AlertServer,
                                                                  pki: dict[str, Path]) -> None:
        """A certificate the server's client CA did not sign is refused."""
        tls = ClientTls(ca=pki["ca"], cert=pki["stranger_cert"], key=pki["stranger_key"], server_name="localhost")
        assert _version_code(mtls_server, tls) == grpc.StatusCode.UNAVAILABLE

    def test_plaintext_client_is_refused(self, mtls_server: AlertServer) -> None:
        """A client without TLS cannot talk to the TLS port."""
        assert mtls_server.tcp_target is not None
        with grpc.insecure_channel(mtls_server.tcp_target) as channel:
            from agent.grpc._gen.falco_agent.v1 import alerts_pb2 as pb
            from agent.grpc._gen.falco_agent.v1 import alerts_pb2_grpc as pb_grpc

            with pytest.raises(grpc.RpcError) as caught:
                pb_grpc.AlertServiceStub(channel).Version(pb.VersionRequest(), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


class TestServerTls:
    def test_server_only_tls_serves_any_client_that_trusts_it(self, tmp_path: Path, pki: dict[str, Path]) -> None:
        """Without a client CA, TLS encrypts and the server does not ask for a client certificate."""
        with running_server(tmp_path / "spool", address="127.0.0.1:0", tls_cert=pki["server_cert"],
                            tls_key=pki["server_key"]) as server:
            assert _version_code(server, ClientTls(ca=pki["ca"], server_name="localhost")) == grpc.StatusCode.OK
