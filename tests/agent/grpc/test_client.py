"""The Python client: resume after a killed subscriber, reconnect across restarts, fill gaps from the spool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.grpc.client import AlertClient, Gap, make_filter
from agent.grpc.server import AlertServer
from agent.priority import Priority
from tests.agent.grpc.conftest import StreamReader, make_alert, running_server

pytestmark = pytest.mark.server


def _seqs(items: list[Any]) -> list[int]:
    return [i.seq for i in items]


class TestResume:
    def test_restarted_subscriber_gets_every_missed_alert_once(self, unix_server: AlertServer) -> None:
        """A subscriber killed after seq 10 and restarted with resume_after=10 gets 11.. exactly once, in order."""
        first = AlertClient(socket_path=unix_server.socket_path)
        reader = StreamReader(first.subscribe(resume_after=0))
        for i in range(10):
            unix_server.output.emit(make_alert(i))
        assert _seqs(reader.take(10)) == list(range(1, 11))
        first.close()  # killed
        reader.ended()
        for i in range(10, 25):  # published while nobody listens
            unix_server.output.emit(make_alert(i))
        with AlertClient(socket_path=unix_server.socket_path) as second:
            reader = StreamReader(second.subscribe(resume_after=10))
            for i in range(25, 30):
                unix_server.output.emit(make_alert(i))
            got = reader.take(19)
            assert _seqs(got) == list(range(11, 30))
            assert got[0].output == "alert number 10 (proc.name=cat)"
            assert got[0].output_fields["proc.pid"] == 10 and got[0].output_fields["fd.name"] is None

    def test_client_reconnects_across_a_server_restart_without_loss(self, short_dir: Path) -> None:
        """The client's stream survives an agent restart: alerts raised while it was down arrive, none twice."""
        spool, sock = short_dir / "spool", short_dir / "a.sock"
        server = AlertServer(spool_dir=spool, socket_path=sock)
        server.start()
        client = AlertClient(socket_path=sock, backoff_initial_s=0.05, backoff_max_s=0.2)
        try:
            reader = StreamReader(client.subscribe(allow=[make_filter(min_priority=Priority.WARNING)]))
            assert server.fanout.wait_for_subscribers(1, 20)
            for i in range(5):
                server.output.emit(make_alert(i))
            assert _seqs(reader.take(5)) == [1, 2, 3, 4, 5]
            server.stop(grace_s=0)
            server = AlertServer(spool_dir=spool, socket_path=sock)
            for i in range(5, 8):  # raised before anyone could reconnect
                server.output.emit(make_alert(i, priority=Priority.ERROR if i != 6 else Priority.DEBUG))
            server.start()
            for i in range(8, 10):
                server.output.emit(make_alert(i))
            assert _seqs(reader.take(4)) == [6, 8, 9, 10]
            assert client.reconnects >= 1
        finally:
            client.close()
            server.stop(grace_s=0)

    def test_gap_from_a_slow_reader_is_filled_from_the_spool(self, short_dir: Path) -> None:
        """With fill_gaps, a queue overflow is repaired by resubscribing: the caller sees every alert, no Gap."""
        with running_server(short_dir / "spool", socket_path=short_dir / "a.sock",
                            subscriber_queue_size=5) as server:
            client = AlertClient(socket_path=server.socket_path)
            try:
                stream = client.subscribe(resume_after=0)
                for i in range(3):
                    server.output.emit(make_alert(i))
                received = [next(stream) for _ in range(3)]
                assert server.fanout.wait_for_subscribers(1, 20)
                for i in range(3, 2003):  # far more than the queue and the transport buffers hold
                    server.output.emit(make_alert(i))
                with capture_logs() as logs:
                    reader = StreamReader(stream)
                    received += reader.take(2000)
                assert [e for e in logs if e["event"] == "subscription_gap_filling"], "no gap happened"
                assert not [i for i in received if isinstance(i, Gap)]
                assert _seqs(received) == list(range(1, 2004))
            finally:
                client.close()

    def test_alerts_dropped_from_the_spool_surface_as_a_gap(self, short_dir: Path) -> None:
        """Resuming from before the spool's oldest record yields a Gap naming the lost range first."""
        with running_server(short_dir / "spool", socket_path=short_dir / "a.sock",
                            spool_max_bytes=64 * 1024) as server:
            for i in range(2000):
                server.output.emit(make_alert(i))
            oldest = server.spool.first_seq
            assert oldest > 1
            with AlertClient(socket_path=server.socket_path) as client:
                reader = StreamReader(client.subscribe(resume_after=0))
                got = reader.take(2000 - oldest + 2)
                assert got[0] == Gap(oldest - 1, 1, oldest - 1)
                assert _seqs(got[1:]) == list(range(oldest, 2001))
