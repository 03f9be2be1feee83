"""Rules evaluated by one generated function per narrowing in use (codegen.generate_evaluator) alert as rule by rule."""

from __future__ import annotations

from typing import Any

import pytest

from agent.engine.engine import Engine, RuleMatching, RulesText
from agent.engine.evaluator import EVALUATOR_AFTER_EVENTS
from agent.event import Event
from agent.fields import Extractor, FieldSpec, FieldTable, FieldType, InlineRead, with_inline
from agent.source import SourceSpec
from tests.agent.engine.conftest import rule, sample_source

#: More events than a narrowing meets before it gets its generated evaluator.
ROUNDS = 3 * EVALUATOR_AFTER_EVENTS
#: A condition nested deeper than conditions are generated: it is evaluated by closures.
DEEP = "not " * 60 + "t.name = a"


def rules(lab: Any, *, deep: bool) -> str:
    """Rules on one narrowing; with `deep`, one of them is evaluated by closures, so the narrowing keeps the loop."""
    return (lab.rule("t.num > 5", name="big") + lab.rule("t.name = a", name="named")
            + lab.rule(DEEP if deep else "t.name = a", name="deep") + lab.rule("t.name startswith a", name="prefixed")
            + lab.rule("t.name = zzz", name="never"))


def outcomes(lab: Any, matching: RuleMatching, *, deep: bool) -> tuple[list[list[str]], int]:
    engine = lab.loaded(rules(lab, deep=deep), rule_matching=matching)
    fired = []
    for round_ in range(ROUNDS):
        # A text where a number is expected: `t.num > 5` meets an extraction error (TypeError).
        num: Any = 7 if round_ % 2 else "text"
        fired.append(lab.fired(engine, type="x", name="a", num=num))
    return fired, engine.stats.rule_errors


class TestGeneratedEvaluator:
    @pytest.mark.parametrize(("matching", "good", "error"), [
        (RuleMatching.FIRST, ["big"], ["named"]),
        (RuleMatching.ALL, ["big", "named", "deep", "prefixed"], ["named", "deep", "prefixed"]),
    ])
    @pytest.mark.parametrize("deep", [False, True])
    def test_same_alerts_and_errors_before_and_after(self, lab, matching: RuleMatching, good: list[str],
                                                     error: list[str], deep: bool) -> None:
        """Order, first match, errors counted and skipped: the same in every round, generated evaluator or not."""
        fired, errors = outcomes(lab, matching, deep=deep)
        assert fired == [error if round_ % 2 == 0 else good for round_ in range(ROUNDS)]
        assert errors == ROUNDS // 2

    def test_narrowing_gets_its_evaluator(self, lab) -> None:
        engine = lab.loaded(lab.rule("t.name = a", name="named") + lab.rule("t.name = b", name="other"))
        for _ in range(EVALUATOR_AFTER_EVENTS):
            assert lab.fired(engine, type="x", name="b") == ["other"]
        ruleset = engine.ruleset(lab.source)
        assert ruleset is not None
        _key, node = ruleset.narrow(lab.event(type="x", name="b"))
        assert node.evaluator.__code__.co_filename == "<rules>"  # the generated function, not the loop
        other = lab.event(type="x", name="a")
        [alert] = node.evaluator(other, ruleset.narrow(other)[0], engine.stats, False)
        assert (alert.rule, alert.output) == ("named", "hit a")


class TestFieldsReadOnce:
    """The generated evaluator reads a field several rules use once per event, and the index fields not at all (the
    index key holds them): each rule still sees the event's own values."""

    RULES = ("- list: names\n  items: [a, b]\n"
             "- macro: named_a\n  condition: jevt.value[/name] = a\n")

    def engine(self, lab: Any, matching: RuleMatching) -> Engine:
        # Indexed by two fields, so that the event type is the key's second value.
        engine = Engine(rule_matching=matching)
        engine.add_source(sample_source(index_fields=("t.other", "t.type")))
        # `first_big` reads the name only when the number is big: on other events `named` reads it first.
        # It reads the type only where the index did not decide it (in an `or`).
        _, result = lab.load(self.RULES + lab.rule("t.num > 5 and named_a and (t.type = x or t.other = z)",
                                                   name="first_big")
                             + lab.rule("t.type in (x, y) and named_a", name="named")
                             + lab.rule("jevt.value[/name] in (names) and t.type = x", name="listed")
                             + lab.rule("t.type = y and not named_a", name="other_name"), engine=engine)
        assert result.successful, result.as_text()
        return engine

    @pytest.mark.parametrize("matching", [RuleMatching.FIRST, RuleMatching.ALL])
    def test_each_event_its_own_values(self, lab, matching: RuleMatching) -> None:
        engine = self.engine(lab, matching)
        cases = [
            ({"type": "x", "name": "a", "num": 7}, ["first_big", "named", "listed"]),
            ({"type": "x", "name": "a", "num": 1}, ["named", "listed"]),
            ({"type": "x", "name": "b", "num": 7}, ["listed"]),
            ({"type": "y", "name": "a", "num": 1}, ["named"]),
            ({"type": "y", "name": "c", "num": 1}, ["other_name"]),
            ({"type": "y", "num": 9, "other": "x"}, ["other_name"]),
        ]
        for _ in range(ROUNDS):  # before and after the narrowings get their generated evaluators
            for payload, fired in cases:
                expected = fired[:1] if matching is RuleMatching.FIRST else fired
                assert lab.fired(engine, **payload) == expected, payload

    def test_a_shared_read_is_written_once_per_rule_set(self, lab) -> None:
        engine = self.engine(lab, RuleMatching.ALL)
        for _ in range(EVALUATOR_AFTER_EVENTS):
            lab.fired(engine, type="x", name="a", num=7)
        ruleset = engine.ruleset(lab.source)
        assert ruleset is not None
        event = lab.event(type="x", name="a", num=7)
        evaluator = ruleset.narrow(event)[1].evaluator
        names = evaluator.__code__.co_varnames
        assert "key" in names and "_i1" in names  # the event type, where a check needs it, comes from the index key
        # The name as three conditions read it (jevt.value[/name]) and as every output shows it (t.name), each kept
        # in one local.
        assert sum(name.startswith("_m") for name in names) == 2


def _field(name: str, guard: str, value: str, extract: Extractor) -> FieldSpec:
    return FieldSpec(name, FieldType.STRING, name, lambda _arg: with_inline(extract, InlineRead(guard, value)))


class TestOutputsReadInTheirBranch:
    """What only an alert's output reads is opened when its rule matched: a guard of the output's field never
    stands in for one a later rule's condition reads."""

    def engine(self) -> Engine:
        fields = FieldTable([
            FieldSpec("b.key", FieldType.STRING, "no inline form", lambda _arg: lambda ev: ev.payload.get("key")),
            # Inline for a list payload only: a dict's value comes from the extractor.
            _field("b.first", "{payload}.__class__ is list", "{payload}[0]",
                   lambda ev: ev.payload[0] if ev.payload.__class__ is list else ev.payload.get("first")),
            _field("b.shown", "{payload}.__class__ is dict", "{payload}.get('shown')",
                   lambda ev: ev.payload.get("shown") if ev.payload.__class__ is dict else None),
        ])
        engine = Engine(rule_matching=RuleMatching.ALL)
        engine.add_source(SourceSpec("b", fields, index_fields=("b.key",)))
        text = (rule("b.key = go", name="shows", output="shown=%b.shown", source="b")
                + rule("b.key = go and b.first = one", name="first", output="first", source="b"))
        result = engine.load_rules([RulesText("b.yaml", text)])
        assert result.successful, result.as_text()
        return engine

    def test_later_conditions_read_their_own_guards(self) -> None:
        engine = self.engine()
        for _ in range(ROUNDS):  # before and after the narrowing gets its generated evaluator
            alerts = engine.process(Event("b", 1, {"key": "go", "shown": "yes", "first": "one"}))
            assert [(alert.rule, alert.output) for alert in alerts] == [("shows", "shown=yes"), ("first", "first")]
        assert engine.stats.rule_errors == 0
