"""A mixed-source engine (the real kernel, audit and CloudTrail sources) and replay of recorded streams."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from agent.alert import Alert
from agent.builtin_sources import builtin_source_specs, recorded_replayers
from agent.config import AgentConfig
from agent.engine.engine import Engine, RulesText
from agent.errors import DecodeError
from agent.plugins.registry import load_registry
from agent.recorded import recorded_events
from tests.support.kernel_scenarios import stream_files

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "rules" / "correlation.yaml"
STREAMS = REPO / "rules" / "tests" / "correlation"


def mixed_engine(*texts: str, **kwargs: Any) -> Engine:
    """An engine with every built-in source (kernel, audit, CloudTrail), texts loaded."""
    engine = Engine(hostname="agent-1", **kwargs)
    for spec in builtin_source_specs():
        engine.add_source(spec)
    result = engine.load_rules([RulesText(f"f{i}.yaml", text) for i, text in enumerate(texts, start=1)])
    assert result.successful, result.as_text()
    return engine


def replay(engine: Engine, *streams: Path) -> list[Alert]:
    """Every alert of the recorded streams, fed in arrival order as `falco-agent replay` reads their files:
    kernel lines through a capture written by the real kernel state, the rest as recorded."""
    alerts: list[Alert] = []
    with tempfile.TemporaryDirectory(prefix="correlation-stream-") as tmp:
        files = [file for stream in streams for file in stream_files(stream, Path(tmp) / stream.name)]
        items = recorded_events(files, load_registry(AgentConfig()).decoders(hostname="node-1"),
                                replayers=recorded_replayers(hostname="node-1"))
        for item in items:
            assert not isinstance(item, DecodeError), item.message
            alerts += engine.process(item)
    return alerts


@pytest.fixture
def shipped() -> Engine:
    """A mixed-source engine running rules/correlation.yaml alone."""
    return mixed_engine(SHIPPED.read_text())
