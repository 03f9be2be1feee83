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
