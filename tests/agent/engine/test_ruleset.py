"""Index analysis: an event meets only rules that can match it, and negations stay sound."""

from __future__ import annotations

from typing import Any

import pytest

from agent.engine.ast import Check, walk
from agent.engine.evaluator import EVALUATOR_AFTER_EVENTS
from agent.engine.ruleset import MISSING, possible_values
from agent.rules import parse_condition
from tests.agent.engine.conftest import TS_NS


class TestPossibleValues:
    @pytest.mark.parametrize(("condition", "values", "cofinite"), [
        ("t.type = open", {"open"}, False),
        ("t.type in (open, close)", {"open", "close"}, False),
        ("t.type = open and t.name = x", {"open"}, False),
        ("t.type = open or t.type = close", {"open", "close"}, False),
        ("t.type = open or t.name = x", set(), True),
        ("t.type in (a, b) and not t.type = b", {"a"}, False),
        ("not t.type = open", {"open"}, True),
        ("t.type != open", {"open", MISSING}, True),
        ("not t.type != open", {"open", MISSING}, False),
        ("not (t.type = a or t.name = x)", {"a"}, True),
        ("t.type exists", {MISSING}, True),
        ("not t.type exists", {MISSING}, False),
        ("t.type startswith o", set(), True),
        ("t.type[1] = a", set(), True),
        ("t.type = anyof (a, b)", set(), True),
        ("t.type = val(t.name)", set(), True),
    ])
    def test_over_approximation(self, condition: str, values: set[str | None], cofinite: bool) -> None:
        """The values of the index field for which a condition may hold, complement-aware."""
        found = possible_values(parse_condition(condition), "t.type")
        assert (set(found.values), found.cofinite) == (values, cofinite)


class TestCandidates:
    RULES = (
        ("pinned", "t.type = open"),
        ("either", "t.type in (open, close) and t.name = x"),
        ("negated", "not t.type = open"),
        ("unpinned", "t.name = x"),
        ("missing", "not t.type exists"),
    )

    @pytest.fixture
    def engine(self, lab):
        return lab.loaded(lab.named_rules(self.RULES), rule_matching="all")

    @pytest.mark.parametrize(("payload", "candidates"), [
        ({"type": "open"}, ["pinned", "either", "unpinned"]),
        ({"type": "close"}, ["either", "negated", "unpinned"]),
        ({"type": "other"}, ["negated", "unpinned"]),
        ({}, ["negated", "unpinned", "missing"]),
    ])
    def test_candidates_in_evaluation_order(self, engine, lab, payload: dict[str, Any], candidates: list[str]) -> None:
        """Pinned rules meet only their values, negated ones all but theirs, unpinned ones every event; order kept."""
        ruleset = engine.ruleset("test")
        assert [r.name for r in ruleset.candidates(lab.event(**payload))] == candidates

    @pytest.mark.parametrize("payload", [
        {"type": "open", "name": "x"}, {"type": "close", "name": "x"}, {"type": "zzz", "name": "x"}, {"name": "x"},
        {"type": "open"}, {},
    ])
    def test_index_never_changes_results(self, engine, lab, payload: dict[str, Any]) -> None:
        """Alerts with the index equal a brute-force evaluation of every rule."""
        event = lab.event(**payload)
        expected = [r.name for r in engine.rules if r.predicate(lab.event(**payload))]
        assert [a.rule for a in engine.process(event)] == expected

    def test_narrowed_by(self, engine) -> None:
        """Rules that bound the index field, even by negation, are narrowed by it; the rest meet every event."""
        assert engine.ruleset("test").narrowed_by == {
            "pinned": ("t.type",), "either": ("t.type",), "negated": ("t.type",), "unpinned": (),
            "missing": ("t.type",)}

    def test_list_valued_index_value_reaches_unbucketed_rules_only(self, lab) -> None:
        """An event whose index value is a list counts as missing that value for the index."""
        engine = lab.loaded(lab.rule("t.type = open", name="a") + lab.rule("t.name = x", name="b"),
                            rule_matching="all")
        assert lab.fired(engine, type=("open",), name="x") == ["b"]

    def test_no_evttype_warning(self, lab) -> None:
        """With warn_unindexed, a rule the index cannot narrow warns unless warn_evttypes is false."""
        from agent.engine.engine import Engine, RulesText

        engine = Engine()
        spec = lab.engine().sources["test"]
        engine.add_source(type(spec)(spec.name, spec.fields, spec.index_fields, warn_unindexed=True))
        result = engine.load_rules([RulesText("f.yaml", lab.rule("t.name = x", name="a")
                                              + lab.rule("t.name = y", name="b", extra="  warn_evttypes: false")
                                              + lab.rule("t.type = open", name="c"))])
        assert [(p.code.value, p.location.item_name, p.location.line) for p in result.problems] == [
            ("LOAD_NO_EVTTYPE", "a", 4)]


class TestRulesThatCannotHold:
    """A rule turned off the way Falco's rules files do it (`and not always_true`, the time of an event existing)
    is never evaluated, and asks for none of its event types; one that may hold still is."""

    PRELUDE = "- macro: always_true\n  condition: (jevt.rawtime exists)\n"
    RULES = (
        ("off", "t.type = open and not always_true"),
        ("off_by_or", "t.type = close and not (always_true or t.name = x)"),
        ("off_by_time", "t.type = exec and not evt.rawtime exists"),
        ("on", "t.type = open and always_true"),
        ("on_unless_named", "t.type = close and not (t.name = x and not always_true)"),
        ("maybe", "t.type = open and (t.name = x or not always_true)"),
        ("pointer", "t.type = open and not jevt.value[/name] exists"),
    )

    @pytest.fixture
    def engine(self, lab):
        return lab.loaded(self.PRELUDE + lab.named_rules(self.RULES), rule_matching="all")

    def test_never_candidates(self, engine) -> None:
        ruleset = engine.ruleset("test")
        assert [rule.name for rule in ruleset.never] == ["off", "off_by_or", "off_by_time"]
        assert ruleset.index_values("t.type") == {"open", "close"}  # no rule left for exec

    @pytest.mark.parametrize(("payload", "fired"), [
        ({"type": "open", "name": "x"}, ["on", "maybe"]),
        ({"type": "open", "name": "y"}, ["on"]),
        ({"type": "open"}, ["on", "pointer"]),
        ({"type": "close", "name": "x"}, ["on_unless_named"]),
        ({"type": "exec"}, []),
    ])
    def test_alerts_as_brute_force(self, engine, lab, payload: dict[str, Any], fired: list[str]) -> None:
        """The rules left out are exactly those that match no event: evaluating every rule gives the same alerts."""
        assert [rule.name for rule in engine.rules if rule.predicate(lab.event(**payload))] == fired
        assert lab.fired(engine, **payload) == fired


class TestChecksTheIndexDecided:
    """A check of a rule's whole condition on an index field that holds for every value the index lets the rule meet
    is not evaluated again: only those."""

    RULES = (
        ("pinned", "t.type = open and t.name = a"),
        ("listed", "t.name = a and t.type in (open, close)"),
        ("either", "(t.type = open or t.name = b) and t.name = a"),
        ("negated", "not t.type = open and t.name = a"),
        ("unequal", "t.type != open and t.name = a"),
        ("prefixed", "t.type startswith op and t.name = a"),
    )

    def test_implied_are_the_conjuncts_the_index_decided(self, lab) -> None:
        engine = lab.loaded(lab.named_rules(self.RULES))
        ruleset = engine.ruleset("test")

        def implied(rule: Any) -> list[str]:
            return sorted(f"{node.lhs.name} {node.op}" for node in walk(rule.condition)
                          if isinstance(node, Check) and id(node) in ruleset.implied(rule))

        assert {rule.name: implied(rule) for rule in engine.rules} == {
            "pinned": ["t.type ="], "listed": ["t.type in"], "either": [], "negated": [], "unequal": [],
            "prefixed": []}

    @pytest.mark.parametrize(("payload", "fired"), [
        ({"type": "open", "name": "a"}, ["pinned", "listed", "either", "prefixed"]),
        ({"type": "close", "name": "a"}, ["listed", "negated", "unequal"]),
        ({"type": "close", "name": "b"}, []),
        ({"name": "a"}, ["negated"]),
    ])
    def test_alerts_as_brute_force(self, lab, payload: dict[str, Any], fired: list[str]) -> None:
        """Before and after the candidates are evaluated by their generated function."""
        engine = lab.loaded(lab.named_rules(self.RULES), rule_matching="all")
        for _ in range(EVALUATOR_AFTER_EVENTS + 2):
            assert [rule.name for rule in engine.rules if rule.predicate(lab.event(**payload))] == fired
            assert lab.fired(engine, **payload) == fired


class TestFieldReads:
    """The index and guard fields are read through the event's cache, once per event for every reader."""

    @staticmethod
    def counting_engine(calls: list[str]) -> Any:
        from agent.engine.engine import Engine
        from agent.fields import FieldSpec, FieldTable, FieldType
        from agent.source import SourceSpec

        def counted(key: str) -> Any:
            def factory(_arg: str | None) -> Any:
                def extract(event: Any) -> Any:
                    calls.append(key)
                    return event.payload.get(key)
                return extract
            return factory

        fields = [FieldSpec(f"t.{key}", FieldType.STRING, key, counted(key)) for key in ("type", "sub", "name")]
        engine = Engine(rule_matching="all")  # type: ignore[arg-type]
        engine.add_source(SourceSpec("test", FieldTable(fields), index_fields=("t.type", "t.sub"),
                                     guard_fields=("t.name",)))
        return engine

    def test_each_field_is_extracted_once_per_event(self, lab) -> None:
        """Index, guard, condition and output all read a field, but the event extracts it once."""
        calls: list[str] = []
        engine = self.counting_engine(calls)
        text = (lab.rule("t.type = open and t.sub = a and t.name startswith x", name="a", output="%t.name %t.sub")
                + lab.rule("t.name = xy and t.type exists", name="b", output="%t.type"))
        _, result = lab.load(text, engine=engine)
        assert result.successful, result.as_text()
        alerts = engine.process(lab.event(type="open", sub="a", name="xy"))
        assert [a.rule for a in alerts] == ["a", "b"]
        assert sorted(calls) == ["name", "sub", "type"]
        calls.clear()
        assert engine.process(lab.event(type="open", sub="b", name="zz")) == []
        assert sorted(calls) == ["name", "sub", "type"]

    def test_getters_that_do_not_cache_still_index_and_guard(self, lab) -> None:
        """A rule set built on plain getters gives the same index values and candidates."""
        from agent.engine.rule_guards import guard_field
        from agent.engine.ruleset import RuleSet

        engine = lab.loaded(lab.rule("t.type = open and t.name = x", name="a")
                            + lab.rule("t.type = close", name="b") + lab.rule("t.name = y", name="c"))
        plain = RuleSet(engine.rules, {"t.type": lambda ev: ev.payload.get("type")},
                        {"t.name": (lambda ev: ev.payload.get("name"), guard_field("t.name", ()))})
        assert plain.narrow(lab.event(type="open"))[0] == ("open",)
        assert [r.name for r in plain.candidates(lab.event(type="open", name="x"))] == ["a"]
        assert [r.name for r in plain.candidates(lab.event(type="open", name="y"))] == ["c"]
        assert [r.name for r in plain.candidates(lab.event(type="close", name="x"))] == ["b"]
        assert RuleSet(engine.rules, {}).narrow(lab.event(type="open"))[0] == ()


class TestTimesRulesName:
    """A rule pinned to event times (Falco's "never true", `jevt.rawtime=0`) meets only events of those times: every
    other time is one index value, with no text written and no memo entry per time."""

    RULES = (
        ("never_true", "t.type = open and jevt.rawtime = 0"),
        ("listed", "jevt.rawtime in (0, 5) and t.name = x"),
        ("unequal", "t.type = open and jevt.rawtime != 5"),
        ("unwritable", "t.type = open and jevt.rawtime = 05"),
        ("unbounded", "t.type = open and jevt.rawtime exists"),
    )

    @pytest.fixture
    def engine(self, lab):
        return lab.loaded(lab.named_rules(self.RULES), rule_matching="all")

    @pytest.mark.parametrize(("ts_ns", "payload", "candidates"), [
        (TS_NS, {"type": "open", "name": "x"}, ["unequal", "unbounded"]),
        (0, {"type": "open", "name": "x"}, ["never_true", "listed", "unequal", "unbounded"]),
        (5, {"type": "open", "name": "x"}, ["listed", "unbounded"]),
        (5, {"type": "close", "name": "x"}, ["listed"]),
        (50, {"type": "open"}, ["unequal", "unbounded"]),
    ])
    def test_candidates(self, engine, lab, ts_ns: int, payload: dict[str, Any], candidates: list[str]) -> None:
        assert [r.name for r in engine.ruleset("test").candidates(lab.event(ts_ns=ts_ns, **payload))] == candidates

    @pytest.mark.parametrize("ts_ns", [0, 5, 50, 500, TS_NS])
    @pytest.mark.parametrize("payload", [{"type": "open", "name": "x"}, {"type": "close", "name": "x"}, {}])
    def test_alerts_as_brute_force(self, engine, lab, ts_ns: int, payload: dict[str, Any]) -> None:
        """Before and after the candidates are evaluated by their generated function."""
        expected = [rule.name for rule in engine.rules if rule.predicate(lab.event(ts_ns=ts_ns, **payload))]
        for _ in range(EVALUATOR_AFTER_EVENTS + 2):
            assert [alert.rule for alert in engine.process(lab.event(ts_ns=ts_ns, **payload))] == expected

    def test_one_memo_entry_for_every_time_no_rule_names(self, engine, lab) -> None:
        ruleset = engine.ruleset("test")
        keys = {ruleset.narrow(lab.event(ts_ns=TS_NS + step, type="open"))[0] for step in range(100)}
        assert len(keys) == 1
        assert ruleset.narrow(lab.event(ts_ns=0, type="open"))[0] == ("open", "0")

    def test_narrowed_by_the_time_where_the_condition_names_it(self, engine) -> None:
        assert engine.ruleset("test").narrowed_by == {
            "never_true": ("t.type", "jevt.rawtime"), "listed": ("jevt.rawtime",),
            "unequal": ("t.type", "jevt.rawtime"), "unwritable": ("t.type", "jevt.rawtime"),
            "unbounded": ("t.type", "jevt.rawtime")}

    def test_a_time_only_refused_is_told_from_the_others(self, lab) -> None:
        engine = lab.loaded(lab.rule("t.type = open and jevt.rawtime != 5", name="unequal"))
        assert [r.name for r in engine.ruleset("test").candidates(lab.event(ts_ns=5, type="open"))] == []
        assert [r.name for r in engine.ruleset("test").candidates(lab.event(ts_ns=6, type="open"))] == ["unequal"]

    def test_a_rule_set_without_times_keeps_the_key_of_its_index_fields(self, lab) -> None:
        engine = lab.loaded(lab.rule("t.type = open and jevt.rawtime exists"))
        assert engine.ruleset("test").narrow(lab.event(type="open"))[0] == ("open",)
