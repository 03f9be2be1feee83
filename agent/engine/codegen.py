"""Generates one Python function per condition from compiled check plans.

A condition becomes a single boolean expression, so evaluation costs no Python call per `and`,
`or`, `not` or simple check (an operator with an inline form is written out), and fields are read inline: by their
extractor's inline form when it has one, else from the event's cache (agent.fields.GeneratedReads). The
generated text is kept on the function as `__falco_source__` for debugging (`dump_source`).
Conditions nested deeper than Python's parser allows fall back to closures (None is returned).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from agent.engine.ast import And, Check, Expr, Not, Or
from agent.event import Event
from agent.fields import GeneratedReads

if TYPE_CHECKING:
    from agent.engine.compiler import CheckPlan

#: Python's parser refuses deeply nested parentheses; stay well below its limit.
MAX_GENERATED_DEPTH = 50
#: Numbers the objects generated predicates name, process-wide, so that several predicates' texts can share one
#: function (`generate_evaluator`) without a clash.
_BOUND = itertools.count()


class _Builder:
    def __init__(self, plan: Callable[[Check], CheckPlan]) -> None:
        self.plan = plan
        self.namespace: dict[str, Any] = {}
        self.count = 0
        self.reads = GeneratedReads(self.bind)

    def bind(self, value: Any) -> str:
        self.count += 1
        name = f"_k{next(_BOUND)}"
        self.namespace[name] = value
        return name

    def value(self, plan: CheckPlan) -> str:
        """Expression reading the check's left-hand value: inline, or from the event's cache when cached."""
        lhs = plan.lhs
        if lhs.key is None or lhs.extract is None:
            return f"{self.bind(lhs.get)}(ev)"
        return self.reads.read(lhs.key, lhs.extract)

    def expr(self, node: Expr, depth: int) -> str:
        if depth > MAX_GENERATED_DEPTH:
            raise RecursionError
        if isinstance(node, Check):
            return self.check(self.plan(node))
        if isinstance(node, Not):
            return f"(not {self.expr(node.child, depth + 1)})"
        assert isinstance(node, (And, Or))
        joiner = " and " if isinstance(node, And) else " or "
        return "(" + joiner.join(self.expr(c, depth + 1) for c in node.children) + ")"

    def check(self, plan: CheckPlan) -> str:
        if plan.kind == "call":
            return f"{self.bind(plan.value)}(ev)"
        value = self.value(plan)
        if plan.kind == "exists":
            return f"({value} is not None)"
        if plan.kind == "eq":
            return f"({value} == {self.bind(plan.value)})"
        if plan.kind == "in":
            return f"({value} in {self.bind(plan.value)})"
        var = f"_w{self.count}"
        if plan.inline is None:
            return f"(({var} := {value}) is not None and {self.bind(plan.value)}({var}))"
        template, const = plan.inline
        return f"(({var} := {value}) is not None and {template.format(v=var, c=self.bind(const))})"


def generate_predicate(expr: Expr, plan: Callable[[Check], CheckPlan]) -> Callable[[Event], bool] | None:
    """A generated predicate for `expr`, or None when it nests too deeply to generate."""
    builder = _Builder(plan)
    try:
        body = builder.expr(expr, 0)
    except RecursionError:
        return None
    prologue = builder.reads.prologue()
    lines = ["def predicate(ev):", *(f"    {line}" for line in prologue), f"    return {body}"]
    source = "\n".join(lines) + "\n"
    exec(compile(source, "<condition>", "exec"), builder.namespace)
    function: Callable[[Event], bool] = builder.namespace["predicate"]
    function.__falco_source__ = source  # type: ignore[attr-defined]
    function.__falco_parts__ = (tuple(prologue), body)  # type: ignore[attr-defined]
    return function


def dump_source(predicate: Callable[[Event], bool]) -> str | None:
    """The generated text of a predicate, if it was generated."""
    return getattr(predicate, "__falco_source__", None)


class ErrorCount(Protocol):
    """Where an evaluator counts the rules an extraction error kept from matching."""

    rule_errors: int


#: Evaluates rules in turn on an event: `evaluate(event, errors, first_only)` gives the results of the rules whose
#: condition holds (only the first with `first_only`), counting in `errors` each one an extraction error stopped.
Evaluator = Callable[[Event, ErrorCount, bool], list[Any]]


def generate_evaluator(predicates: Sequence[Callable[[Event], bool]], results: Sequence[Any],
                       errors: tuple[type[BaseException], ...]) -> Evaluator | None:
    """One function evaluating generated `predicates` in turn (None when one is not generated), as a loop calling
    them would, results in the same order: their texts in one body, their opening statements (the payload, guards
    of inline reads) run once. A predicate raising one of `errors` counts an error and does not match."""
    parts: list[tuple[tuple[str, ...], str]] = []
    namespace: dict[str, Any] = {}
    for predicate in predicates:
        part = getattr(predicate, "__falco_parts__", None)
        if part is None:
            return None
        parts.append(part)
        namespace.update(getattr(predicate, "__globals__", {}))  # its bound names are unique (`_BOUND`)
    namespace.update({"_errors": errors, **{f"_result{i}": result for i, result in enumerate(results)}})
    prologue = dict.fromkeys(line for opening, _body in parts for line in opening)
    lines = ["def evaluate(ev, counts, first_only):", *(f"    {line}" for line in prologue), "    matched = []"]
    for position, (_opening, body) in enumerate(parts):
        lines += ["    try:", f"        if {body}:", f"            matched.append(_result{position})",
                  "            if first_only:", "                return matched",
                  "    except _errors:", "        counts.rule_errors += 1"]
    lines.append("    return matched")
    exec(compile("\n".join(lines), "<rules>", "exec"), namespace)
    evaluate: Evaluator = namespace["evaluate"]
    return evaluate
