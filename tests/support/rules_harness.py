"""What every shipped rules file is tested for, shared by the per-file test modules.

A test module subclasses `RulesFileChecks`, names its file and source, and gets the checks: it loads
cleanly, every rule is of its source, has cases (rules/tests/NAME.tests.yaml, run by `falco-agent rules
test`) expecting a match and expecting none, and carries a MITRE technique tag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import yaml

from agent.builtin_sources import new_engine
from agent.config import AgentConfig
from agent.engine.engine import Engine
from agent.errors import DecodeError
from agent.event import Event
from agent.plugins.registry import load_registry
from agent.rule_tests.cases import RuleCase, cases_files_for, load_cases

ROOT = Path(__file__).resolve().parents[2]


def rule_names(path: Path) -> list[str]:
    """Names of the full rule definitions in a rules file, in file order."""
    items = yaml.safe_load(path.read_text())
    return [item["rule"] for item in items if isinstance(item, dict) and "condition" in item and "rule" in item]


def shipped_cases(rules_file: Path) -> list[RuleCase]:
    """The cases kept with a shipped rules file (rules/tests/NAME.tests.yaml)."""
    return load_cases(cases_files_for(rules_file)[0])


def loaded_engine(*files: Path, clean: bool = False) -> Engine:
    """An engine with every matching rule reported; with `clean`, not even a warning is tolerated."""
    engine = new_engine(rule_matching="all")
    result = engine.load_rules_files(list(files))
    problems = result.problems if clean else result.errors
    assert not problems, [p.as_text() for p in problems]
    return engine


def decode(document: Any, source: str) -> list[Event]:
    """Events of a document through the source's real decoder; a decode error fails the test."""
    decoder = next(d for d in load_registry(AgentConfig()).decoders(hostname="test") if d.source == source)
    items = list(decoder.events(document, origin="fixture"))
    errors = [item for item in items if isinstance(item, DecodeError)]
    assert not errors, [e.message for e in errors]
    return items  # type: ignore[return-value]


def fired(engine: Engine, document: Any, source: str) -> list[str]:
    """Names of the rules that fire on a document."""
    return [alert.rule for event in decode(document, source) for alert in engine.process(event)]


class RulesFileChecks:
    RULES_FILE: ClassVar[Path]
    SOURCE: ClassVar[str]

    def test_loads_without_errors_or_warnings(self) -> None:
        """The shipped rules file loads with no error and no warning."""
        loaded_engine(self.RULES_FILE, clean=True)

    def test_every_rule_is_of_the_source(self) -> None:
        """Every loaded rule belongs to the file's source, so none is silently skipped."""
        engine = loaded_engine(self.RULES_FILE)
        assert {rule.source for rule in engine.rules} == {self.SOURCE}
        assert len(engine.rules) == len(rule_names(self.RULES_FILE))

    def test_every_rule_has_cases_of_both_kinds(self) -> None:
        """Adding a rule without a case expecting a match and one expecting none (or keeping cases of a removed
        rule) fails."""
        cases = shipped_cases(self.RULES_FILE)
        for expect in (True, False):
            assert {case.rule for case in cases if case.expect.matches is expect} == set(rule_names(self.RULES_FILE))

    def test_every_rule_has_a_mitre_technique_tag(self) -> None:
        """Every rule is tagged with at least one MITRE ATT&CK technique id."""
        for rule in loaded_engine(self.RULES_FILE).rules:
            assert any(tag.startswith("T1") for tag in rule.tags), rule.name
