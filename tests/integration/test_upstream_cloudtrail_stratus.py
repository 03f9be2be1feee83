"""Stratus Red Team detonation logs through Falco's upstream CloudTrail rules: no error, and the implied alerts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from agent.builtin_sources import new_engine
from agent.config import AgentConfig
from agent.errors import DecodeError
from agent.plugins.registry import load_registry
from agent.recorded import recorded_events

STRATUS = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "samples" / "cloudtrail" / "stratus"

# What aws_cloudtrail_rules.yaml implies for each technique. Only three techniques call an API that
# an upstream rule names; of those, the unusual-instance launch was denied (errorCode
# Client.UnauthorizedOperation) and both RunInstances rules require `not ct.error exists`.
EXPECTED: dict[str, dict[str, int]] = {
    "aws.persistence.iam-create-admin-user": {"Create AWS user": 1},
    "aws.persistence.lambda-layer-extension": {"Update Lambda Function Configuration": 1},
    "aws.execution.ec2-launch-unusual-instances": {},
}


def _techniques() -> list[str]:
    return sorted(p.stem for p in STRATUS.glob("*.json")) if STRATUS.is_dir() else []


@pytest.fixture(scope="module")
def engine(reference: Path):
    engine = new_engine(rule_matching="all")
    result = engine.load_rules_files([reference / "rules" / "aws_cloudtrail_rules.yaml"])
    assert result.successful, result.as_text()
    return engine


@pytest.mark.parametrize("technique", _techniques())
def test_technique_replays_cleanly_with_the_implied_alerts(engine, technique: str) -> None:
    """Every record of the technique file decodes, and exactly the alerts the upstream rules imply fire."""
    fired: Counter[str] = Counter()
    events = 0
    decoders = load_registry(AgentConfig()).decoders(hostname="test")
    for item in recorded_events([STRATUS / f"{technique}.json"], decoders):
        assert not isinstance(item, DecodeError), str(item)
        events += 1
        fired.update(alert.rule for alert in engine.process(item))
    assert events > 0
    assert dict(fired) == EXPECTED.get(technique, {})
