"""A benchmark refuses to print figures for work it did not do (bench/accounting.py)."""

from __future__ import annotations

import pytest
from accounting import BenchmarkInvalid, Tally, main_guard


def test_every_offered_event_evaluated_passes() -> None:
    Tally("k8s", offered=10, evaluated=10, alerts=3, expect_alerts=True).verify()


@pytest.mark.parametrize(("tally", "message"), [
    (Tally("cloudtrail", offered=300, evaluated=0), "cloudtrail: 0 events evaluated of 300 offered"),
    (Tally("k8s", offered=300, evaluated=299, alerts=5, expect_alerts=True), "299 events evaluated of 300"),
    (Tally("k8s", offered=300, evaluated=300, alerts=0, expect_alerts=True), "samples known to alert raised no alert"),
    (Tally("empty"), "empty: nothing was offered"),
])
def test_less_work_than_offered_is_refused(tally: Tally, message: str) -> None:
    with pytest.raises(BenchmarkInvalid, match=message):
        tally.verify()


def test_quiet_samples_need_not_alert() -> None:
    Tally("reads", offered=5, evaluated=5, alerts=0, expect_alerts=False).verify()


def test_an_invalid_run_exits_1_with_the_reason_and_no_figures(capsys: pytest.CaptureFixture[str]) -> None:
    def main() -> int:
        Tally("cloudtrail", offered=144, evaluated=0).verify()
        print('{"cloudtrail_events_per_s": 145000}')
        return 0

    assert main_guard(main) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "benchmark invalid, no figures: cloudtrail: 0 events evaluated of 144 offered" in err
