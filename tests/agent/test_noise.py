"""Noise control: rate limits and dedup windows fold repeats into summary alerts and never hide one."""

from __future__ import annotations

import random
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.alert import Alert
from agent.config.schema import DedupConfig, NoisePolicyConfig, RateLimitConfig
from agent.errors import ConfigError
from agent.noise import NoiseFilter
from agent.priority import Priority

BASE_NS = 1_700_000_000_000_000_000
RULE = "Attach to cluster-admin role"


class FakeClock:
    """Seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def alert(rule: str = RULE, *, user: str = "alice", target: str = "admin", ts_s: float = 0.0,
          priority: Priority = Priority.WARNING) -> Alert:
    fields: dict[str, Any] = {"ka.user.name": user, "ka.target.name": target, "ka.verb": "create"}
    return Alert(rule=rule, priority=priority, source="k8s_audit", ts_ns=BASE_NS + int(ts_s * 1e9),
                 output=f"user={user} target={target}", output_fields=fields, hostname="node-1", tags=("k8s",))


def dedup(match: str = "*", window_s: float = 60.0) -> NoisePolicyConfig:
    return NoisePolicyConfig(match=match, dedup=DedupConfig(fields=("ka.user.name", "ka.target.name"),
                                                            window_s=window_s))


def rate(match: str = "*", alerts: int = 3, per_s: float = 10.0, fields: tuple[str, ...] = ()) -> NoisePolicyConfig:
    return NoisePolicyConfig(match=match, rate=RateLimitConfig(alerts=alerts, per_s=per_s, fields=fields))


class TestDedup:
    def test_repeats_fold_into_one_summary_when_the_window_closes(self) -> None:
        """The first alert passes; its repeats come back as one summary with the count and first/last times."""
        clock = FakeClock()
        noise = NoiseFilter([dedup()], clock=clock)
        assert noise.admit(alert(ts_s=0))
        for i in range(1, 5):
            clock.now += 1
            assert not noise.admit(alert(ts_s=i, priority=Priority.WARNING))
        assert noise.due_summaries() == []
        clock.now += 60
        (summary,) = noise.due_summaries()
        assert (summary.rule, summary.priority, summary.source, summary.tags) == (RULE, Priority.WARNING,
                                                                                  "k8s_audit", ("k8s",))
        assert summary.output_fields == {"ka.user.name": "alice", "ka.target.name": "admin", "suppressed.count": 4,
                                         "suppressed.first_time": BASE_NS + 1_000_000_000,
                                         "suppressed.last_time": BASE_NS + 4_000_000_000,
                                         "suppressed.reason": "dedup"}
        assert summary.ts_ns == BASE_NS + 4_000_000_000
        assert "4 similar alerts suppressed" in summary.output and "ka.user.name=alice" in summary.output
        assert noise.due_summaries() == []

    def test_different_keys_are_independent(self) -> None:
        """Another user or target is a different key: it passes and is counted on its own."""
        clock = FakeClock()
        noise = NoiseFilter([dedup()], clock=clock)
        assert noise.admit(alert(user="alice"))
        assert noise.admit(alert(user="bob"))
        assert noise.admit(alert(user="alice", target="other"))
        assert not noise.admit(alert(user="bob"))
        assert not noise.admit(alert(user="bob"))
        assert not noise.admit(alert(user="alice"))
        clock.now += 61
        counts = {s.output_fields["ka.user.name"]: s.output_fields["suppressed.count"]
                  for s in noise.due_summaries()}
        assert counts == {"bob": 2, "alice": 1}

    def test_a_window_without_repeats_closes_quietly_and_the_next_alert_passes(self) -> None:
        """No summary when nothing was suppressed; after the window the same key passes again."""
        clock = FakeClock()
        noise = NoiseFilter([dedup(window_s=5)], clock=clock)
        assert noise.admit(alert())
        clock.now += 5
        assert noise.due_summaries() == []
        assert noise.admit(alert())
        assert noise.counters()["keys"] == 1

    def test_a_closed_window_not_yet_swept_still_reports(self) -> None:
        """When the next alert arrives after the window but before a sweep, the old summary is still produced."""
        clock = FakeClock()
        noise = NoiseFilter([dedup(window_s=5)], clock=clock)
        noise.admit(alert(ts_s=0))
        noise.admit(alert(ts_s=1))
        clock.now += 6
        assert noise.next_due_s() is not None
        assert noise.admit(alert(ts_s=6))
        (summary,) = noise.due_summaries()
        assert summary.output_fields["suppressed.count"] == 1

    def test_out_of_order_repeats_report_the_earliest_and_latest_event_times(self) -> None:
        """Repeats arriving out of order (several sources or files) still give the true first and last event time.

        Mutation caught: the summary's first time taken from the first-seen alert instead of the minimum
        (agent/noise.py `_Fold.add`).
        """
        clock = FakeClock()
        noise = NoiseFilter([dedup()], clock=clock)
        assert noise.admit(alert(ts_s=10))
        for ts_s in (5, 8, 2, 3):
            clock.now += 1
            assert not noise.admit(alert(ts_s=ts_s))
        clock.now += 60
        (summary,) = noise.due_summaries()
        assert summary.output_fields["suppressed.count"] == 4
        assert summary.output_fields["suppressed.first_time"] == BASE_NS + 2_000_000_000
        assert summary.output_fields["suppressed.last_time"] == BASE_NS + 8_000_000_000
        assert summary.output.startswith("4 similar alerts suppressed (dedup) between "
                                         "2023-11-14T22:13:22.000000000+0000 and 2023-11-14T22:13:28.000000000+0000")

    def test_the_window_ends_exactly_window_s_after_it_opened(self) -> None:
        """A repeat just inside the window is folded; one at exactly `window_s` later opens a new window and passes.

        Mutation caught: the dedup window test `now < window.due_s` flipped to `now <= window.due_s`
        (agent/noise.py `_admit_dedup`), which would fold the alert at the boundary.
        """
        clock = FakeClock()
        noise = NoiseFilter([dedup(window_s=5)], clock=clock)
        assert noise.admit(alert(ts_s=0))
        clock.now = 1004.5
        assert not noise.admit(alert(ts_s=4.5))
        clock.now = 1005.0  # exactly when the window closes, before any sweep by due_summaries
        assert noise.admit(alert(ts_s=5))
        (summary,) = noise.due_summaries()
        assert summary.output_fields["suppressed.count"] == 1
        assert noise.counters()["admitted"] == 2 and noise.counters()["suppressed"] == 1

    def test_missing_key_field_is_a_key_of_its_own(self) -> None:
        """A rule whose output lacks a key field still dedups, with the field shown as <NA>."""
        clock = FakeClock()
        noise = NoiseFilter([NoisePolicyConfig(match="*", dedup=DedupConfig(fields=("proc.name",)))], clock=clock)
        assert noise.admit(alert())
        assert not noise.admit(alert())
        (summary,) = noise.flush()
        assert summary.output_fields["proc.name"] is None and "proc.name=<NA>" in summary.output


class TestRate:
    def test_bucket_lets_n_through_then_folds_and_refills(self) -> None:
        """N alerts per interval pass; the rest are folded, and tokens come back with time."""
        clock = FakeClock()
        noise = NoiseFilter([rate(alerts=3, per_s=30)], clock=clock)
        assert [noise.admit(alert(ts_s=i)) for i in range(5)] == [True, True, True, False, False]
        clock.now += 10  # one token back
        assert noise.admit(alert(ts_s=10)) and not noise.admit(alert(ts_s=10.5))
        assert noise.due_summaries() == []
        clock.now += 20  # 30 s after the first fold
        (summary,) = noise.due_summaries()
        assert summary.output_fields == {"suppressed.count": 3, "suppressed.first_time": BASE_NS + 3_000_000_000,
                                         "suppressed.last_time": BASE_NS + 10_500_000_000,
                                         "suppressed.reason": "rate"}

    def test_a_fold_closed_but_not_yet_swept_still_reports(self) -> None:
        """When the limit bites again after a fold's interval but before a sweep, both summaries come out."""
        clock = FakeClock()
        noise = NoiseFilter([rate(alerts=1, per_s=10)], clock=clock)
        assert [noise.admit(alert(ts_s=0)), noise.admit(alert(ts_s=1))] == [True, False]
        clock.now += 10
        assert [noise.admit(alert(ts_s=10)), noise.admit(alert(ts_s=11))] == [True, False]
        counts = [s.output_fields["suppressed.count"] for s in noise.due_summaries() + noise.flush()]
        assert counts == [1, 1]

    def test_per_key_buckets_are_independent(self) -> None:
        """With key fields, each key has its own bucket."""
        clock = FakeClock()
        noise = NoiseFilter([rate(alerts=1, per_s=60, fields=("ka.user.name",))], clock=clock)
        assert noise.admit(alert(user="alice"))
        assert noise.admit(alert(user="bob"))
        assert not noise.admit(alert(user="alice"))
        (summary,) = noise.flush()
        assert summary.output_fields["ka.user.name"] == "alice"

    def test_dedup_runs_before_rate(self) -> None:
        """With both, repeats are deduped and distinct keys are rate limited; each kind gets its summary."""
        clock = FakeClock()
        policy = NoisePolicyConfig(match="*", rate=RateLimitConfig(alerts=2, per_s=60),
                                   dedup=DedupConfig(fields=("ka.user.name",), window_s=60))
        noise = NoiseFilter([policy], clock=clock)
        passed = [noise.admit(alert(user=user)) for user in ("a", "a", "b", "c", "d", "d")]
        assert passed == [True, False, True, False, False, False]
        reasons = sorted((s.output_fields["suppressed.reason"], s.output_fields["suppressed.count"])
                         for s in noise.flush())
        assert reasons == [("dedup", 1), ("dedup", 1), ("rate", 2)]


class TestMatching:
    def test_glob_picks_rules_and_the_first_match_wins(self) -> None:
        """Policies apply to rules whose names match their glob, the first matching one only."""
        clock = FakeClock()
        noise = NoiseFilter([rate(match="Terminal shell*", alerts=1), rate(match="*", alerts=2)], clock=clock)
        shell = "Terminal shell in container"
        assert [noise.admit(alert(shell)) for _ in range(3)] == [True, False, False]
        assert [noise.admit(alert("Other rule")) for _ in range(3)] == [True, True, False]

    def test_unmatched_rules_pass_untouched(self) -> None:
        """A rule no policy names is never limited."""
        noise = NoiseFilter([rate(match="Noisy*", alerts=1)], clock=FakeClock())
        assert all(noise.admit(alert("Quiet rule")) for _ in range(50))
        assert noise.flush() == [] and noise.counters()["admitted"] == 50

    @pytest.mark.parametrize(("policy", "needle"), [
        (NoisePolicyConfig(rate=RateLimitConfig()), "noise.rules[0].match"),
        (NoisePolicyConfig(match="x"), "give `rate`, `dedup` or both"),
        (NoisePolicyConfig(match="x", rate=RateLimitConfig(alerts=0)), "noise.rules[0].rate"),
        (NoisePolicyConfig(match="x", dedup=DedupConfig(window_s=0)), "noise.rules[0].dedup.window_s"),
    ])
    def test_bad_policies_are_refused(self, policy: NoisePolicyConfig, needle: str) -> None:
        """A policy that could not work is refused at start, naming the key."""
        with pytest.raises(ConfigError) as caught:
            NoiseFilter([policy])
        assert needle in str(caught.value)


class TestNothingHidden:
    @pytest.mark.parametrize("seed", range(20))
    def test_passed_plus_summarised_equals_alerts_in(self, seed: int) -> None:
        """Whatever arrives and whenever windows close, admitted + summary counts == alerts offered."""
        # Seeded uniform draws (not hypothesis): its bias to short, repetitive lists never closed a rate fold
        # between sweeps, which is exactly the case that needs covering.
        chance = random.Random(seed)
        by_user = ("ka.user.name",)
        policies = [NoisePolicyConfig(match="Noisy A", rate=RateLimitConfig(alerts=2, per_s=15, fields=by_user),
                                      dedup=DedupConfig(fields=by_user, window_s=7)),
                    rate(match="Noisy*", alerts=3, per_s=20)]
        with capture_logs():
            for _ in range(25):
                clock = FakeClock()
                noise = NoiseFilter(policies, clock=clock)
                summaries: list[Alert] = []
                admitted = 0
                count = chance.randint(0, 300)
                for i in range(count):
                    clock.now += chance.choice([0.0, 0.0, 0.1, 1.0, 5.0, 21.0])
                    rule = chance.choice(["Noisy A", "Noisy B", "Calm"])
                    admitted += noise.admit(alert(rule, user=chance.choice(["u1", "u2", "u3"]), ts_s=i))
                    if chance.random() < 0.2:
                        summaries += noise.due_summaries()
                summaries += noise.flush()
                assert admitted + sum(s.output_fields["suppressed.count"] for s in summaries) == count
                assert admitted == noise.counters()["admitted"] and len(summaries) == noise.counters()["summaries"]
                for summary in summaries:
                    fields = summary.output_fields
                    assert fields["suppressed.first_time"] <= fields["suppressed.last_time"] == summary.ts_ns
                assert noise.flush() == [] and noise.counters()["keys"] == 0
