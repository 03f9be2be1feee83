"""Reading correlation items: syntax, errors with file, line and item, overrides, toggles, Falco's items kept."""

from __future__ import annotations

from agent.engine.engine import Engine, RulesText
from agent.engine.load_result import LoadResult
from agent.event import Event
from agent.priority import Priority
from tests.agent.engine.conftest import sample_source
from tests.correlation.test_state import T0, a, b, fired, sequence


def load(*texts: str, engine: Engine | None = None) -> tuple[Engine, LoadResult]:
    if engine is None:
        engine = Engine(hostname="h")
        engine.add_source(sample_source(name="a"))
        engine.add_source(sample_source(name="b"))
    result = engine.load_rules([RulesText(f"f{i}.yaml", t) for i, t in enumerate(texts, start=1)])
    return engine, result


def only_error(*texts: str) -> str:
    """The single error of a load that must fail, as one line of text."""
    _, result = load(*texts)
    assert len(result.errors) == 1, result.as_text()
    return result.errors[0].as_text()


class TestErrors:
    def test_step_problem_names_file_line_item_and_step(self) -> None:
        """An unknown key in a step is reported at the step's line, with the correlation and the step."""
        text = sequence().replace("        key: t.other\n", "        key: t.other\n        colour: red\n")
        message = only_error(text)
        assert message.startswith("f1.yaml:12 correlation 'A then B': error LOAD_ERR_YAML_VALIDATE: step 'b': "
                                  "unknown key 'colour'"), message

    def test_bad_condition_is_reported_at_the_condition_line(self) -> None:
        """A condition that does not compile names its line and the correlation."""
        message = only_error(sequence().replace("t.type = act", "t.nope = act"))
        assert message.startswith("f1.yaml:14 correlation "), message
        assert "LOAD_ERR_COMPILE_CONDITION" in message and "correlation 'A then B'" in message

    def test_output_fields_must_name_a_step(self) -> None:
        """A bare field in a sequence's output is an output error with a hint."""
        message = only_error(sequence(output="%t.name"))
        assert "LOAD_ERR_COMPILE_OUTPUT" in message and "%<step>.<field>" in message

    def test_window_is_required_and_must_be_a_duration(self) -> None:
        """A sequence without a window, or with a malformed one, does not load."""
        assert "'window' must be a duration" in only_error(sequence(window="soon"))
        assert "'window' must be a duration" in only_error(sequence().replace("    window: 10m\n", ""))

    def test_shape_checks(self) -> None:
        """Absent steps only last, keys of equal width, unique names, threshold needs a count."""
        assert "only the last step may be absent" in only_error(
            sequence().replace("        key: t.name\n", "        key: t.name\n        absent: true\n"
                               "        within: 1m\n", 1))
        assert "as many fields" in only_error(sequence().replace("key: t.other", "key: t.other, t.path"))
        assert "must differ" in only_error(sequence().replace("name: b", "name: a"))
        threshold = ("- correlation: T\n  desc: d\n  priority: INFO\n  output: x\n"
                     "  threshold:\n    source: a\n    condition: t.type = x\n    window: 1m\n")
        assert "'count' is required" in only_error(threshold)

    def test_step_of_unknown_source_skips_the_correlation_with_a_warning(self) -> None:
        """Like a rule of an unknown source: a warning, and the rest loads."""
        engine, result = load(sequence().replace("source: b", "source: nowhere"))
        assert result.successful and [p.code.value for p in result.warnings] == ["LOAD_UNKNOWN_SOURCE"]
        assert engine.correlations == []


class TestDefinitions:
    def test_macros_and_lists_used_by_steps_are_not_unused(self) -> None:
        """A macro or list only a correlation refers to earns no unused warning."""
        prelude = "- list: kinds\n  items: [act]\n- macro: acting\n  condition: t.type in (kinds)\n"
        _, result = load(prelude + sequence().replace("t.type = act", "acting"))
        assert result.successful and not result.warnings, result.as_text()

    def test_override_appends_output_and_replaces_priority(self) -> None:
        """`override` works on correlations as on rules."""
        update = ("- correlation: A then B\n  output: (appended)\n  priority: CRITICAL\n"
                  "  override:\n    output: append\n    priority: replace\n")
        engine, result = load(sequence(), update)
        assert result.successful, result.as_text()
        [correlation] = engine.correlations
        assert correlation.priority is Priority.CRITICAL
        assert fired(engine, a(0), b(1)) == ["k1 did /x (appended)"]

    def test_enabled_false_in_a_later_file_turns_it_off(self) -> None:
        """`enabled: false` (bare or through override) stops a correlation from matching."""
        for update in ("- correlation: A then B\n  enabled: false\n",
                       "- correlation: A then B\n  enabled: false\n  override:\n    enabled: replace\n"):
            engine, result = load(sequence(), update)
            assert result.successful, result.as_text()
            assert fired(engine, a(0), b(1)) == []

    def test_update_without_definition_fails(self) -> None:
        """An override of a correlation never defined is an error, as for rules."""
        assert "no earlier definition" in only_error("- correlation: X\n  priority: INFO\n  override:\n"
                                                     "    priority: replace\n")

    def test_set_enabled_and_min_priority_apply_to_correlations(self) -> None:
        """Disabling by tag, or a minimum priority above the correlation's, silences it."""
        engine, _ = load(sequence().replace("  priority: WARNING\n", "  priority: WARNING\n  tags: [corr]\n"))
        assert engine.set_enabled(tag="corr", enabled=False) == 1
        assert fired(engine, a(0), b(1)) == []
        strict = Engine(min_priority=Priority.ERROR)
        strict.add_source(sample_source(name="a"))
        strict.add_source(sample_source(name="b"))
        engine, _ = load(sequence(), engine=strict)
        assert fired(engine, a(0), b(1)) == []

    def test_rules_and_correlations_both_alert_on_one_event(self) -> None:
        """A rule matching the completing event does not hide the correlation, even with rule_matching first."""
        rule = ("- rule: Act\n  desc: d\n  condition: t.type = act\n  output: act\n  priority: INFO\n"
                "  source: b\n")
        engine, result = load(sequence() + rule)
        assert result.successful, result.as_text()
        assert sorted(alert.rule for event in (a(0), b(1)) for alert in engine.process(event)) == ["A then B", "Act"]

    def test_rules_and_correlations_naming_different_times_each_keep_their_own(self) -> None:
        """The engine hands its index key to the correlations: a time a rule names, and one a step names, each
        select their own, whatever the other's rule set names."""
        pinned = sequence().replace("condition: t.type = login", f"condition: t.type = login and jevt.rawtime = {T0}")
        rule = ("- rule: Late\n  desc: d\n  condition: t.type = act and jevt.rawtime = 0\n  output: late\n"
                "  priority: INFO\n  source: b\n")
        engine, result = load(pinned + rule)
        assert result.successful, result.as_text()
        assert fired(engine, a(1), b(2)) == []
        assert fired(engine, a(0), b(2)) == ["k1 did /x"]
        assert fired(engine, Event("b", 0, {"type": "act", "other": "zz"})) == ["late"]
