"""`falco-agent explain`: why a rule matched an event or not, node by node, read beside the engine (its compiled
rules and hot path are untouched)."""

from agent.explain.model import RulesModel, read_model
from agent.explain.verdict import Explainer, RuleExplanation, Status

__all__ = ["Explainer", "RuleExplanation", "RulesModel", "Status", "read_model"]
