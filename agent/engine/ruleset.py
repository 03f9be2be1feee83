"""Compiled rules of one source, indexed by a pinned field so that an event meets only rules that can match.

For each rule the index field is the first of the source's `index_fields` whose possible values
the condition bounds to a finite set (`ka.verb in (create, update) and ...`). The analysis keeps
an over- and an under-approximation of the values for which the condition can be true, so
negations (`not evt.type in (...)`) are handled soundly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from agent.engine.ast import And, Check, Expr, FieldRef, ListLit, Not, Or, StrLit
from agent.engine.compiler import Predicate
from agent.engine.output_format import OutputFormat
from agent.event import Event
from agent.priority import Priority

#: Stands for "the field has no value" among the index values.
MISSING = None
_MEMO_LIMIT = 4096


@dataclass(slots=True, eq=False)
class CompiledRule:
    """A rule ready to run; compared by identity."""

    name: str
    priority: Priority
    source: str
    tags: tuple[str, ...]
    description: str
    predicate: Predicate
    output: OutputFormat
    index: int
    condition: Expr
    enabled: bool = True
    capture: bool = False


@dataclass(frozen=True, slots=True)
class ValueSet:
    """A finite set of values, or (when `cofinite`) everything except `values`."""

    values: frozenset[Any]
    cofinite: bool

    def union(self, other: ValueSet) -> ValueSet:
        if self.cofinite and other.cofinite:
            return ValueSet(self.values & other.values, True)
        if self.cofinite:
            return ValueSet(self.values - other.values, True)
        if other.cofinite:
            return ValueSet(other.values - self.values, True)
        return ValueSet(self.values | other.values, False)

    def intersection(self, other: ValueSet) -> ValueSet:
        if self.cofinite and other.cofinite:
            return ValueSet(self.values | other.values, True)
        if self.cofinite:
            return ValueSet(other.values - self.values, False)
        if other.cofinite:
            return ValueSet(self.values - other.values, False)
        return ValueSet(self.values & other.values, False)

    def complement(self) -> ValueSet:
        return ValueSet(self.values, not self.cofinite)


ALL = ValueSet(frozenset(), True)
NONE = ValueSet(frozenset(), False)


def possible_values(expr: Expr, field: str) -> ValueSet:
    """Over-approximation of the values of `field` for which `expr` can be true."""
    return _bounds(expr, field)[0]


def _bounds(expr: Expr, field: str) -> tuple[ValueSet, ValueSet]:
    """(over, under): values for which expr may be true / is surely true whatever else holds."""
    if isinstance(expr, Check):
        exact = _exact(expr, field)
        return (exact, exact) if exact is not None else (ALL, NONE)
    if isinstance(expr, Not):
        over, under = _bounds(expr.child, field)
        return under.complement(), over.complement()
    assert isinstance(expr, (And, Or))
    parts = [_bounds(c, field) for c in expr.children]
    over, under = parts[0]
    for o, u in parts[1:]:
        if isinstance(expr, And):
            over, under = over.intersection(o), under.intersection(u)
        else:
            over, under = over.union(o), under.union(u)
    return over, under


def _exact(check: Check, field: str) -> ValueSet | None:
    lhs = check.lhs
    if not isinstance(lhs, FieldRef) or lhs.name != field or lhs.arg is not None or check.modifier:
        return None
    rhs = check.rhs
    if check.op == "exists":
        return ValueSet(frozenset({MISSING}), True)
    if check.op in ("=", "==", "!=") and isinstance(rhs, StrLit):
        values = frozenset({rhs.value})
        return ValueSet(values, False) if check.op != "!=" else ValueSet(values | {MISSING}, True)
    if check.op in ("in", "intersects") and isinstance(rhs, ListLit) and all(
            isinstance(i, StrLit) for i in rhs.items):
        return ValueSet(frozenset(i.value for i in rhs.items if isinstance(i, StrLit)), False)
    return None


class Indexed(Protocol):
    """What the index needs of a rule (or of a correlation step): a name, an order and a condition."""

    name: str
    index: int
    condition: Expr


R = TypeVar("R", bound=Indexed)


class RuleSet(Generic[R]):
    """The enabled rules of one source in evaluation order, with the per-event candidate lookup.

    Each rule keeps, per index field, the values of that field for which it can match. An event's
    index values select the rules that admit all of them; the selection is memoised per distinct
    combination of index values, so the per-event cost is one tuple build and one dict lookup.
    """

    def __init__(self, rules: list[R], index_getters: dict[str, Callable[[Event], Any]]) -> None:
        self.rules = sorted(rules, key=lambda r: r.index)
        self._getters = tuple(index_getters.values())
        self._names = tuple(index_getters)
        self._admits = [(rule, tuple(possible_values(rule.condition, f) for f in index_getters)) for rule in self.rules]
        #: Per rule, the index fields that narrow it down (empty: evaluated on every event).
        self.narrowed_by = {
            rule.name: tuple(f for f, v in zip(index_getters, sets, strict=True) if v != ALL)
            for rule, sets in self._admits
        }
        self._memo: dict[tuple[Any, ...], tuple[R, ...]] = {}

    def index_values(self, field: str, *, among: Callable[[R], bool] | None = None) -> frozenset[Any] | None:
        """The values of index field `field` some rule here (of those `among` selects) can match; None when a
        rule admits any value.

        A source uses it to capture only what the rules can use (the kernel attaches only the
        syscalls in the `evt.type` values)."""
        position = list(self._names).index(field)
        admitted = ValueSet(frozenset(), False)
        for rule, sets in self._admits:
            if among is None or among(rule):
                admitted = admitted.union(sets[position])
        return None if admitted.cofinite else frozenset(v for v in admitted.values if v is not MISSING)

    def candidates(self, event: Event) -> tuple[R, ...]:
        """Rules that can match this event, in evaluation order."""
        return self.candidates_for(self.index_key(event))

    def index_key(self, event: Event) -> tuple[Any, ...]:
        """The event's index values: equal for every rule set built on the same source's index fields."""
        return tuple([get(event) for get in self._getters])

    def candidates_for(self, key: tuple[Any, ...]) -> tuple[R, ...]:
        """Rules that can match an event with these index values, in evaluation order."""
        found = self._memo.get(key)
        if found is None:
            values = [MISSING if isinstance(v, tuple) else v for v in key]
            found = tuple(rule for rule, sets in self._admits if all(
                _admits(s, v) for s, v in zip(sets, values, strict=True)))
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[key] = found
        return found


def _admits(values: ValueSet, value: Any) -> bool:
    return (value not in values.values) if values.cofinite else (value in values.values)
