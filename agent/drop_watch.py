"""Turns growing `dropped` counters of outputs into `Falco Agent Events Dropped` internal alerts, at most one per
output per `interval_s`, so that a drop is never silent and a burst of drops is never an alert storm."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from agent.alert import Alert
from agent.internal_alerts import InternalAlerts


class DropWatch:
    """Called from the engine loop between batches; reads counters only every `interval_s`."""

    def __init__(self, outputs: Sequence[Any], *, alerts: InternalAlerts, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._outputs = [o for o in outputs if callable(getattr(o, "counters", None))]
        self._alerts = alerts
        self.interval_s = interval_s
        self._clock = clock
        self._next_at = clock() + interval_s
        self._reported = {id(o): 0 for o in self._outputs}
        # The drop alerts of the last check go to every output: an output that is down drops them too, and those
        # drops alone must not raise the next alert (with syslog down, each alert would beget the next, forever).
        self._raised_last = 0

    def check(self) -> list[Alert]:
        """One alert per output whose dropped count grew since the last report."""
        now = self._clock()
        if now < self._next_at:
            return []
        self._next_at = now + self.interval_s
        out = []
        for output in self._outputs:
            total = int(output.counters().get("dropped", 0))
            count = total - self._reported[id(output)]
            self._reported[id(output)] = total
            if count > self._raised_last:
                out.append(self._alerts.events_dropped(f"output:{output.name}", count, total=total))
        self._raised_last = len(out)
        return out
