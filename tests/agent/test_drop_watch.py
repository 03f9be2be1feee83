"""Drops at the outputs become internal alerts, at most one per output per interval."""

from __future__ import annotations

from agent.drop_watch import DropWatch
from agent.internal_alerts import InternalAlerts


class DroppingOutput:
    name = "http"

    def __init__(self) -> None:
        self.dropped = 0

    def counters(self) -> dict[str, int]:
        return {"delivered": 0, "dropped": self.dropped}


class TestDropWatch:
    def test_growth_of_dropped_is_reported_once_per_interval_with_the_increment(self) -> None:
        """New drops yield one alert with the count since the last report; no new drops, no alert."""
        now = [0.0]
        output = DroppingOutput()
        watch = DropWatch([output], alerts=InternalAlerts(hostname="n"), interval_s=10, clock=lambda: now[0])
        output.dropped = 3
        assert watch.check() == []  # the interval has not passed
        now[0] = 10
        [alert] = watch.check()
        assert alert.output_fields == {"internal.stage": "output:http", "internal.count": 3, "internal.total": 3}
        output.dropped = 7
        now[0] = 20
        [alert] = watch.check()
        assert alert.output_fields["internal.count"] == 4
        now[0] = 30
        assert watch.check() == []

    def test_an_output_that_drops_the_drop_alerts_does_not_alert_forever(self) -> None:
        """An output that is down (syslog without /dev/log) also drops the drop alerts: one alert for the outage,
        then silence while only those alerts are dropped, and a new alert when real alerts are dropped again.

        Mutation caught: counting every growth (`count > 0`) raises one alert per interval forever."""
        now = [0.0]
        output = DroppingOutput()
        watch = DropWatch([output], alerts=InternalAlerts(hostname="n"), interval_s=10, clock=lambda: now[0])
        output.dropped = 5
        now[0] = 10
        raised = watch.check()
        assert len(raised) == 1
        for tick in range(2, 6):  # each interval, the output drops the drop alerts raised before and nothing else
            output.dropped += len(raised)
            now[0] = 10 * tick
            raised = watch.check()
            assert raised == [], tick
        output.dropped += 4
        now[0] = 60
        [again] = watch.check()
        assert again.output_fields["internal.count"] == 4 and again.output_fields["internal.total"] == 10
