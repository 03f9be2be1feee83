"""Generates one Python function per condition from compiled check plans.

A condition becomes a single boolean expression, so evaluation costs no Python call per `and`,
`or`, `not` or simple check (an operator with an inline form is written out), and fields are read inline: by their
extractor's inline form when it has one, else from the event's cache (agent.fields.GeneratedReads). The
generated text is kept on the function as `__falco_source__` for debugging (`dump_source`).
Conditions nested deeper than Python's parser allows fall back to closures (None is returned).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from agent.engine.ast import And, Check, Expr, Not, Or
from agent.event import Event
from agent.fields import GeneratedReads, binder, is_decimal_text

if TYPE_CHECKING:
    from agent.engine.compiler import CheckPlan

#: Python's parser refuses deeply nested parentheses; stay well below its limit.
MAX_GENERATED_DEPTH = 50


class Builder:
    """Writes conditions (and more: see condition_bodies) into one generated function: its namespace, its reads."""

    def __init__(self, plan: Callable[[Check], CheckPlan], *, held: Mapping[str, str] | None = None,
                 shared: Collection[str] = ()) -> None:
        self.plan = plan
        self.namespace, self.bind = binder("_k")
        self.reads = GeneratedReads(self.bind, held=held, shared=shared)
        #: The checks (ids of Check nodes) known to hold where the code runs: written as true, not tested.
        self.implied: frozenset[int] = frozenset()

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
            return "True" if id(node) in self.implied else self.check(self.plan(node))
        if isinstance(node, Not):
            return f"(not {self.expr(node.child, depth + 1)})"
        assert isinstance(node, (And, Or))
        parts = [self.expr(c, depth + 1) for c in node.children]
        if isinstance(node, And):
            parts = [part for part in parts if part != "True"] or ["True"]
        return "(" + (" and " if isinstance(node, And) else " or ").join(parts) + ")"

    def check(self, plan: CheckPlan) -> str:
        if plan.kind == "call":
            return f"{self.bind(plan.value)}(ev)"
        if plan.kind == "holds":
            return "True"
        if plan.kind == "eq" and (number := self._number_equal(plan)) is not None:
            return number
        value = self.value(plan)
        if plan.kind == "exists":
            return f"({value} is not None)"
        if plan.kind == "eq":
            return f"({value} == {self.bind(plan.value)})"
        if plan.kind == "in":
            return f"({value} in {self.bind(plan.value)})"
        var = f"_w{len(self.namespace)}"
        if plan.inline is None:
            return f"(({var} := {value}) is not None and {self.bind(plan.value)}({var}))"
        template, const = plan.inline
        return f"(({var} := {value}) is not None and {template.format(v=var, c=self.bind(const))})"

    def _number_equal(self, plan: CheckPlan) -> str | None:
        """`field = "N"` as a comparison of integers, for a field whose text is an integer's decimal form (Falco's
        "never true" is `jevt.rawtime=0`, met on every audit event): None when the field or the constant is not."""
        constant, extract = plan.value, plan.lhs.extract
        if extract is None or not isinstance(constant, str) or not is_decimal_text(constant):
            return None
        number = self.reads.decimal(extract)
        return None if number is None else f"({number} == {int(constant)})"


def generate_predicate(expr: Expr, plan: Callable[[Check], CheckPlan]) -> Callable[[Event], bool] | None:
    """A generated predicate for `expr`, or None when it nests too deeply to generate."""
    builder = Builder(plan)
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


#: A generated predicate's condition and how its checks compile (`generate_predicate`'s arguments).
Condition = tuple[Expr, Callable[[Check], Any]]


def condition_of(predicate: Callable[[Event], bool]) -> Condition | None:
    """What `predicate` was generated from, to write it again into another function; None when not generated."""
    condition: Condition | None = getattr(predicate, "__falco_condition__", None)
    return condition


def condition_bodies(conditions: Sequence[Condition], held: Mapping[str, str], shared: Collection[str],
                     implied: Sequence[frozenset[int]]) -> tuple[Builder, list[str]]:
    """The expressions of `conditions` in one function's builder (see GeneratedReads for `held` and `shared`), each
    with the checks `implied` gives for it written as true; the builder goes on to write more of that function."""
    builder = Builder(conditions[0][1], held=held, shared=shared)
    bodies = []
    for (expr, plan), known in zip(conditions, implied, strict=True):
        builder.plan, builder.implied = plan, known
        bodies.append(builder.expr(expr, 0))
    builder.implied = frozenset()
    return builder, bodies
