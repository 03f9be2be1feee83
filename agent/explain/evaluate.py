"""Evaluates a condition tree node by node on one event, recording each node's result and the field values its
checks read. Checks run through the source's own compiled check plans (ConditionCompiler.plan), so a check here is
the engine's check; the engine's compiled rules are never touched.

Every node is evaluated, also those the engine skips by short-circuit, so that a reader sees the whole picture;
each node's result still combines its children in order as the engine does: an extraction error in a child the
engine reaches makes the whole rule fail to match (the engine counts a rule error and goes on).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

from agent.engine.ast import And, Check, Expr, FieldRef, ListLit, MacroRef, Not, Operand, Or, StrLit, Transform
from agent.engine.compiler import CompileError, ConditionCompiler, Predicate
from agent.engine.output_format import EXTRACTION_ERRORS
from agent.event import Event
from agent.fields import FieldTable

#: Lists longer than this are shortened in a check's text.
MAX_LIST_ITEMS = 8


class NodeKind(StrEnum):
    AND = "and"
    OR = "or"
    NOT = "not"
    CHECK = "check"
    MACRO = "macro"


class Outcome(Enum):
    TRUE = "true"
    FALSE = "false"
    ERROR = "error"


@dataclass(slots=True)
class Node:
    """One evaluated node (a macro's has its `name`); `decisive` marks the child that decided its parent's
    result."""

    kind: NodeKind
    text: str
    outcome: Outcome
    children: list[Node] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    error: str = ""
    decisive: bool = False

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value, "result": self.outcome.value}
        if self.name:
            out["name"] = self.name
        if self.kind is NodeKind.CHECK:
            out["text"] = self.text
            out["values"] = {key: _jsonable(value) for key, value in self.values.items()}
        if self.error:
            out["error"] = self.error
        if self.decisive:
            out["decisive"] = True
        if self.children:
            out["children"] = [child.as_json() for child in self.children]
        return out


class TreeEvaluator:
    """Evaluates condition trees of one source; macros are looked up by name and shown as their own nodes."""

    def __init__(self, table: FieldTable, macros: dict[str, Expr]) -> None:
        self._compiler = ConditionCompiler(table)
        self._macros = macros
        self._checks: dict[Check, Predicate] = {}

    def evaluate(self, expr: Expr, event: Event) -> Node:
        if isinstance(expr, Check):
            return self._check(expr, event)
        if isinstance(expr, MacroRef):
            body = self._macros.get(expr.name)
            if body is None:
                return Node(NodeKind.MACRO, expr.name, Outcome.ERROR, name=expr.name, error="undefined macro")
            child = self.evaluate(body, event)
            return Node(NodeKind.MACRO, expr.name, child.outcome, [child], name=expr.name)
        if isinstance(expr, Not):
            child = self.evaluate(expr.child, event)
            negated = {Outcome.TRUE: Outcome.FALSE, Outcome.FALSE: Outcome.TRUE}.get(child.outcome, Outcome.ERROR)
            child.decisive = True
            return Node(NodeKind.NOT, "not", negated, [child])
        children = [self.evaluate(child, event) for child in expr.children]
        return _combine(NodeKind.AND if isinstance(expr, And) else NodeKind.OR, children)

    def _check(self, check: Check, event: Event) -> Node:
        text = check_text(check)
        try:
            plan = self._compiler.plan(check)
            predicate = self._checks.get(check)
            if predicate is None:
                predicate = self._checks[check] = plan.closure()
        except CompileError as exc:
            return Node(NodeKind.CHECK, text, Outcome.ERROR, error=exc.message)
        getters = [(operand_text(check.lhs), plan.lhs.get)]
        if isinstance(check.rhs, (FieldRef, Transform)):
            getters.append((operand_text(check.rhs), self._compiler.operand(check.rhs, on_rhs=True).get))
        values = {name: _read(get, event) for name, get in getters}
        try:
            outcome = Outcome.TRUE if predicate(event) else Outcome.FALSE
        except EXTRACTION_ERRORS as exc:
            return Node(NodeKind.CHECK, text, Outcome.ERROR, values=values, error=f"{type(exc).__name__}: {exc}")
        return Node(NodeKind.CHECK, text, outcome, values=values)


def _read(get: Callable[[Event], Any], event: Event) -> Any:
    """A value a check reads, or the error reading it raised (as text: the check's result says what it did)."""
    try:
        return get(event)
    except EXTRACTION_ERRORS as exc:
        return f"<{type(exc).__name__}: {exc}>"


def combine_in_order(kind: NodeKind, children: list[Node]) -> tuple[Outcome, int | None]:
    """The result of an and/or over evaluated children, as the engine's short-circuit evaluation reaches it, and
    the index of the deciding child (None when every child was needed to decide)."""
    stop = Outcome.FALSE if kind is NodeKind.AND else Outcome.TRUE
    for index, child in enumerate(children):
        if child.outcome is Outcome.ERROR:
            return Outcome.ERROR, index
        if child.outcome is stop:
            return stop, index
    return (Outcome.TRUE if kind is NodeKind.AND else Outcome.FALSE), None


def _combine(kind: NodeKind, children: list[Node]) -> Node:
    outcome, decided_by = combine_in_order(kind, children)
    if decided_by is not None:
        children[decided_by].decisive = True
    return Node(kind, kind, outcome, children)


def check_text(check: Check) -> str:
    """A check as it reads in a condition (long lists shortened)."""
    modifier = f" {check.modifier}" if check.modifier else ""
    rhs = "" if check.rhs is None else f" {operand_text(check.rhs)}"
    return f"{operand_text(check.lhs)} {check.op}{modifier}{rhs}"


def expr_text(expr: Expr) -> str:
    """A condition tree as text, parenthesised where it nests."""
    if isinstance(expr, Check):
        return check_text(expr)
    if isinstance(expr, MacroRef):
        return expr.name
    if isinstance(expr, Not):
        return f"not {_nested(expr.child)}"
    word = " and " if isinstance(expr, And) else " or "
    return word.join(_nested(child) for child in expr.children)


def _nested(expr: Expr) -> str:
    return f"({expr_text(expr)})" if isinstance(expr, (And, Or)) else expr_text(expr)


def operand_text(node: Operand) -> str:
    if isinstance(node, FieldRef):
        return str(node)
    if isinstance(node, StrLit):
        return f'"{node.value}"' if node.quoted or " " in node.value else node.value
    if isinstance(node, ListLit):
        shown = [operand_text(item) for item in node.items[:MAX_LIST_ITEMS]]
        more = len(node.items) - MAX_LIST_ITEMS
        return "(" + ", ".join(shown) + (f", ... {more} more" if more > 0 else "") + ")"
    args = ", ".join(operand_text(arg) for arg in node.args)
    return f"{node.name}({args})" + (f"[{node.arg}]" if node.arg else "")


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (tuple, list, set, frozenset)):
        return [_jsonable(item) for item in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def deciding_paths(node: Node, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Node]]:
    """The checks that decided `node`'s result, each with the and/or/not/macro nodes above it, following the
    deciding child down (every child when all were needed, as for an `and` that held)."""
    if node.kind is NodeKind.CHECK:
        return [(path, node)]
    here = (*path, f"macro {node.name}" if node.kind is NodeKind.MACRO else str(node.kind))
    decisive = [child for child in node.children if child.decisive]
    return [found for child in (decisive or node.children) for found in deciding_paths(child, here)]


def macros_true(node: Node) -> set[str]:
    """Names of the macros that evaluated to true anywhere in the tree."""
    found = {node.name} if node.kind is NodeKind.MACRO and node.outcome is Outcome.TRUE else set()
    for child in node.children:
        found |= macros_true(child)
    return found
