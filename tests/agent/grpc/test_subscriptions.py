"""Fan-out: every subscriber sees every alert its filter passes; a stalled one gets a gap, not the others."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from agent.grpc._gen.falco_agent.v1 import alerts_pb2 as pb
from agent.grpc.filters import match_all
from agent.grpc.server import AlertServer
from agent.grpc.subscriptions import Gap, Published, Subscription
from tests.agent.grpc.conftest import WAIT_S, StreamReader, make_alert, seqs, subscribe


def _item(seq: int) -> Published:
    from agent.grpc.convert import alert_to_proto

    msg = alert_to_proto(make_alert(seq), seq)
    return Published(seq, msg, msg.SerializeToString())


class TestQueue:
    def test_overflow_becomes_one_coalesced_gap(self) -> None:
        """Alerts offered to a full queue are counted into a single gap between the alerts around it."""
        sub = Subscription(match_all, capacity=3)
        for seq in range(1, 9):
            sub.offer(_item(seq))
        first = sub.take(0)
        assert [i.seq if isinstance(i, Published) else i for i in first] == [1, 2, 3, Gap(5, 4, 8)]
        sub.offer(_item(9))
        assert [i.seq for i in sub.take(0)] == [9]  # type: ignore[union-attr]
        assert sub.missed == 5

    def test_take_returns_empty_once_closed(self) -> None:
        """A closed subscription wakes its reader with nothing."""
        sub = Subscription(match_all, capacity=3)
        sub.offer(_item(1))
        sub.close()
        assert sub.take(WAIT_S) == []


pytestmark = pytest.mark.server


class TestFanout:
    def test_fifty_subscribers_each_receive_every_alert_in_order(
            self, unix_server: AlertServer, channel_to: Callable[..., grpc.Channel]) -> None:
        """50 concurrent subscribers all get all 300 alerts, in sequence order."""
        channel = channel_to(unix_server)
        readers = [StreamReader(subscribe(channel, resume_after=0)) for _ in range(50)]
        for i in range(300):
            unix_server.output.emit(make_alert(i))
        for reader in readers:
            assert seqs(reader.take(300)) == list(range(1, 301))

    def test_stalled_subscriber_gets_a_gap_while_others_keep_up(
            self, short_dir, channel_to: Callable[..., grpc.Channel]) -> None:
        """A subscriber that stops reading costs the others nothing; it later sees a gap with the exact count."""
        from tests.agent.grpc.conftest import running_server

        with running_server(short_dir / "spool", socket_path=short_dir / "a.sock",
                            subscriber_queue_size=100) as server:
            # No BDP probing: the stalled client's transport window stays small, so the server feels it.
            stalled_channel = channel_to(server, **{"grpc.http2.bdp_probe": 0})
            stalled = subscribe(stalled_channel)
            fast_channel = channel_to(server)
            fast = [StreamReader(subscribe(fast_channel)) for _ in range(3)]
            assert server.fanout.wait_for_subscribers(4, WAIT_S)
            total, batch = 4000, 50
            for start in range(0, total, batch):
                for i in range(start, start + batch):
                    server.output.emit(make_alert(i))
                for reader in fast:  # each batch reaches every fast subscriber before the next is sent
                    assert seqs(reader.take(batch)) == list(range(start + 1, start + batch + 1))
            slow = StreamReader(stalled)

            def accounted(got: list[pb.SubscribeResponse]) -> int:
                return sum(r.gap.missed if r.WhichOneof("event") == "gap" else 1 for r in got)

            items = slow.take_until(lambda got: accounted(got) == total)
            gaps = [r.gap for r in items if r.WhichOneof("event") == "gap"]
            alerts = [r.alert.seq for r in items if r.WhichOneof("event") == "alert"]
            assert gaps, "the stalled subscriber should have been told it missed alerts"
            assert alerts == sorted(alerts)
            for gap in gaps:
                assert gap.last_missed_seq - gap.first_missed_seq + 1 == gap.missed
                assert not set(alerts) & set(range(gap.first_missed_seq, gap.last_missed_seq + 1))
            server.output.emit(make_alert(total))  # once it reads again, it gets live alerts again
            assert seqs(slow.take(1)) == [total + 1]
            stalled.cancel()
