"""Rules evaluated by one generated function per narrowing in use (codegen.generate_evaluator) alert as rule by rule."""

from __future__ import annotations

from typing import Any

import pytest

from agent.engine.engine import EVALUATOR_AFTER_EVENTS, RuleMatching

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
        node = ruleset.narrowed(lab.event(type="x", name="b"), ruleset.index_key(lab.event(type="x", name="b")))
        assert node.evaluator.__code__.co_filename == "<rules>"  # the generated function, not the loop
        assert [rule.name for rule in node.evaluator(lab.event(type="x", name="a"), engine.stats, False)] == [
            "named"]
