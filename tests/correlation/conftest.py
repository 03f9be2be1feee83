"""A mixed-source engine (stand-in kernel, real audit and CloudTrail sources) and replay of recorded streams."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.alert import Alert
from agent.engine.engine import Engine, RulesText
from agent.errors import DecodeError
from agent.recorded import recorded_events
from agent.source import RecordDecoder
from sources.cloudtrail.decoder import CloudTrailDecoder
from sources.cloudtrail.fields import cloudtrail_source
from sources.k8saudit.decoder import K8sAuditDecoder
from sources.k8saudit.fields import k8s_audit_source
from tests.support.syscall_stand_in import StandInDecoder, syscall_stand_in

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "rules" / "correlation.yaml"
STREAMS = REPO / "tests" / "fixtures" / "correlation" / "streams"


def mixed_engine(*texts: str, **kwargs: Any) -> Engine:
    """An engine with the stand-in kernel source and the real audit and CloudTrail sources, texts loaded."""
    engine = Engine(hostname="agent-1", **kwargs)
    for spec in (syscall_stand_in(), k8s_audit_source(), cloudtrail_source()):
        engine.add_source(spec)
    result = engine.load_rules([RulesText(f"f{i}.yaml", text) for i, text in enumerate(texts, start=1)])
    assert result.successful, result.as_text()
    return engine


def decoders() -> list[RecordDecoder]:
    return [StandInDecoder(), K8sAuditDecoder(hostname="node-1"), CloudTrailDecoder(hostname="node-1")]


def replay(engine: Engine, *paths: Path) -> list[Alert]:
    """Every alert of the recorded events of `paths`, fed in file order (arrival order)."""
    alerts: list[Alert] = []
    for item in recorded_events(paths, decoders()):
        assert not isinstance(item, DecodeError), item.message
        alerts += engine.process(item)
    return alerts


@pytest.fixture
def shipped() -> Engine:
    """A mixed-source engine running rules/correlation.yaml alone."""
    return mixed_engine(SHIPPED.read_text())
