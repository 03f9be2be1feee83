"""The server over real gRPC: transports, limits, filters, Get, Version, health, restarts."""

from __future__ import annotations

import dataclasses
import stat
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.errors import ConfigError
from agent.grpc._gen.falco_agent.v1 import alerts_pb2 as pb
from agent.grpc.client import make_filter
from agent.grpc.server import AlertServer
from agent.grpc.service import MAX_BATCH_BYTES
from agent.priority import Priority
from tests.agent.grpc.conftest import WAIT_S, StreamReader, make_alert, running_server, seqs, stub, subscribe

pytestmark = pytest.mark.server


class TestTransports:
    def test_unix_socket_is_private_to_the_owner(self, unix_server: AlertServer) -> None:
        """The socket file has mode 0600."""
        assert unix_server.socket_path is not None
        assert stat.S_IMODE(unix_server.socket_path.stat().st_mode) == 0o600

    def test_socket_file_is_removed_at_stop(self, short_dir: Path) -> None:
        """Stopping the server removes its socket file."""
        with running_server(short_dir / "spool", socket_path=short_dir / "a.sock") as server:
            assert (short_dir / "a.sock").exists()
        assert not (short_dir / "a.sock").exists()
        assert server.socket_path is not None

    def test_tcp_loopback_serves_alerts(self, short_dir: Path) -> None:
        """A server on 127.0.0.1:0 reports its port and streams alerts over TCP."""
        with running_server(short_dir / "spool", address="127.0.0.1:0", allow_insecure_tcp=True) as server:
            assert server.port and server.tcp_target is not None
            with grpc.insecure_channel(server.tcp_target) as channel:
                reader = StreamReader(subscribe(channel, resume_after=0))
                for i in range(5):
                    server.output.emit(make_alert(i))
                assert seqs(reader.take(5)) == [1, 2, 3, 4, 5]

    def test_plain_tcp_needs_explicit_consent(self, short_dir: Path) -> None:
        """TCP without TLS is refused unless allow_insecure_tcp is set."""
        with pytest.raises(ConfigError, match="needs TLS"):
            AlertServer(spool_dir=short_dir / "spool", address="127.0.0.1:0")

    def test_health_reports_serving(self, unix_server: AlertServer, channel_to: Callable[..., grpc.Channel]) -> None:
        """The standard health service answers SERVING for the server and for our service."""
        health = health_pb2_grpc.HealthStub(channel_to(unix_server))
        for service in ("", "falco_agent.v1.AlertService", "falco.outputs.service"):
            # types-grpcio-health-checking declares no methods on HealthStub; grpc_health sets them at runtime.
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=WAIT_S)  # type: ignore[attr-defined]
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


class TestLimits:
    def test_subscribers_over_the_limit_are_refused(self, short_dir: Path,
                                                    channel_to: Callable[..., grpc.Channel]) -> None:
        """With max_subscribers=2, a third subscription fails with RESOURCE_EXHAUSTED; a slot frees on cancel."""
        with running_server(short_dir / "spool", socket_path=short_dir / "a.sock", max_subscribers=2) as server:
            channel = channel_to(server)
            first, second = subscribe(channel), subscribe(channel)
            assert server.fanout.wait_for_subscribers(2, WAIT_S)
            third = StreamReader(subscribe(channel))
            error = third.ended()
            assert isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            first.cancel()
            fourth = StreamReader(subscribe(channel, resume_after=0))
            server.output.emit(make_alert(1))
            assert seqs(fourth.take(1)) == [1]
            second.cancel()


class TestFilters:
    def test_each_subscriber_gets_exactly_what_its_filter_passes(
            self, unix_server: AlertServer, channel_to: Callable[..., grpc.Channel]) -> None:
        """Priority, source, rule-glob and tag filters deliver exactly the matching alerts."""
        channel = channel_to(unix_server)
        cases = {
            "priority": ([make_filter(min_priority=Priority.ERROR)], []),
            "source": ([make_filter(sources=["k8s_audit"])], []),
            "rules": ([make_filter(rules=["Shell *"])], []),
            "tags_any": ([make_filter(tags_any=["mitre_execution", "k8s"])], []),
            "tags_all": ([make_filter(tags_all=["container", "mitre_execution"])], []),
            "deny": ([], [make_filter(sources=["syscall"])]),
        }
        alerts = [
            make_alert(0, priority=Priority.CRITICAL, rule="Shell in container", tags=("container", "mitre_execution")),
            make_alert(1, priority=Priority.NOTICE, source="k8s_audit", rule="Create privileged pod", tags=("k8s",)),
            make_alert(2, priority=Priority.ERROR, source="aws_cloudtrail", rule="Console login without MFA",
                       tags=("cloud",)),
            make_alert(3, priority=Priority.WARNING, rule="Shell history deleted", tags=("container",)),
            make_alert(4, priority=Priority.DEBUG, rule="Write below etc", tags=("mitre_execution",)),
        ]
        expected = {"priority": [1, 3], "source": [2], "rules": [1, 4], "tags_any": [1, 2, 5],
                    "tags_all": [1], "deny": [2, 3]}
        readers = {name: StreamReader(subscribe(channel, allow=a, deny=d, resume_after=0))
                   for name, (a, d) in cases.items()}
        for alert in alerts:
            unix_server.output.emit(alert)
        unix_server.output.emit(make_alert(9, priority=Priority.EMERGENCY, source="k8s_audit", rule="Shell marker",
                                           tags=("container", "mitre_execution", "k8s")))  # seq 6 passes every filter
        for name, reader in readers.items():
            got = seqs(reader.take(len(expected[name]) + 1))
            assert got == [*expected[name], 6], name

    def test_bad_filter_is_rejected(self, unix_server: AlertServer, channel_to: Callable[..., grpc.Channel]) -> None:
        """An invalid filter ends the call with INVALID_ARGUMENT."""
        reader = StreamReader(subscribe(channel_to(unix_server), allow=[pb.AlertFilter(rules=["[unclosed"])],
                                        deny=[pb.AlertFilter()]))
        error = reader.ended()
        assert isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.INVALID_ARGUMENT


class TestSpoolAccess:
    def test_get_returns_a_bounded_filtered_range(self, unix_server: AlertServer,
                                                   channel_to: Callable[..., grpc.Channel]) -> None:
        """Get streams at most `limit` retained alerts after `after_seq` that pass the filter, then ends."""
        for i in range(20):
            unix_server.output.emit(make_alert(i, source="k8s_audit" if i % 2 else "syscall"))
        api = stub(channel_to(unix_server))
        got = list(api.Get(pb.GetRequest(after_seq=5, limit=4, allow_list=[make_filter(sources=["k8s_audit"])]),
                           timeout=WAIT_S))
        assert [a.seq for a in got] == [6, 8, 10, 12]
        assert got[0].output_fields["proc.pid"].int_value == 5
        assert got[0].output_fields["container.privileged"].bool_value is False
        assert got[0].output_fields["container.privileged"].WhichOneof("kind") == "bool_value"
        assert got[0].output_fields["fd.name"].WhichOneof("kind") is None
        assert list(got[0].output_fields["ka.req.pod.volumes.hostpath"].list_value.values) == ["/etc", "/var"]

    def test_version_reports_the_retained_range(self, unix_server: AlertServer,
                                                channel_to: Callable[..., grpc.Channel]) -> None:
        """Version names the API and the oldest and newest sequence numbers held."""
        api = stub(channel_to(unix_server))
        assert (api.Version(pb.VersionRequest(), timeout=WAIT_S).last_seq) == 0
        for i in range(3):
            unix_server.output.emit(make_alert(i))
        reply = api.Version(pb.VersionRequest(), timeout=WAIT_S)
        assert (reply.api_version, reply.first_seq, reply.last_seq) == ("v1", 1, 3)

    def test_resume_past_the_newest_alert_is_out_of_range(self, unix_server: AlertServer,
                                                          channel_to: Callable[..., grpc.Channel]) -> None:
        """Resuming after a number the agent never issued fails with OUT_OF_RANGE instead of waiting silently."""
        reader = StreamReader(subscribe(channel_to(unix_server), resume_after=99))
        error = reader.ended()
        assert isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.OUT_OF_RANGE

    def test_spool_serves_after_an_agent_restart(self, short_dir: Path) -> None:
        """A new server on the same spool folder serves the old alerts and numbers new ones after them."""
        spool, sock = short_dir / "spool", short_dir / "a.sock"
        with running_server(spool, socket_path=sock) as server:
            for i in range(10):
                server.output.emit(make_alert(i))
        with running_server(spool, socket_path=sock) as server, grpc.insecure_channel(f"unix:{sock}") as channel:
            reader = StreamReader(subscribe(channel, resume_after=7))
            for i in range(10, 13):
                server.output.emit(make_alert(i))
            got = reader.take(6)
            assert seqs(got) == [8, 9, 10, 11, 12, 13]
            assert got[0].alert.output == "alert number 7 (proc.name=cat)"


class TestBatching:
    def test_max_batch_packs_queued_alerts_in_order(self, unix_server: AlertServer,
                                                    channel_to: Callable[..., grpc.Channel]) -> None:
        """With max_batch, alerts already waiting arrive as AlertBatch responses of at most that size, in order."""
        for i in range(50):
            unix_server.output.emit(make_alert(i))
        request = pb.SubscribeRequest(resume_after=0, max_batch=16)
        reader = StreamReader(stub(channel_to(unix_server)).Subscribe(request))
        responses = reader.take_until(lambda got: sum(len(r.batch.alerts) or 1 for r in got) >= 50)
        assert all(r.WhichOneof("event") in ("alert", "batch") for r in responses)
        assert max(len(r.batch.alerts) for r in responses) == 16
        flat = [a.seq for r in responses for a in ((r.alert,) if r.HasField("alert") else r.batch.alerts)]
        assert flat == list(range(1, 51))

    def test_batches_stay_under_a_mebibyte_a_default_client_accepts(self, unix_server: AlertServer,
                                                                     channel_to: Callable[..., grpc.Channel]) -> None:
        """Alerts of 300 KB (an audit event's 256 KB URI in the output) are packed at most MAX_BATCH_BYTES at a time:
        one batch of all of them was over the 4 MiB a default client takes, so its stream never moved past it."""
        for i in range(20):
            unix_server.output.emit(dataclasses.replace(make_alert(i), output="u" * 300_000))
        request = pb.SubscribeRequest(resume_after=0, max_batch=256)
        reader = StreamReader(stub(channel_to(unix_server)).Subscribe(request))
        responses = reader.take_until(lambda got: sum(len(r.batch.alerts) or 1 for r in got) >= 20)
        assert max(r.ByteSize() for r in responses) <= MAX_BATCH_BYTES + 16
        flat = [a.seq for r in responses for a in ((r.alert,) if r.HasField("alert") else r.batch.alerts)]
        assert flat == list(range(1, 21))
