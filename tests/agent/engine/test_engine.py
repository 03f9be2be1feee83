"""The engine: rule matching modes, priority threshold, enable/disable, reloads and load results."""

from __future__ import annotations

import pytest

from agent.engine.engine import EngineStats, RuleMatching, RulesText
from agent.priority import Priority
from tests.agent.engine.conftest import Lab


@pytest.fixture
def three(lab: Lab) -> str:
    return (lab.rule("t.name = x", name="Alpha Rule", priority="ERROR", extra="  tags: [net, k8s]")
            + lab.rule("t.name = x", name="beta", priority="NOTICE", extra="  tags: [files]")
            + lab.rule("t.name = x", name="gamma", priority="DEBUG"))


class TestRuleMatching:
    def test_first_stops_at_first_match(self, lab, three) -> None:
        """With `first`, one alert per event, from the earliest rule."""
        assert lab.fired(lab.loaded(three), name="x") == ["Alpha Rule"]

    def test_all_alerts_in_order(self, lab, three) -> None:
        """With `all`, every matching rule alerts, in evaluation order."""
        assert lab.fired(lab.loaded(three, rule_matching=RuleMatching.ALL), name="x") == ["Alpha Rule", "beta",
                                                                                         "gamma"]

    def test_matching_mode_changed_on_a_running_engine_applies_to_the_next_event(self, lab, three) -> None:
        """Setting `rule_matching` after construction switches between one alert and all of them."""
        engine = lab.loaded(three)
        engine.rule_matching = RuleMatching.ALL
        assert lab.fired(engine, name="x") == ["Alpha Rule", "beta", "gamma"]
        engine.rule_matching = RuleMatching.FIRST
        assert lab.fired(engine, name="x") == ["Alpha Rule"]

    def test_counters_handed_over_after_a_load_count_what_follows(self, lab, three) -> None:
        """A reload hands the running engine's counters to the new engine (agent.reload): the events and alerts
        after it, those of a source without rules included, are counted there and numbered on from them."""
        engine = lab.loaded(three)
        kept = EngineStats(events=5, alerts=1)
        engine.stats = kept
        assert lab.fired(engine, name="x") == ["Alpha Rule"]
        other = lab.event(source="nosuch", name="x")
        assert engine.process(other) == []
        assert (kept.events, kept.alerts, other.num) == (7, 2, 7)

    def test_other_source_events_meet_no_rules(self, lab, three) -> None:
        """Events of a source without rules produce nothing."""
        engine = lab.loaded(three)
        assert engine.process(lab.event(source="nosuch", name="x")) == []


class TestPriorityThreshold:
    @pytest.mark.parametrize(("minimum", "fired"), [
        (Priority.DEBUG, ["Alpha Rule", "beta", "gamma"]), (Priority.NOTICE, ["Alpha Rule", "beta"]),
        (Priority.ERROR, ["Alpha Rule"]), (Priority.CRITICAL, []),
    ])
    def test_min_priority(self, lab, three, minimum: Priority, fired: list[str]) -> None:
        """Only rules at least as severe as the minimum are evaluated."""
        engine = lab.loaded(three, rule_matching=RuleMatching.ALL, min_priority=minimum)
        assert lab.fired(engine, name="x") == fired


class TestEnableDisable:
    @pytest.mark.parametrize(("kwargs", "remaining", "changed"), [
        ({"name": "beta"}, ["Alpha Rule", "gamma"], 1),
        ({"name": "*a*"}, [], 3),
        ({"name": "Alpha*"}, ["beta", "gamma"], 1),
        ({"tag": "k8s"}, ["beta", "gamma"], 1),
        ({"tag": "f*"}, ["Alpha Rule", "gamma"], 1),
        ({"tag": "nosuch"}, ["Alpha Rule", "beta", "gamma"], 0),
    ])
    def test_disable_by_name_or_tag(self, lab, three, kwargs: dict[str, str], remaining: list[str],
                                    changed: int) -> None:
        """Names and tags with shell wildcards select the rules to disable."""
        engine = lab.loaded(three, rule_matching=RuleMatching.ALL)
        assert engine.set_enabled(enabled=False, **kwargs) == changed
        assert lab.fired(engine, name="x") == remaining

    def test_enable_again(self, lab, three) -> None:
        """A disabled rule can be enabled again, including one disabled in the rules file."""
        engine = lab.loaded(three + "- rule: gamma\n  enabled: false\n", rule_matching=RuleMatching.ALL)
        assert lab.fired(engine, name="x") == ["Alpha Rule", "beta"]
        assert engine.set_enabled(name="gamma", enabled=True) == 1
        assert lab.fired(engine, name="x") == ["Alpha Rule", "beta", "gamma"]


class TestReload:
    def test_failed_load_keeps_old_rules(self, lab, three) -> None:
        """A load that fails leaves the previous rules running."""
        engine = lab.loaded(three)
        result = engine.load_rules([RulesText("bad.yaml", lab.rule("t.name = (", name="new"))])
        assert not result.successful
        assert [r.name for r in engine.rules] == ["Alpha Rule", "beta", "gamma"]
        assert lab.fired(engine, name="x") == ["Alpha Rule"]

    def test_successful_load_replaces_rules(self, lab, three) -> None:
        """A good load swaps the whole rule set."""
        engine = lab.loaded(three)
        assert engine.load_rules([RulesText("new.yaml", lab.rule("t.name = y", name="new"))]).successful
        assert lab.fired(engine, name="x") == [] and lab.fired(engine, name="y") == ["new"]

    def test_missing_file_is_a_read_error(self, lab, tmp_path) -> None:
        """An unreadable file reports LOAD_ERR_FILE_READ with its path."""
        result = lab.engine().load_rules_files([tmp_path / "absent.yaml"])
        assert [(p.code.value, p.location.file) for p in result.problems] == [
            ("LOAD_ERR_FILE_READ", str(tmp_path / "absent.yaml"))]

    def test_error_in_second_file_names_it(self, lab, three) -> None:
        """Errors carry the file, line and item they come from."""
        _, result = lab.load(three, "- list: ok\n  items: [a]\n" + lab.rule("t.name ==", name="broken"))
        error = result.errors[0]
        assert (error.location.file, error.location.line, error.location.item_kind, error.location.item_name) == (
            "f2.yaml", 6, "rule", "broken")
        assert error.code.value == "LOAD_ERR_COMPILE_CONDITION"


class TestLoadResult:
    def test_json_shape(self, lab) -> None:
        """`as_json` is Falco's `-V` JSON: per file, each problem with code, codedesc, message and the stack of
        locations from the whole file down to the item, 0-based as Falco counts."""
        _, result = lab.load("- foo: 1\n" + lab.rule("t.name = a andb", name="r1"))
        [file_result] = result.as_json()["falco_load_results"]
        assert (file_result["name"], file_result["successful"]) == ("f1.yaml", False)
        [error] = file_result["errors"]
        assert (error["code"], error["message"]) == ("LOAD_ERR_COMPILE_CONDITION", result.errors[0].message)
        assert error["codedesc"] == "A condition does not compile"
        assert [(loc["item_type"], loc["item_name"], loc["position"]["line"], loc["position"]["column"])
                for loc in error["context"]["locations"]] == [("rules content", "", 0, 0), ("rule", "r1", 4, 12)]
        [warning] = file_result["warnings"]
        assert (warning["code"], warning["message"]) == ("LOAD_UNKNOWN_ITEM", "Unknown top level item")
        assert [(loc["item_type"], loc["position"]["line"], loc["position"]["column"], loc["position"]["offset"])
                for loc in warning["context"]["locations"]] == [("rules content", 0, 0, 0),
                                                                ("rules content item", 0, 2, 2)]
        assert warning["context"]["snippet"] == "- foo: 1\n  ^\n"
        assert "at 1:13" in result.errors[0].message

    def test_text_line(self, lab) -> None:
        """`as_text` prints one line per problem with location, kind and code."""
        _, result = lab.load("- list: l\n  items: [a]\n")
        assert result.as_text() == "f1.yaml:1 list 'l': warning LOAD_UNUSED_LIST: List not referred to by any " \
                                   "other rule/macro"

    @pytest.mark.parametrize(("condition", "code"), [
        ("ka.user = <NA>", "LOAD_UNSAFE_NA_CHECK"),
        ('ka.user != "<NA>"', "LOAD_UNSAFE_NA_CHECK"),
        ("ka.user in (a, <NA>)", "LOAD_UNSAFE_NA_CHECK"),
        ("jevt.value[/x] = <NA>", "LOAD_UNSAFE_NA_CHECK"),
        ("t.name regex abc", "LOAD_COMPILE_CONDITION"),
        ("t.name = t.other", "LOAD_COMPILE_CONDITION"),
        ("t.old = a", "LOAD_DEPRECATED_ITEM"),
    ])
    def test_lint_warnings(self, lab, condition: str, code: str) -> None:
        """Unsafe <NA> checks, simplifiable regexes, field-like strings and deprecated fields warn."""
        _, result = lab.load(lab.rule(condition))
        assert result.successful
        assert [(p.code.value, p.location.line) for p in result.problems] == [(code, 4)]

    def test_lint_warning_for_every_rule_sharing_a_macro(self, lab) -> None:
        """Each rule using a macro with an unsafe check gets its own warning."""
        _, result = lab.load("- macro: m\n  condition: ka.user = <NA>\n" + lab.rule("m", name="a")
                             + lab.rule("m", name="b"))
        assert [(p.code.value, p.location.item_name) for p in result.problems] == [
            ("LOAD_UNSAFE_NA_CHECK", "a"), ("LOAD_UNSAFE_NA_CHECK", "b")]

    @pytest.mark.parametrize("condition", ["t.name = <NA>", "ka.user contains <NA>", "ka.user exists",
                                           't.name = "t.other"', 't.name regex "a.c"'])
    def test_no_lint_warning(self, lab, condition: str) -> None:
        """Checks outside the lint rules load without warnings."""
        _, result = lab.load(lab.rule(condition))
        assert result.successful and result.problems == []

    @pytest.mark.parametrize(("condition", "skipped"), [
        ("t.nope = a", True), ("t.name = a and t.label = x", False), ("t.name = (", False), ("undefined_m", False),
    ])
    def test_skip_if_unknown_filter(self, lab, condition: str, skipped: bool) -> None:
        """Only unknown-field errors are skipped by `skip-if-unknown-filter`; others still fail."""
        engine, result = lab.load(lab.rule(condition, extra="  skip-if-unknown-filter: true")
                                  + lab.rule("t.name = z", name="kept"))
        if skipped:
            assert result.successful and lab.codes(result) == ["LOAD_UNKNOWN_FILTER"]
            assert result.problems[0].location.line == 4 and [r.name for r in engine.rules] == ["kept"]
        else:
            assert not result.successful and result.errors[0].location.line == 4
