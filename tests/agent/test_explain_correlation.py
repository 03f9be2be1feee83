"""`falco-agent explain` on correlations: each step's condition tree per event, the key a match was filed under,
and at the end of the input the engine's verdict, with what was missing when it did not fire."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.builtin_sources import recorded_replayers
from agent.cli import main
from agent.config import AgentConfig
from agent.engine.engine import Engine
from agent.engine_setup import load_engine
from agent.explain import Explainer, read_model
from agent.explain.correlation import CorrelationExplainer, CorrelationOnEvent, CorrelationVerdict
from agent.plugins.registry import load_registry
from agent.rule_tests.cases import RuleCase, load_cases
from agent.rule_tests.inputs import EventReader

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules" / "correlation.yaml"
CASES = [case for case in load_cases(REPO / "rules" / "tests" / "correlation.tests.yaml") if case.is_correlation]
ESCAPE = "Container Escape Attempt In Pod Created With Host Access"
STREAMS = REPO / "rules" / "tests" / "correlation"


def explain_stream(name: str, stream: Path) -> tuple[CorrelationExplainer, list[list[CorrelationOnEvent]]]:
    registry = load_registry(AgentConfig())

    def engine() -> Engine:
        loaded, result = load_engine(AgentConfig(), [RULES], sources=registry.specs(), hostname="node-1")
        assert result.successful, result.as_text()
        return loaded

    rules_engine = engine()
    explainer = Explainer(rules_engine, read_model([RULES], known_sources=frozenset(rules_engine.sources)))
    correlations = CorrelationExplainer(explainer, engine(), [name])
    reader = EventReader(registry.decoders(hostname="node-1"), recorded_replayers(hostname="node-1"), "node-1")
    per_event: list[list[CorrelationOnEvent]] = []
    for item in reader.files([stream]):
        assert not isinstance(item, Exception), item
        per_event.append(correlations.observe(item, every_step=True))
    return correlations, per_event


def verdict_of(case: RuleCase) -> CorrelationVerdict:
    assert case.input.file is not None
    correlations, _ = explain_stream(case.rule, case.input.file)
    [verdict] = correlations.verdicts()
    return verdict


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_verdict_is_the_expectation_of_every_shipped_case(case: RuleCase) -> None:
    """Explain's fired / not fired is what the shipped case expects; when it did not fire it says what was missing."""
    verdict = verdict_of(case)
    assert (verdict.fired > 0) is case.expect.matches
    if case.expect.count is not None:
        assert verdict.fired == case.expect.count
    assert bool(verdict.missing) is not case.expect.matches


@pytest.mark.parametrize(("stream", "expected"), [
    ("plain_pod_nsenter.near_miss", "step 'created' never matched"),
    ("hostpid_nsenter.wrong_key", "step 'escape' matched with key (shop, cart-7b9c-abcde) but step 'created' had "
                                  "key (tools, nsenter-5f6g7)"),
    ("hostpid_nsenter.wrong_order", "wrong order under key (tools, nsenter-5f6g7)"),
    ("hostpid_nsenter.outside_window", "outside the window under key (tools, nsenter-5f6g7)"),
])
def test_a_near_miss_names_the_missing_step_or_key(stream: str, expected: str) -> None:
    correlations, _ = explain_stream(ESCAPE, STREAMS / f"{stream}.jsonl")
    [verdict] = correlations.verdicts()
    assert verdict.fired == 0
    assert any(line.startswith(expected) for line in verdict.missing), verdict.missing


def test_near_misses_of_the_other_kinds_say_what_was_missing() -> None:
    """Too few matches, a late event, an absence cancelled: each is named."""
    sign_in = "Console Sign-In Succeeded After Repeated Failures"
    exec_into = "Shell, Secret Read Or Outbound Connection After Exec Into Pod"
    trail = "CloudTrail Logging Stopped And Not Restarted"
    found = {stream: explain_stream(name, STREAMS / f"{stream}.jsonl")[0].verdicts()[0].missing
             for name, stream in ((sign_in, "console_login.too_few"), (exec_into, "exec_shell.too_late"),
                                  (trail, "trail_stopped.restarted"))}
    assert found["console_login.too_few"] == ["step 'failures' matched 2 time(s) under key (203.0.113.77); it needs 3"]
    assert "late: older than the correlation's clock minus its lateness (1m)" in found["exec_shell.too_late"][0]
    assert found["trail_stopped.restarted"][0].startswith("step 'restarted' (absent) matched at event 2")


def test_each_event_shows_the_step_tree_and_the_key_it_was_filed_under() -> None:
    _, per_event = explain_stream(ESCAPE, STREAMS / "hostpid_nsenter.positive.jsonl")
    shown = [on_event for events in per_event for on_event in events]
    created = next(c for c in shown if c.matched_steps == ["created"])
    [step] = created.steps
    assert step.key_fields == ("ka.target.namespace", "ka.resp.name")
    assert step.key == ("tools", "nsenter-5f6g7")
    tree = step.explanation.condition
    assert tree is not None and [child.name for child in tree.children] == ["corr_pod_created",
                                                                           "corr_pod_breaks_isolation"]
    escape = next(c for c in shown if c.matched_steps == ["escape"])
    assert escape.alerts == 1
    clone = next(c for c in shown if not c.matched_steps)
    assert clone.steps[0].explanation.reason.startswith("index: evt.type is 'clone'")


class TestCommand:
    def test_text_shows_steps_keys_and_the_verdict(self, capsys: pytest.CaptureFixture[str]) -> None:
        code = main(["explain", "-r", str(RULES), "--rule", ESCAPE, str(STREAMS / "hostpid_nsenter.wrong_key.jsonl")])
        out = capsys.readouterr().out
        assert code == 0
        assert "    step 'created' (Critical): MATCH\n        filed under (ka.target.namespace, ka.resp.name) = " \
               "(tools, nsenter-5f6g7)\n      ✓ and\n        ✓ macro corr_pod_created" in out
        assert out.rstrip().endswith(f"correlation '{ESCAPE}': DID NOT FIRE\n  - step 'escape' matched with key "
                                     "(shop, cart-7b9c-abcde) but step 'created' had key (tools, nsenter-5f6g7)")

    def test_json_without_rule_lists_candidate_correlations_and_verdicts(self, capsys: pytest.CaptureFixture[str]
                                                                         ) -> None:
        code = main(["explain", "-r", str(RULES), "--json", str(STREAMS / "hostpid_nsenter.positive.jsonl")])
        document = json.loads(capsys.readouterr().out)
        assert code == 0
        verdicts = {v["correlation"]: v for v in document["correlations"]}
        assert verdicts[ESCAPE]["fired"] is True and verdicts[ESCAPE]["fired_at_events"] == [3]
        # Only correlations with a step the index admitted some event to are judged.
        assert "Console Sign-In Succeeded After Repeated Failures" not in verdicts
        steps = [step for event in document["events"] for c in event["correlations"] if c["correlation"] == ESCAPE
                 for step in c["steps"]]
        assert {(s["step"], s["verdict"]) for s in steps} == {("created", "match"), ("escape", "match")}
        escape = next(s for s in steps if s["step"] == "escape")
        assert escape["key"] == ["tools", "nsenter-5f6g7"] and escape["condition"]["result"] == "true"
