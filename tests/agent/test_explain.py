"""`falco-agent explain`: the condition tree with each node's result and values, macros by name, the exception item
that suppressed an alert, why a rule was not a candidate, and a verdict that agrees with the engine's."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agent.builtin_sources import recorded_replayers
from agent.cli import main
from agent.config import AgentConfig
from agent.engine.engine import Engine
from agent.engine_setup import load_engine
from agent.errors import DecodeError
from agent.event import Event
from agent.explain import Explainer, Status, read_model
from agent.plugins.registry import load_registry
from agent.rule_tests.cases import load_cases
from agent.rule_tests.inputs import EventReader

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "rule_tests"
RULES, EVENTS = FIXTURES / "pods.yaml", FIXTURES / "events.jsonl"


def explainer_for(files: list[Path], config: AgentConfig | None = None) -> tuple[Explainer, EventReader]:
    registry = load_registry(AgentConfig())
    engine, result = load_engine(replace(config or AgentConfig(), rule_matching="all"), files,
                                 sources=registry.specs(), hostname="node-1")
    assert result.successful, result.as_text()
    reader = EventReader(registry.decoders(hostname="node-1"), recorded_replayers(hostname="node-1"), "node-1")
    return Explainer(engine, read_model(files, known_sources=frozenset(engine.sources))), reader


def events_of(reader: EventReader, *paths: Path) -> list[Event]:
    items = list(reader.files(paths))
    assert all(isinstance(item, Event) for item in items), items
    return items  # type: ignore[return-value]


class TestVerdict:
    def test_match_shows_each_node_and_the_values_read(self) -> None:
        """A match shows macros by name, their checks inside, and the value each check read."""
        explainer, reader = explainer_for([RULES])
        alice = events_of(reader, EVENTS)[0]
        explanation = explainer.explain("Pod Created", alice)
        assert explanation.status is Status.MATCH
        tree = explanation.condition
        assert tree is not None and tree.kind == "and"
        macro = tree.children[0]
        assert (macro.kind, macro.name, macro.outcome.value) == ("macro", "pod_created", "true")
        [verb, resource] = macro.children[0].children
        assert (verb.text, verb.values) == ("ka.verb = create", {"ka.verb": "create"})
        assert resource.values == {"ka.target.resource": "pods"}

    def test_exception_names_the_item_that_suppressed(self) -> None:
        """A condition that holds but meets an exception value is reported suppressed, naming the value."""
        explainer, reader = explainer_for([RULES])
        ci_bot = events_of(reader, EVENTS)[1]
        explanation = explainer.explain("Pod Created", ci_bot)
        assert explanation.status is Status.SUPPRESSED
        [exception] = explanation.exceptions
        assert exception.name == "ci_namespaces"
        assert exception.suppressed_by == "ka.user.name = ci-bot and ka.target.namespace = builds"

    def test_not_a_candidate_says_why(self, tmp_path: Path) -> None:
        """Event type index, source, disabled rule, priority threshold and unknown names each give their reason."""
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES.read_text() + "\n- rule: Namespace Deleted\n  enabled: false\n  override:\n"
                                             "    enabled: replace\n- rule: Plugin Rule\n  desc: d\n"
                                             "  condition: some.field = x\n  output: o\n  priority: INFO\n"
                                             "  source: some_plugin\n")
        explainer, reader = explainer_for([rules], replace(AgentConfig(), priority="warning"))
        alice = events_of(reader, EVENTS)[0]
        reasons = {name: explainer.explain(name, event).reason
                   for name, event in (("Pod Created", alice), ("Namespace Deleted", alice), ("Nope", alice),
                                       ("Plugin Rule", alice))}
        assert reasons == {
            "Plugin Rule": "not loaded: skipped (skip-if-unknown-filter) or of a source no loaded plugin provides",
            "Pod Created": "priority Notice is below the threshold Warning (priority setting)",
            "Namespace Deleted": "disabled (enabled: false, or a `rules` selection of the configuration)",
            "Nope": "no rule of that name is loaded",
        }
        explainer, reader = explainer_for([RULES])
        get = events_of(reader, EVENTS)[2]
        assert explainer.explain("Pod Created", get).reason == (
            "index: ka.verb is 'get'; the condition can only be true for (create)")
        [kernel_event, *_] = reader.written([{"kernel": {"time": "2024-06-03T10:00:00Z", "pod": "a/b",
                                                         "run": ["/bin/sh"]}}], origin="test")
        assert isinstance(kernel_event, Event)
        assert explainer.explain("Pod Created", kernel_event).reason == (
            "the rule is of source 'k8s_audit', the event of 'syscall'")

    @staticmethod
    def reason_on_a_get(tmp_path: Path, condition: str) -> tuple[str, Event]:
        """Why a k8s rule `Added` with this condition, loaded after the test rules, did not match the sample get."""
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES.read_text() + f"\n- rule: Added\n  desc: d\n  condition: {condition}\n  output: o\n"
                                             "  priority: WARNING\n  source: k8s_audit\n")
        explainer, reader = explainer_for([rules])
        get = events_of(reader, EVENTS)[2]
        return explainer.explain("Added", get).reason, get

    def test_a_rule_turned_off_says_so(self, tmp_path: Path) -> None:
        """A rule negating a field every event has is never evaluated, and explain says why."""
        assert self.reason_on_a_get(tmp_path, "ka.verb = get and not jevt.rawtime exists")[0] == (
            "never evaluated: its condition is false on every event (it negates a field every event has)")

    def test_a_rule_pinned_to_another_time_says_so(self, tmp_path: Path) -> None:
        """Falco's "never true" (`jevt.rawtime=0`) keeps a rule from the index of any event at another time."""
        reason, get = self.reason_on_a_get(tmp_path, "ka.verb = get and jevt.rawtime = 0")
        assert reason == f"index: jevt.rawtime is '{get.ts_ns}'; the condition can only be true for (0)"


class TestAgreesWithTheEngine:
    @staticmethod
    def check(engine_files: list[Path], inputs: list[Path] | Callable[[EventReader], Iterable[Event | DecodeError]]
              ) -> dict[str, int]:
        """Per verdict, how many (rule, event) pairs got it; fails on any pair where explain and engine differ.
        `inputs` are files, or what reads the events."""
        explainer, reader = explainer_for(engine_files)
        engine: Engine = explainer.engine
        names = [rule.name for rule in engine.rules]
        verdicts: dict[str, int] = {}
        items = inputs(reader) if callable(inputs) else reader.files(inputs)
        for item in items:
            if isinstance(item, DecodeError):
                continue
            alerted = {alert.rule for alert in engine.process(item)}
            for name in names:
                explanation = explainer.explain(name, item)
                assert explanation.is_match == (name in alerted), (name, explanation.status, item.num)
                verdicts[explanation.status.value] = verdicts.get(explanation.status.value, 0) + 1
        return verdicts

    def test_an_exception_silences_in_both(self) -> None:
        """Where an exception value suppresses the alert, explain says so and the engine raises nothing."""
        verdicts = self.check([RULES], [EVENTS])
        assert verdicts["suppressed by an exception"] == 1 and verdicts["match"] >= 1

    def test_upstream_k8s_audit_rules_on_the_regression_traces(self, reference: Path) -> None:
        """On every upstream k8s audit rule and every regression trace, explain says match exactly when the engine
        alerts."""
        traces = sorted((reference / "samples" / "k8s_audit" / "falco-regression").glob("*.json"))
        verdicts = self.check([reference / "rules" / "k8s_audit_rules.yaml"],
                              [t for t in traces if t.name != "expected.json"])
        assert verdicts["match"] > 20 and verdicts["no match"] > 100

    def test_upstream_cloudtrail_rules_on_the_samples(self, reference: Path) -> None:
        """On every upstream CloudTrail rule and every CloudTrail sample, explain agrees with the engine."""
        samples = sorted((reference / "samples" / "cloudtrail").rglob("*.json"))
        verdicts = self.check([reference / "rules" / "aws_cloudtrail_rules.yaml"],
                              [s for s in samples if s.name != "expected.json"])
        assert verdicts["match"] >= 2

    def test_upstream_syscall_rules_on_the_shipped_syscall_cases(self, reference: Path) -> None:
        """On every upstream syscall rule and the kernel events of the shipped syscall cases, explain agrees too."""
        cases = load_cases(REPO / "rules" / "tests" / "syscall.tests.yaml")

        def events(reader: EventReader) -> Iterator[Event | DecodeError]:
            for case in cases:
                yield from reader.written(case.input.documents, origin=case.label)

        verdicts = self.check([reference / "rules" / "falco_rules.yaml"], events)
        assert verdicts["match"] > 5 and verdicts["no match"] > 100


class TestCommand:
    def test_text_shows_macros_by_name_and_expands_on_request(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Text names each macro with its result; --expand shows that macro's checks beneath it."""
        assert main(["explain", "-r", str(RULES), "--rule", "Pod Created", str(EVENTS)]) == 0
        out = capsys.readouterr().out
        assert "event 1: source k8s_audit, type create" in out
        assert "  rule 'Pod Created' (Notice): MATCH" in out
        assert "      ✓ macro pod_created\n" in out and "ka.verb = create" not in out
        assert "  rule 'Pod Created' (Notice): SUPPRESSED BY AN EXCEPTION" in out
        assert ("    exception 'ci_namespaces': suppressed by ka.user.name = ci-bot and ka.target.namespace = builds"
                in out)
        assert "NOT A CANDIDATE: index: ka.verb is 'get'" in out
        assert main(["explain", "-r", str(RULES), "--rule", "Pod Created", "--expand", "pod_created",
                     str(EVENTS)]) == 0
        assert "        ✓ ka.verb = create    ka.verb='create'" in capsys.readouterr().out

    def test_json_holds_every_tree(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--json prints one document: per event the rules evaluated, their verdicts, trees and values."""
        assert main(["explain", "-r", str(RULES), "--json", str(EVENTS)]) == 0
        document = json.loads(capsys.readouterr().out)
        first, second, third = document["events"]
        [pod_created] = first["rules"]
        assert (pod_created["rule"], pod_created["verdict"], pod_created["match"]) == ("Pod Created", "match", True)
        macro = pod_created["condition"]["children"][0]
        assert macro["name"] == "pod_created" and macro["children"][0]["children"][0]["values"] == {
            "ka.verb": "create"}
        assert second["rules"][0]["exceptions"][0]["suppressed_by"] == (
            "ka.user.name = ci-bot and ka.target.namespace = builds")
        assert third["rules"] == []

    def test_a_rules_file_that_does_not_load_exits_1(self, capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
        """Broken rules are reported and nothing is explained."""
        broken = tmp_path / "broken.yaml"
        broken.write_text("- rule: x\n  condition: (\n  output: o\n  priority: INFO\n  desc: d\n")
        assert main(["explain", "-r", str(broken), str(EVENTS)]) == 1
        assert "broken.yaml" in capsys.readouterr().err


def test_the_engine_never_imports_explain() -> None:
    """The engine's evaluation path knows nothing of explain: explaining costs nothing when unused."""
    for path in (REPO / "agent" / "engine").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not any(name.startswith(("agent.explain", "agent.rule_tests")) for name in imported), path
