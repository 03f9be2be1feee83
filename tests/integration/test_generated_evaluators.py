"""The function generated per set of candidate rules raises the alerts the rule-by-rule loop raises, byte for byte
(output text, output fields, rule, time, host), on Falco's own samples through the upstream rules files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.builtin_sources import new_engine
from agent.config import AgentConfig
from agent.engine.engine import EngineStats
from agent.engine.evaluator import evaluate_in_turn, generate_evaluator
from agent.event import Event
from agent.plugins.registry import load_registry


def documents(reference: Path, source: str) -> list[Any]:
    if source == "k8s_audit":
        folder = reference / "samples" / "k8s_audit" / "falco-regression"
        return [orjson.loads(line) for path in sorted(folder.glob("*.json")) if not path.name.startswith("expected")
                for line in path.read_bytes().splitlines() if line.strip()]
    return [orjson.loads(path.read_bytes()) for path in sorted((reference / "samples" / "cloudtrail").rglob("*.json"))
            if path.name != "expected.json"]


@pytest.mark.parametrize(("source", "rules_file", "least"), [
    ("k8s_audit", "k8s_audit_rules.yaml", 46),  # nine in ten of Falco's audit regression events alert
    ("aws_cloudtrail", "aws_cloudtrail_rules.yaml", 2),  # most records meet no candidate rule
])
@pytest.mark.parametrize("first_only", [True, False])
def test_generated_alerts_equal_the_loops(reference: Path, source: str, rules_file: str, least: int,
                                          first_only: bool) -> None:
    engine = new_engine()
    assert engine.load_rules_files([reference / "rules" / rules_file]).successful
    ruleset = engine.ruleset(source)
    assert ruleset is not None
    decoder = next(d for d in load_registry(AgentConfig()).decoders(hostname="node-1") if d.source == source)

    def decoded(document: Any) -> list[Event]:
        return [item for item in decoder.events(document, origin="sample") if isinstance(item, Event)]

    compared = alerted = 0
    for document in documents(reference, source):
        for looped_event, generated_event in zip(decoded(document), decoded(document), strict=True):
            key, node = ruleset.narrow(looped_event)
            if not node.rules:
                continue
            evaluate = generate_evaluator(node.rules, ruleset, "agent-host")
            assert evaluate is not None
            looped_errors, generated_errors = EngineStats(), EngineStats()
            looped = evaluate_in_turn(node.rules, "agent-host", looped_event, key, looped_errors, first_only)
            assert evaluate(generated_event, key, generated_errors, first_only) == looped
            assert generated_errors.rule_errors == looped_errors.rule_errors
            compared += 1
            alerted += bool(looped)
    assert alerted >= least and compared >= alerted
