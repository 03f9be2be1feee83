"""Generates one Python function per condition from compiled check plans.

A condition becomes a single boolean expression, so evaluation costs no Python call per `and`,
`or`, `not` or simple check, and a field already in the event's cache is read inline. The
generated text is kept on the function as `__falco_source__` for debugging (`dump_source`).
Conditions nested deeper than Python's parser allows fall back to closures (None is returned).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.engine.ast import And, Check, Expr, Not, Or
from agent.event import Event
from agent.fields import CACHE_MISS, cached_read

if TYPE_CHECKING:
    from agent.engine.compiler import CheckPlan

#: Python's parser refuses deeply nested parentheses; stay well below its limit.
MAX_GENERATED_DEPTH = 50


class _Builder:
    def __init__(self, plan: Callable[[Check], CheckPlan]) -> None:
        self.plan = plan
        self.namespace: dict[str, Any] = {"_M": CACHE_MISS}
        self.count = 0

    def bind(self, value: Any) -> str:
        self.count += 1
        name = f"_k{self.count}"
        self.namespace[name] = value
        return name

    def value(self, plan: CheckPlan) -> str:
        """Expression reading the check's left-hand value, inline from the cache when cached."""
        lhs = plan.lhs
        if lhs.key is None or lhs.extract is None:
            return f"{self.bind(lhs.get)}(ev)"
        extract = self.bind(lhs.extract)
        return cached_read(f"_v{self.count}", lhs.key, extract)

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
        return f"(({var} := {value}) is not None and {self.bind(plan.value)}({var}))"


def generate_predicate(expr: Expr, plan: Callable[[Check], CheckPlan]) -> Callable[[Event], bool] | None:
    """A generated predicate for `expr`, or None when it nests too deeply to generate."""
    builder = _Builder(plan)
    try:
        body = builder.expr(expr, 0)
    except RecursionError:
        return None
    source = f"def predicate(ev):\n    _c = ev.cache\n    return {body}\n"
    exec(compile(source, "<condition>", "exec"), builder.namespace)
    function: Callable[[Event], bool] = builder.namespace["predicate"]
    function.__falco_source__ = source  # type: ignore[attr-defined]
    return function


def dump_source(predicate: Callable[[Event], bool]) -> str | None:
    """The generated text of a predicate, if it was generated."""
    return getattr(predicate, "__falco_source__", None)
