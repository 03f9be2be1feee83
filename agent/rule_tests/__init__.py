"""Labelled test cases kept with rules files, and `falco-agent rules test` that runs them through the agent's
engine (see README "Testing rules")."""

from agent.rule_tests.cases import CaseError, RuleCase, load_cases
from agent.rule_tests.runner import CaseResult, RulesUnderTest

__all__ = ["CaseError", "CaseResult", "RuleCase", "RulesUnderTest", "load_cases"]
