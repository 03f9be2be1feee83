"""Why a rule matched an event or not: whether it was a candidate at all (source, enabled, priority threshold, the
index by event type or pinned field), then its condition tree and its exceptions, in the engine's order."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from agent.engine.ast import Expr
from agent.engine.correlation_compiler import CompiledCorrelation, CompiledStep
from agent.engine.engine import Engine
from agent.engine.ruleset import MISSING, CompiledRule, Indexed, RuleSet, possible_values
from agent.event import Event
from agent.explain.evaluate import Node, NodeKind, Outcome, TreeEvaluator, combine_in_order, expr_text
from agent.explain.model import RulesModel
from agent.source import SourceSpec


class Status(Enum):
    MATCH = "match"
    NO_MATCH = "no match"
    SUPPRESSED = "suppressed by an exception"
    ERROR = "evaluation error (no match)"
    NOT_CANDIDATE = "not a candidate"


@dataclass(slots=True)
class ExceptionResult:
    """An exception's items evaluated in order; `suppressed_by` is the item that matched, when one did."""

    name: str
    items: list[tuple[str, Node]]
    outcome: Outcome
    suppressed_by: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "result": self.outcome.value, "suppressed_by": self.suppressed_by or None,
                "items": [{"text": text, "tree": node.as_json()} for text, node in self.items]}


@dataclass(slots=True)
class RuleExplanation:
    rule: str
    status: Status
    reason: str = ""
    source: str = ""
    priority: str = ""
    condition: Node | None = None
    exceptions: list[ExceptionResult] = field(default_factory=list)

    @property
    def is_match(self) -> bool:
        return self.status is Status.MATCH

    def as_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "source": self.source, "priority": self.priority, "verdict": self.status.value,
                "match": self.is_match, "reason": self.reason or None,
                "condition": self.condition.as_json() if self.condition else None,
                "exceptions": [ex.as_json() for ex in self.exceptions]}


class Explainer:
    """Explains the rules of a loaded engine on events; `model` holds the same rules as written."""

    def __init__(self, engine: Engine, model: RulesModel) -> None:
        self.engine = engine
        self.model = model
        self._rules = {rule.name: rule for rule in engine.rules}
        self._evaluators = {name: TreeEvaluator(spec.fields, model.macros) for name, spec in engine.sources.items()}

    def candidates(self, event: Event) -> list[str]:
        """The rules the engine evaluates on `event`, in order."""
        ruleset = self.engine.ruleset(event.source)
        return [rule.name for rule in ruleset.candidates(event)] if ruleset is not None else []

    def passed_over(self, event: Event) -> list[RuleExplanation]:
        """Rules of the event's source the index admits but the engine does not evaluate: disabled, or below the
        priority threshold."""
        out = []
        for rule in self._rules.values():
            if rule.source == event.source and not self._index_reason(rule, event):
                reason = self.selection_reason(rule)
                if reason:
                    out.append(RuleExplanation(rule.name, Status.NOT_CANDIDATE, reason, rule.source,
                                               rule.priority.label))
        return out

    def explain(self, name: str, event: Event) -> RuleExplanation:
        """Why rule `name` did or did not match `event`."""
        rule = self._rules.get(name)
        if rule is None:
            return RuleExplanation(name, Status.NOT_CANDIDATE, self._unknown_reason(name))
        head = RuleExplanation(name, Status.NOT_CANDIDATE, "", rule.source, rule.priority.label)
        if rule.source != event.source:
            head.reason = f"the rule is of source '{rule.source}', the event of '{event.source}'"
            return head
        head.reason = self.selection_reason(rule) or self._index_reason(rule, event)
        if head.reason:
            return head
        evaluator = self._evaluators[rule.source]
        model = self.model.rules[name]
        head.condition = evaluator.evaluate(model.condition, event)
        head.exceptions = [self._exception(evaluator, ex.name, ex.items, event) for ex in model.exceptions]
        head.status = _status(head.condition, head.exceptions)
        return head

    def explain_step(self, correlation: CompiledCorrelation, step: CompiledStep, event: Event) -> RuleExplanation:
        """Whether a correlation's step matched `event`: its condition tree, as a rule's (a step has no
        exceptions)."""
        head = RuleExplanation(step.name, Status.NOT_CANDIDATE, self.selection_reason(correlation), step.source,
                               correlation.priority.label)
        if head.reason:
            return head
        written = self.model.correlations[correlation.name][step.position]
        head.condition = self._evaluators[step.source].evaluate(written.condition, event)
        head.status = _status(head.condition, [])
        return head

    def _exception(self, evaluator: TreeEvaluator, name: str, items: tuple[Expr, ...], event: Event
                   ) -> ExceptionResult:
        nodes = [(expr_text(item), evaluator.evaluate(item, event)) for item in items]
        outcome, index = combine_in_order(NodeKind.OR, [node for _, node in nodes])
        suppressed_by = nodes[index][0] if outcome is Outcome.TRUE and index is not None else ""
        return ExceptionResult(name, nodes, outcome, suppressed_by)

    def _unknown_reason(self, name: str) -> str:
        if any(correlation.name == name for correlation in self.engine.correlations):
            return "a correlation: its steps are explained with the correlation (explain --rule CORRELATION)"
        if name in self.model.defined_rules:
            return "not loaded: skipped (skip-if-unknown-filter) or of a source no loaded plugin provides"
        return "no rule of that name is loaded"

    def selection_reason(self, rule: CompiledRule | CompiledCorrelation) -> str:
        """Why the engine evaluates no condition of the rule or correlation ('' when it does)."""
        if not rule.enabled:
            return "disabled (enabled: false, or a `rules` selection of the configuration)"
        if rule.priority > self.engine.min_priority:
            return (f"priority {rule.priority.label} is below the threshold {self.engine.min_priority.label} "
                    "(priority setting)")
        return ""

    def _index_reason(self, rule: CompiledRule, event: Event) -> str:
        return index_reason(self.engine.ruleset(rule.source), self.engine.sources[rule.source], rule, event)


def index_reason(ruleset: RuleSet[Any] | None, spec: SourceSpec, item: Indexed, event: Event) -> str:
    """Why the index of `ruleset` keeps `item` (a rule or a correlation step) from the event ('' when it does
    not)."""
    if ruleset is None:
        return ""
    if item in ruleset.never:
        return "never evaluated: its condition is false on every event (it negates a field every event has)"
    for name in ruleset.narrowed_by.get(item.name, ()):
        resolved = spec.fields.resolve(name, None)
        if resolved is None:
            continue
        value = resolved[0].bind(None)(event)
        value = MISSING if isinstance(value, tuple) else value
        admitted = possible_values(item.condition, name)
        if (value in admitted.values) == admitted.cofinite:
            shown = ", ".join(sorted(str(v) for v in admitted.values if v is not MISSING))
            among = f"any value but ({shown})" if admitted.cofinite else f"({shown})"
            return f"index: {name} is {_shown(value)}; the condition can only be true for {among}"
    return ""


def _status(condition: Node, exceptions: list[ExceptionResult]) -> Status:
    """The engine's verdict: the condition, then `and not` each exception in order, stopping at the first that
    decides."""
    if condition.outcome is Outcome.ERROR:
        return Status.ERROR
    if condition.outcome is Outcome.FALSE:
        return Status.NO_MATCH
    for exception in exceptions:
        if exception.outcome is Outcome.ERROR:
            return Status.ERROR
        if exception.outcome is Outcome.TRUE:
            return Status.SUPPRESSED
    return Status.MATCH


def _shown(value: Any) -> str:
    return "missing" if value is MISSING else repr(value)
