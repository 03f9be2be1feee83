"""Generates one Python function per condition from compiled check plans.

A condition becomes a single boolean expression, so evaluation costs no Python call per `and`,
`or`, `not` or simple check (an operator with an inline form is written out), and fields are read inline: by their
extractor's inline form when it has one, else from the event's cache (agent.fields.GeneratedReads). The
generated text is kept on the function as `__falco_source__` for debugging (`dump_source`).
Conditions nested deeper than Python's parser allows fall back to closures (None is returned).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Mapping, Sequence
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
    def __init__(self, plan: Callable[[Check], CheckPlan], *, held: Mapping[str, str] | None = None,
                 shared: Collection[str] = ()) -> None:
        self.plan = plan
        self.namespace: dict[str, Any] = {}
        self.count = 0
        self.reads = GeneratedReads(self.bind, held=held, shared=shared)

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
    function.__falco_condition__ = (expr, plan)  # type: ignore[attr-defined]
    return function


def dump_source(predicate: Callable[[Event], bool]) -> str | None:
    """The generated text of a predicate, if it was generated."""
    return getattr(predicate, "__falco_source__", None)


class ErrorCount(Protocol):
    """Where an evaluator counts the rules an extraction error kept from matching."""

    rule_errors: int


#: Evaluates rules in turn on an event: `evaluate(event, key, errors, first_only)` gives the results of the rules
#: whose condition holds (only the first with `first_only`), counting in `errors` each one an extraction error
#: stopped; `key` is the event's index key (agent.engine.ruleset.RuleSet.narrow).
Evaluator = Callable[[Event, tuple[Any, ...], ErrorCount, bool], list[Any]]


def generate_evaluator(predicates: Sequence[Callable[[Event], bool]], results: Sequence[Any],
                       errors: tuple[type[BaseException], ...], held: Sequence[str | None] = ()) -> Evaluator | None:
    """One function evaluating generated `predicates` in turn (None when one is not generated), as a loop calling
    them would, results in the same order. Their conditions are written into one body that reads each field at most
    once: the fields whose cache keys `held` lists are given in the index key (`evaluate(ev, key, ...)`, `key[i]`
    the value of field `held[i]`), and any other read by several conditions is kept at its first read. A predicate
    raising one of `errors` counts an error and does not match."""
    conditions: list[tuple[Expr, Callable[[Check], CheckPlan]]] = []
    for predicate in predicates:
        condition = getattr(predicate, "__falco_condition__", None)
        if condition is None:
            return None
        conditions.append(condition)
    given = {key: f"_i{position}" for position, key in enumerate(held) if key is not None}
    builder, bodies = _bodies(conditions, given, ())
    shared = {key for key, count in builder.reads.reads.items() if count > 1 and key not in given}
    if shared:
        builder, bodies = _bodies(conditions, given, shared)
    namespace = builder.namespace
    namespace.update({"_errors": errors, **{f"_result{i}": result for i, result in enumerate(results)}})
    lines = ["def evaluate(ev, key, counts, first_only):",
             *(f"    {local} = key[{local[2:]}]" for local in sorted(builder.reads.held_used)),
             *(f"    {line}" for line in builder.reads.prologue()), "    matched = []"]
    for position, body in enumerate(bodies):
        lines += ["    try:", f"        if {body}:", f"            matched.append(_result{position})",
                  "            if first_only:", "                return matched",
                  "    except _errors:", "        counts.rule_errors += 1"]
    lines.append("    return matched")
    exec(compile("\n".join(lines), "<rules>", "exec"), namespace)
    evaluate: Evaluator = namespace["evaluate"]
    return evaluate


def _bodies(conditions: Sequence[tuple[Expr, Callable[[Check], CheckPlan]]], held: Mapping[str, str],
            shared: Collection[str]) -> tuple[_Builder, list[str]]:
    """The expressions of `conditions` in one function's builder (see GeneratedReads for `held` and `shared`)."""
    builder = _Builder(conditions[0][1], held=held, shared=shared)
    bodies = []
    for expr, plan in conditions:
        builder.plan = plan
        bodies.append(builder.expr(expr, 0))
    return builder, bodies
