"""Per-second accounting of syscall records lost in the kernel, and when that deserves an alert.

Falco reports lost syscall events as "syscall event drop" with a threshold and a rate limit; this
meter does the same: each second it compares lost with delivered records, and when the lost
fraction passes the threshold it yields a notice, at most one per interval, carrying every loss
since the previous notice so that none goes unreported.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from agent.source import DropNotice


class DropMeter:
    def __init__(self, *, threshold: float, alert_interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.alert_interval_s = alert_interval_s
        self._clock = clock
        self._second_start = clock()
        self._last_lost_total = 0
        self._delivered_second = 0
        self._pending_lost = 0
        self._pending_delivered = 0
        self._pending_since = self._second_start
        self._worst = 0.0
        self._last_alert = float("-inf")
        self.lost_last_second = 0
        self.delivered_last_second = 0

    def delivered(self, count: int) -> None:
        self._delivered_second += count

    def due(self) -> bool:
        """Whether a second has passed, so that tick() has one to close (the kernel's counter is read only then)."""
        return self._clock() - self._second_start >= 1.0

    def tick(self, lost_total: int) -> DropNotice | None:
        """Called with the kernel's lost total; closes a second when one has passed."""
        now = self._clock()
        if now - self._second_start < 1.0:
            return None
        lost = max(0, lost_total - self._last_lost_total)
        self._last_lost_total = lost_total
        delivered, self._delivered_second = self._delivered_second, 0
        self._second_start = now
        self.lost_last_second, self.delivered_last_second = lost, delivered
        ratio = lost / (lost + delivered) if lost else 0.0
        if lost and ratio > self.threshold:
            self._pending_lost += lost
            self._worst = max(self._worst, ratio)
        self._pending_delivered += delivered
        if not self._pending_lost or now - self._last_alert < self.alert_interval_s:
            return None
        notice = DropNotice("syscall event drop", self._pending_lost, self._pending_delivered, lost_total,
                            self._worst, now - self._pending_since)
        self._last_alert = now
        self._pending_lost = self._pending_delivered = 0
        self._worst = 0.0
        self._pending_since = now
        return notice
