"""Correlation state: event-time order, lateness, windows, counts, absences, new values and limits."""

from __future__ import annotations

from typing import Any

from agent.engine.engine import Engine, RulesText
from agent.event import Event
from tests.agent.engine.conftest import sample_source

S = 1_000_000_000
T0 = 1_700_000_000 * S


def engine_with(text: str) -> Engine:
    """Two test sources, `a` and `b`, and the correlations of `text`."""
    engine = Engine(hostname="h")
    engine.add_source(sample_source(name="a"))
    engine.add_source(sample_source(name="b"))
    result = engine.load_rules([RulesText("c.yaml", text)])
    assert result.successful, result.as_text()
    return engine


def ev(source: str, t_s: float, **payload: Any) -> Event:
    return Event(source, T0 + int(t_s * S), payload)


def fired(engine: Engine, *events: Event) -> list[str]:
    return [alert.output for event in events for alert in engine.process(event)]


def metrics(engine: Engine) -> dict[str, int]:
    [m] = engine.correlation_metrics()
    return {k: getattr(m, k) for k in m.__slots__ if k != "rule"}


def sequence(*, window: str = "10m", lateness: str = "1m", extra: str = "", b_extra: str = "",
             output: str = "%a.t.name did %b.t.path") -> str:
    """A on source `a` then B on source `b`, joined on a's t.name and b's t.other."""
    return f"""
- correlation: A then B
  desc: d
  sequence:
    window: {window}
    lateness: {lateness}
{extra}    steps:
      - name: a
        source: a
        condition: t.type = login
        key: t.name
      - name: b
        source: b
        condition: t.type = act
        key: t.other
{b_extra}  output: "{output}"
  priority: WARNING
"""


def a(t_s: float, name: str = "k1") -> Event:
    return ev("a", t_s, type="login", name=name)


def b(t_s: float, key: str = "k1", path: str = "/x") -> Event:
    return ev("b", t_s, type="act", other=key, path=path)


class TestSequence:
    def test_steps_in_order_fire_once_with_fields_of_both(self) -> None:
        """A then B on the same key within the window raises one alert naming both events' fields."""
        assert fired(engine_with(sequence()), a(0), b(5)) == ["k1 did /x"]

    def test_arrival_out_of_order_within_lateness_still_matches(self) -> None:
        """B arriving before A, with A's time earlier and within the lateness tolerance, completes the chain."""
        engine = engine_with(sequence())
        assert fired(engine, b(5), a(0)) == ["k1 did /x"]

    def test_event_older_than_lateness_is_counted_and_left_out(self) -> None:
        """An event older than the newest time minus the lateness is late: no match, and counted."""
        engine = engine_with(sequence())
        assert fired(engine, b(100), a(30)) == []
        assert metrics(engine)["late_events"] == 1

    def test_window_bounds_the_span_from_first_to_last_step(self) -> None:
        """A chain exactly as long as the window matches; one nanosecond more does not."""
        assert fired(engine_with(sequence(window="10s")), a(0), b(10)) == ["k1 did /x"]
        assert fired(engine_with(sequence(window="10s")), a(0), ev("b", 10 + 1e-9, type="act", other="k1")) == []

    def test_wrong_key_and_wrong_order_do_not_match(self) -> None:
        """B on another key, or B before A in event time, completes nothing."""
        assert fired(engine_with(sequence()), a(0), b(5, key="k2")) == []
        assert fired(engine_with(sequence()), b(0), a(5)) == []

    def test_each_match_takes_part_in_one_chain(self) -> None:
        """One A and two Bs raise one alert; two As and two Bs raise two."""
        assert len(fired(engine_with(sequence()), a(0), b(5), b(6))) == 1
        assert len(fired(engine_with(sequence()), a(0), a(1), b(5), b(6))) == 2

    def test_missing_key_field_never_joins(self) -> None:
        """An event whose key field is not available is not kept."""
        engine = engine_with(sequence())
        assert fired(engine, ev("a", 0, type="login"), ev("b", 1, type="act")) == []
        assert metrics(engine)["live_keys"] == 0

    def test_one_event_never_fills_two_steps(self) -> None:
        """When one event matches both steps it still needs a second event to make a chain."""
        text = sequence().replace("source: b", "source: a").replace("t.type = act", "t.type = login") \
            .replace("key: t.other", "key: t.name")
        engine = engine_with(text)
        assert fired(engine, a(0)) == []
        assert len(fired(engine, a(1))) == 1


THRESHOLD = """
- correlation: Many
  desc: d
  threshold:
    source: a
    condition: t.type = fail
    key: t.name
    count: 3
    window: 10s
{distinct}  output: "%t.name failed (last %t.other)"
  priority: NOTICE
"""


def fail(t_s: float, name: str = "k1", other: str = "u1") -> Event:
    return ev("a", t_s, type="fail", name=name, other=other)


class TestThreshold:
    def test_count_within_window_fires_and_starts_over(self) -> None:
        """Three events of a key within the window fire once; the next alert needs three more."""
        engine = engine_with(THRESHOLD.format(distinct=""))
        assert fired(engine, fail(0), fail(1), fail(2, other="u9")) == ["k1 failed (last u9)"]
        assert fired(engine, fail(3), fail(4)) == []
        assert len(fired(engine, fail(5))) == 1

    def test_events_spread_wider_than_the_window_do_not_count_together(self) -> None:
        """Three events over more than the window do not fire."""
        assert fired(engine_with(THRESHOLD.format(distinct="")), fail(0), fail(6), fail(11)) == []

    def test_late_event_in_the_middle_completes_the_count(self) -> None:
        """A late event whose time falls between two earlier ones completes the group."""
        assert len(fired(engine_with(THRESHOLD.format(distinct="")), fail(0), fail(8), fail(5))) == 1

    def test_distinct_counts_values_not_events(self) -> None:
        """With `distinct`, repeats of one value do not count; three different values do."""
        engine = engine_with(THRESHOLD.format(distinct="    distinct: t.other\n"))
        assert fired(engine, fail(0), fail(1), fail(2), fail(3, other="u2")) == []
        assert fired(engine, fail(4, other="u3")) == ["k1 failed (last u3)"]


def absence() -> str:
    """A then no B within 5 minutes."""
    return sequence(b_extra="        absent: true\n        within: 5m\n", output="%a.t.name went quiet")


class TestAbsence:
    def test_fires_when_the_clock_passes_the_deadline_plus_lateness(self) -> None:
        """A with no B: the alert comes once event time passes A + within + lateness, not before."""
        engine = engine_with(absence())
        assert fired(engine, a(0), b(300, key="other")) == []
        assert metrics(engine)["pending_absences"] == 1
        assert fired(engine, b(361, key="other")) == ["k1 went quiet"]
        assert metrics(engine)["pending_absences"] == 0

    def test_b_within_the_time_cancels_even_when_it_arrives_first(self) -> None:
        """B within the time cancels A, whether it arrives after A or before it."""
        assert fired(engine_with(absence()), a(0), b(100), b(1000, key="other")) == []
        assert fired(engine_with(absence()), b(100), a(0), b(1000, key="other")) == []

    def test_b_after_the_time_does_not_cancel(self) -> None:
        """A B later than `within` is not the B that was expected."""
        assert fired(engine_with(absence()), a(0), b(301), b(1000, key="other")) == ["k1 went quiet"]


NEW_VALUE = """
- correlation: Key then new address
  desc: d
  sequence:
    source: a
    window: 1h
    steps:
      - name: made
        condition: t.type = create
        key: t.name
      - name: used
        condition: t.type = call
        key: t.name
        new_value:
          field: t.path
          per: t.other
          history: 1d
  output: "%used.t.name from %used.t.path"
  priority: WARNING
"""


class TestNewValue:
    def test_only_a_value_never_seen_for_the_per_key_lets_the_step_match(self) -> None:
        """Calls from an address already seen for the user are no match; a first-seen address is."""
        engine = engine_with(NEW_VALUE)
        seen = ev("a", 0, type="call", name="old", other="bob", path="10.0.0.1")
        create = ev("a", 10, type="create", name="key2")
        same = ev("a", 20, type="call", name="key2", other="bob", path="10.0.0.1")
        new = ev("a", 30, type="call", name="key2", other="bob", path="192.0.2.9")
        assert fired(engine, seen, create, same) == []
        assert fired(engine, new) == ["key2 from 192.0.2.9"]


class TestLimits:
    def test_max_keys_drops_the_least_recently_updated_key_and_counts_it(self) -> None:
        """Past max_keys the oldest key goes (and its chain with it); the others still match."""
        engine = engine_with(sequence(extra="    max_keys: 3\n"))
        fired(engine, *(a(i, name=f"k{i}") for i in range(5)))
        assert metrics(engine)["live_keys"] == 3 and metrics(engine)["evicted_limit"] == 2
        assert fired(engine, b(10, key="k0")) == []
        assert fired(engine, b(11, key="k4")) == ["k4 did /x"]

    def test_idle_keys_expire_after_window_plus_lateness(self) -> None:
        """A key nothing can join any more is dropped within the next few matches and counted as expired."""
        engine = engine_with(sequence())
        fired(engine, a(0, name="k1"), *(a(700 + i, name="k2") for i in range(8)))
        assert metrics(engine)["live_keys"] == 1 and metrics(engine)["evicted_expired"] == 1

    def test_matches_past_the_per_key_cap_shed_the_oldest(self) -> None:
        """A flood of matches on one key keeps the newest and counts the ones shed."""
        engine = engine_with(sequence())
        fired(engine, *(a(i * 0.001) for i in range(100)))
        assert metrics(engine)["entries_shed"] == 100 - 16
        assert metrics(engine)["live_keys"] == 1
