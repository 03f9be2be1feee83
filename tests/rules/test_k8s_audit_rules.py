"""The shipped `rules/k8s_audit.yaml`: it loads cleanly and every rule fires and stays quiet on its fixtures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.engine.engine import Engine
from tests.support.rules_harness import RulesFileChecks, fired, fixture_cases, loaded_engine

ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = ROOT / "rules" / "k8s_audit.yaml"
FIXTURES = ROOT / "tests" / "fixtures" / "rules" / "k8s_audit"
TUNING_FILE = ROOT / "tests" / "fixtures" / "rules" / "tuning" / "k8s_audit_local.yaml"
SOURCE = "k8s_audit"


@pytest.fixture(scope="module")
def engine() -> Engine:
    return loaded_engine(RULES_FILE)


@pytest.fixture(scope="module")
def tuned() -> Engine:
    """The shipped rules plus the local tuning file that appends exception values and list items."""
    return loaded_engine(RULES_FILE, TUNING_FILE, clean=True)


class TestRulesFile(RulesFileChecks):
    RULES_FILE = RULES_FILE
    FIXTURES = FIXTURES
    SOURCE = SOURCE


@pytest.mark.parametrize(("rule", "expect", "event"), fixture_cases(FIXTURES))
def test_fixture_event(engine: Engine, rule: str, expect: str, event: dict[str, Any]) -> None:
    """A fixture's "fires" events raise the named rule and its "quiet" events do not."""
    names = fired(engine, event, SOURCE)
    if expect == "fires":
        assert rule in names
    else:
        assert rule not in names


class TestTuning:
    @staticmethod
    def exec_event(user: str, namespace: str) -> dict[str, Any]:
        doc = json.loads((FIXTURES / "interactive_session_opened_in_pod.json").read_text())
        event: dict[str, Any] = json.loads(json.dumps(doc["fires"][0]["event"]))
        event["user"]["username"] = user
        event["objectRef"]["namespace"] = namespace
        return event

    def fired(self, engine: Engine, event: dict[str, Any]) -> list[str]:
        return fired(engine, event, SOURCE)

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
