"""The shipped `rules/k8s_audit.yaml`: it loads cleanly and every rule fires and stays quiet on its fixtures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.builtin_sources import new_engine, recorded_decoders
from agent.engine.engine import Engine
from agent.errors import DecodeError
from agent.event import Event

ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = ROOT / "rules" / "k8s_audit.yaml"
FIXTURES = ROOT / "tests" / "fixtures" / "rules" / "k8s_audit"
TUNING_FILE = ROOT / "tests" / "fixtures" / "rules" / "tuning" / "k8s_audit_local.yaml"
SOURCE = "k8s_audit"


def rule_names(path: Path) -> list[str]:
    """Names of the full rule definitions in a rules file, in file order."""
    return [item["rule"] for item in yaml.safe_load(path.read_text()) if isinstance(item, dict) and "condition" in item
            and "rule" in item]


def fixture_cases() -> list[Any]:
    params = []
    for path in sorted(FIXTURES.glob("*.json")):
        doc = json.loads(path.read_text())
        for expect in ("fires", "quiet"):
            for index, case in enumerate(doc[expect]):
                params.append(pytest.param(doc["rule"], expect, case["event"],
                                           id=f"{path.stem}-{expect}-{index}-{case['case']}"))
    return params


@pytest.fixture(scope="module")
def engine() -> Engine:
    engine = new_engine(rule_matching="all")
    result = engine.load_rules_files([RULES_FILE])
    assert result.successful, [p.as_text() for p in result.problems]
    return engine


@pytest.fixture(scope="module")
def tuned() -> Engine:
    """The shipped rules plus the local tuning file that appends exception values and list items."""
    engine = new_engine(rule_matching="all")
    result = engine.load_rules_files([RULES_FILE, TUNING_FILE])
    assert result.problems == [], [p.as_text() for p in result.problems]
    return engine


def decode(document: Any) -> list[Event]:
    decoder = next(d for d in recorded_decoders(hostname="test") if d.source == SOURCE)
    items = list(decoder.events(document, origin="fixture"))
    errors = [item for item in items if isinstance(item, DecodeError)]
    assert not errors, [e.message for e in errors]
    return items


class TestRulesFile:
    def test_loads_without_errors_or_warnings(self) -> None:
        """The shipped k8s_audit rules load with no error and no warning."""
        result = new_engine().load_rules_files([RULES_FILE])
        assert result.problems == [], [p.as_text() for p in result.problems]

    def test_every_rule_is_a_k8s_audit_rule(self) -> None:
        """Every loaded rule belongs to the k8s_audit source, so none is silently skipped."""
        engine = new_engine()
        engine.load_rules_files([RULES_FILE])
        assert {rule.source for rule in engine.rules} == {SOURCE}
        assert len(engine.rules) == len(rule_names(RULES_FILE))

    def test_every_rule_has_a_fixture(self) -> None:
        """Adding a rule without a fixture file (or leaving a fixture for a removed rule) fails."""
        covered = {json.loads(p.read_text())["rule"] for p in FIXTURES.glob("*.json")}
        assert covered == set(rule_names(RULES_FILE))

    def test_every_fixture_has_both_kinds_of_case(self) -> None:
        """Each fixture holds at least one event that fires and one near miss that stays quiet."""
        for path in FIXTURES.glob("*.json"):
            doc = json.loads(path.read_text())
            assert doc["fires"] and doc["quiet"], path.name

    def test_every_rule_has_a_mitre_technique_tag(self) -> None:
        """Every rule is tagged with at least one MITRE ATT&CK technique id."""
        engine = new_engine()
        engine.load_rules_files([RULES_FILE])
        for rule in engine.rules:
            assert any(tag.startswith("T1") for tag in rule.tags), rule.name


@pytest.mark.parametrize(("rule", "expect", "event"), fixture_cases())
def test_fixture_event(engine: Engine, rule: str, expect: str, event: dict[str, Any]) -> None:
    """A fixture's "fires" events raise the named rule and its "quiet" events do not."""
    fired = [alert.rule for ev in decode(event) for alert in engine.process(ev)]
    if expect == "fires":
        assert rule in fired
    else:
        assert rule not in fired


class TestTuning:
    @staticmethod
    def exec_event(user: str, namespace: str) -> dict[str, Any]:
        doc = json.loads((FIXTURES / "interactive_session_opened_in_pod.json").read_text())
        event: dict[str, Any] = json.loads(json.dumps(doc["fires"][0]["event"]))
        event["user"]["username"] = user
        event["objectRef"]["namespace"] = namespace
        return event

    def fired(self, engine: Engine, event: dict[str, Any]) -> list[str]:
        return [alert.rule for ev in decode(event) for alert in engine.process(ev)]

    def test_appended_exception_silences_only_its_tuple(self, tuned: Engine) -> None:
        """Exception values appended by a local file silence that user in that namespace and nowhere else."""
        assert "Interactive Session Opened In Pod" not in self.fired(tuned, self.exec_event("oncall@example.com",
                                                                                             "payments"))
        assert "Interactive Session Opened In Pod" in self.fired(tuned, self.exec_event("oncall@example.com", "data"))
        assert "Interactive Session Opened In Pod" in self.fired(tuned, self.exec_event("mallory", "payments"))

    def test_appended_list_item_extends_platform_namespaces(self, tuned: Engine) -> None:
        """A namespace appended to the platform list no longer raises host-access alerts."""
        doc = json.loads((FIXTURES / "pod_joins_host_namespaces.json").read_text())
        event: dict[str, Any] = json.loads(json.dumps(doc["fires"][1]["event"]))
        assert "Pod Joins Host Namespaces" in self.fired(tuned, event)
        event["objectRef"]["namespace"] = "calico-system"
        assert "Pod Joins Host Namespaces" not in self.fired(tuned, event)
