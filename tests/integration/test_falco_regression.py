"""Falco's own regression expectations, replayed through the upstream rules files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agent.alert import Alert
from agent.builtin_sources import new_engine
from agent.config import AgentConfig
from agent.errors import DecodeError
from agent.plugins.registry import load_registry
from agent.recorded import recorded_events

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference"

K8S_DIR = REFERENCE / "samples" / "k8s_audit" / "falco-regression"
CT_DIR = REFERENCE / "samples" / "cloudtrail" / "falco-regression"


def _cases(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text()) if path.is_file() else []


def _replay(rules_files: list[Path], trace: Path) -> list[Alert]:
    engine = new_engine()
    result = engine.load_rules_files(rules_files)
    assert result.successful, result.as_text()
    alerts: list[Alert] = []
    for item in recorded_events([trace], load_registry(AgentConfig()).decoders(hostname="test")):
        if not isinstance(item, DecodeError):
            alerts += engine.process(item)
    return alerts


def _assert_case(case: dict[str, Any], alerts: list[Alert]) -> None:
    counts = Counter(a.rule for a in alerts)
    if not case["detect"]:
        assert not alerts, f"expected no alert, got {dict(counts)}"
        return
    for rule, expected in case["detect_counts"].items():
        assert counts[rule] == expected, f"{rule}: expected {expected}, got {dict(counts)}"
    level = case["detect_level"].upper().replace("INFO", "INFORMATIONAL")
    assert any(a.priority.name == level for a in alerts), f"no alert at {level}"


@pytest.mark.parametrize("case", _cases(K8S_DIR / "expected-current.json"), ids=lambda c: c["test"])
def test_k8s_audit_regression_case(case: dict[str, Any], reference: Path) -> None:
    """Each Falco k8s-audit regression case gives the expected rules, counts and priority."""
    alerts = _replay([reference / f for f in case["rules_files"]], K8S_DIR / case["trace"])
    _assert_case(case, alerts)


@pytest.mark.parametrize("case", _cases(CT_DIR / "expected.json"), ids=lambda c: c["test"])
def test_cloudtrail_regression_case(case: dict[str, Any], reference: Path) -> None:
    """Falco's CloudTrail plugin cases (one small and one 64 KB record) fire exactly once at INFO."""
    alerts = _replay([reference / f for f in case["rules_files"]], CT_DIR / case["trace"])
    _assert_case(case, alerts)
    # The record has no eventID: the output must say so with <NA>, and name the user from the JSON.
    assert "id=<NA>" in alerts[0].output and "Alice" in alerts[0].output


def test_malformed_audit_trace_is_rejected_with_reason(reference: Path) -> None:
    """The FAL-01-003 input `{"kind": 0}` is refused as not an audit event, without crashing."""
    items = list(recorded_events([K8S_DIR / "fal_01_003.json"], load_registry(AgentConfig()).decoders(hostname="test")))
    assert len(items) == 1 and isinstance(items[0], DecodeError)
    assert "not a Kubernetes audit event" in items[0].message


@pytest.mark.parametrize("files", [
    ["falco_rules.yaml"],
    ["k8s_audit_rules.yaml"],
    ["aws_cloudtrail_rules.yaml"],
    ["falco_rules.yaml", "k8s_audit_rules.yaml", "aws_cloudtrail_rules.yaml"],
])
def test_upstream_rules_files_load_without_error(files: list[str], reference: Path) -> None:
    """The upstream Falco rules files load unchanged with no error."""
    result = new_engine().load_rules_files([reference / "rules" / f for f in files])
    assert result.successful, result.as_text()
    rules_in_files = sum((reference / "rules" / f).read_text().count("\n- rule:") for f in files)
    assert rules_in_files > 0


def test_the_gke_overlay_needs_the_k8saudit_gke_plugin(reference: Path) -> None:
    """As in Falco: the overlay requires k8saudit-gke, which the built-in k8s_audit source does not stand in for
    (it reads no GKE audit logs), so without that plugin loaded the load fails naming it."""
    files = [reference / "rules" / f for f in ("k8s_audit_rules.yaml", "k8s_audit_rules_gke.yaml")]
    [error] = new_engine().load_rules_files(files).errors
    assert (error.code.value, error.location.line) == ("LOAD_ERR_VALIDATE", 21)
    assert "must load one of: k8saudit-gke (>= 0.9.0)" in error.message
