"""Per-second loss accounting and the throttled "syscall event drop" notices."""

from __future__ import annotations

from sources.kernel.drops import DropMeter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_losses_over_the_threshold_give_one_notice_per_interval_and_none_is_forgotten() -> None:
    clock = Clock()
    meter = DropMeter(threshold=0.01, alert_interval_s=10.0, clock=clock)
    notices = []
    lost_total = 0
    for second in range(1, 26):
        meter.delivered(900)
        lost_total += 100 if second <= 12 else 0
        clock.now = float(second)
        notice = meter.tick(lost_total)
        if notice:
            notices.append(notice)
    # the first second alerts; seconds 2-11 fold into the next alert, second 12 into the last
    assert [n.lost for n in notices] == [100, 1000, 100]
    assert notices[0].worst_ratio == 0.1
    assert sum(n.lost for n in notices) == lost_total


def test_losses_under_the_threshold_do_not_alert_but_are_measured() -> None:
    clock = Clock()
    meter = DropMeter(threshold=0.5, alert_interval_s=1.0, clock=clock)
    meter.delivered(1000)
    clock.now = 1.0
    assert meter.tick(10) is None
    assert (meter.lost_last_second, meter.delivered_last_second) == (10, 1000)


def test_nothing_happens_within_a_second() -> None:
    clock = Clock()
    meter = DropMeter(threshold=0.0, alert_interval_s=0.0, clock=clock)
    clock.now = 0.5
    assert not meter.due() and meter.tick(1000) is None
    clock.now = 1.0
    assert meter.due()
    notice = meter.tick(1000)
    assert notice is not None and notice.lost == 1000
    assert not meter.due()
