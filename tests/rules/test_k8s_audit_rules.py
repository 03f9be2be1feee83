"""The shipped `rules/k8s_audit.yaml`: it loads cleanly, and local tuning silences what it names (its cases,
rules/tests/k8s_audit.tests.yaml, run through `falco-agent rules test`: see tests/agent/rule_tests)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from agent.engine.engine import Engine
from tests.support.rules_harness import RulesFileChecks, fired, loaded_engine, shipped_cases

ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = ROOT / "rules" / "k8s_audit.yaml"
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
    SOURCE = SOURCE


def positive_event(rule: str, index: int = 0) -> dict[str, Any]:
    """A copy of the event of the rule's `index`-th case expecting a match."""
    cases = [c for c in shipped_cases(RULES_FILE) if c.rule == rule and c.expect.matches]
    event: dict[str, Any] = copy.deepcopy(cases[index].input.documents[0])
    return event


class TestTuning:
    @staticmethod
    def exec_event(user: str, namespace: str) -> dict[str, Any]:
        event = positive_event("Interactive Session Opened In Pod")
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
        event = positive_event("Pod Joins Host Namespaces", 1)
        assert "Pod Joins Host Namespaces" in self.fired(tuned, event)
        event["objectRef"]["namespace"] = "calico-system"
        assert "Pod Joins Host Namespaces" not in self.fired(tuned, event)
