"""Compiled rules of one source, indexed by a pinned field so that an event meets only rules that can match.

For each rule the index field is the first of the source's `index_fields` whose possible values
the condition bounds to a finite set (`ka.verb in (create, update) and ...`). The analysis keeps
an over- and an under-approximation of the values for which the condition can be true, so
negations (`not evt.type in (...)`) are handled soundly. Guard fields then narrow the candidates further by
values no index could hold (agent.engine.rule_guards).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from agent.engine.ast import And, Check, Expr, FieldRef, ListLit, Not, Or, StrLit
from agent.engine.compiler import Predicate
from agent.engine.output_format import EXTRACTION_ERRORS, OutputFormat
from agent.engine.rule_guards import Guard, GuardField, guard_field, guards_of
from agent.event import Event
from agent.fields import FieldFlag, GeneratedReads, binder, cache_parts, decimal_form, is_decimal_text
from agent.priority import Priority
from agent.source import SourceSpec

#: Stands for "the field has no value" among the index values.
MISSING = None
#: Stands, among the index values, for every value of a decimal field (RuleSet `decimals`) that no rule names.
UNNAMED = object()
_MEMO_LIMIT = 4096
#: Values of its guard field remembered per narrowing: paths are many, and each entry holds its string.
_GUARD_MEMO_LIMIT = 512


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

    def admits(self, value: Any) -> bool:
        return (value not in self.values) if self.cofinite else (value in self.values)


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


def _truth(expr: Expr, always: frozenset[str]) -> bool | None:
    """Whether `expr` holds on every event (True), on none (False), or depends on the event (None), knowing only
    that the fields `always` names have a value on every event: Falco's rules files write an "always true" macro so
    (`jevt.rawtime exists`), and negate it to turn a rule or an exception off."""
    if isinstance(expr, Check):
        lhs = expr.lhs
        known = expr.op == "exists" and isinstance(lhs, FieldRef) and lhs.arg is None and lhs.name in always
        return True if known and not expr.modifier else None
    if isinstance(expr, Not):
        child = _truth(expr.child, always)
        return None if child is None else not child
    assert isinstance(expr, (And, Or))
    parts = [_truth(c, always) for c in expr.children]
    decisive = isinstance(expr, Or)  # the value that decides an `or` (True) or an `and` (False) alone
    if decisive in parts:
        return decisive
    return (not decisive) if all(p is not None for p in parts) else None


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


#: The operators of checks an index can imply: those whose values `_exact` gives exactly.
_IMPLIED_OPS = frozenset({"=", "==", "in", "exists"})


def _conjuncts(expr: Expr) -> list[Check]:
    """The checks `expr` is the conjunction of (through `and` alone)."""
    if isinstance(expr, Check):
        return [expr]
    if isinstance(expr, And):
        return [check for child in expr.children for check in _conjuncts(child)]
    return []


class Indexed(Protocol):
    """What the index needs of a rule (or of a correlation step): a name, an order and a condition."""

    name: str
    index: int
    condition: Expr


R = TypeVar("R", bound=Indexed)


Getter = Callable[[Event], Any]


@dataclass(slots=True)
class Narrowing(Generic[R]):
    """The rules still possible for an event, and the guard field asked next: the first (in the source's order) that
    one of them bounds, or none (`position` -1: `rules` are the candidates). Its answers are memoised per value of
    that field, each an equal or smaller narrowing."""

    rules: tuple[R, ...]
    #: Each rule with its guards not asked yet.
    guarded: tuple[tuple[R, tuple[Guard, ...]], ...]
    #: The guard field asked next, by its position among the source's guard fields.
    position: int
    by_value: dict[Any, Narrowing[R]]
    #: How the engine evaluates `rules` once the narrowing is in use (agent.engine.evaluator.generate_evaluator), and
    #: how many events it met before.
    evaluator: Any = None
    uses: int = 0


class RuleSet(Generic[R]):
    """The enabled rules of one source in evaluation order, with the per-event candidate lookup.

    Each rule keeps, per index field, the values of that field for which it can match, and per guard field it
    bounds, a Guard (agent.engine.rule_guards). An event's index values select the rules that admit all of them;
    its guard fields, one at a time in the source's order, then drop the rules whose guards refuse their value, and
    a field is extracted only while some rule left is guarded by it: an open of a file no rule names costs one
    `fd.name`. Every step is memoised (per distinct index values, then per value of each guard field), so an event
    costs a dict lookup per step plus the reads, generated like the conditions' (inline, or through the event's
    cache, where the conditions evaluated next find the value).
    """

    def __init__(self, rules: list[R], index_getters: dict[str, Getter],
                 guard_getters: dict[str, tuple[Getter, GuardField]] | None = None,
                 always: frozenset[str] = frozenset(), decimals: dict[str, Getter] | None = None) -> None:
        """`guard_getters` maps each guard field to its getter and to how checks bound it; `always` names the fields
        every event has (a rule whose condition cannot hold with them is never a candidate); `decimals` maps fields
        whose text is always an integer's decimal form (InlineRead.decimal: an event's time) to their getters.

        A decimal field some rule bounds joins the index after the index fields, read as its integer: a value some
        rule names is the key's text of it, and every other value one and the same key part (UNNAMED), so that
        Falco's "never true" (`jevt.rawtime=0`) keeps a rule from every event but those of that time, with neither
        the text of each event's time nor a memo entry per time."""
        guard_getters = guard_getters or {}
        self.rules = sorted(rules, key=lambda r: r.index)
        #: The rules no event can match, left out of every candidate set.
        self.never = tuple(rule for rule in self.rules if _truth(rule.condition, always) is False)
        self._getters = tuple(index_getters.values())
        #: The decimal fields in the index: each with its getter and the integers whose text some rule names.
        self._pins = self._pinned(decimals or {})
        fields = (*index_getters, *self._pins)
        #: The event's index values: equal for every rule set built on the same source's index fields (one
        #: generated function reading them inline from the event's cache); the decimal fields' parts follow them.
        #: The cache key of each index field (None: not cached), telling generated evaluators which fields the index
        #: key gives them.
        self.index_cache_keys = (*(parts[0] if (parts := cache_parts(get)) else None for get in self._getters),
                                 *(None,) * len(self._pins))
        self._names = fields
        #: Per rule that may match (by identity, in evaluation order), the values of each index field it admits.
        self._admits = {id(rule): (rule, tuple(possible_values(rule.condition, f) for f in fields))
                        for rule in self.rules if rule not in self.never}
        #: Per rule, the index fields that narrow it down (empty: evaluated on every event).
        self.narrowed_by = {
            rule.name: tuple(f for f, v in zip(fields, sets, strict=True) if v != ALL)
            for rule, sets in self._admits.values()
        }
        guards = tuple(guard for _getter, guard in guard_getters.values())
        self._guards = {id(rule): guards_of(rule.condition, guards) for rule in self.rules}
        guard_names = tuple(guard_getters)
        #: Per rule, the guard fields checked before its condition.
        self.guarded_by = {rule.name: tuple(guard_names[g.position] for g in self._guards[id(rule)])
                           for rule in self.rules}
        self._memo: dict[tuple[Any, ...], Narrowing[R]] = {}
        #: The narrowings made, by the rules and guards they hold: events that leave the same rules share one.
        self._narrowings: dict[tuple[tuple[int, tuple[Guard, ...]], ...], Narrowing[R]] = {}
        #: `narrow(event)` gives the event's index values (its key) and the narrowing whose `rules` can match it;
        #: `narrow(event, key)` the same for an event whose key is already known.
        self._guard_getters = [getter for getter, _guard in guard_getters.values()]
        self.narrow: Callable[..., tuple[tuple[Any, ...], Narrowing[R]]] = self._narrow_function()

    @classmethod
    def of_source(cls, rules: list[R], spec: SourceSpec) -> RuleSet[R]:
        """The rule set of `spec`'s rules, indexed and guarded by the fields the source names."""
        getters = {name: get for name in spec.index_fields if (get := _getter(spec, name)) is not None}
        guards = {name: (get, guard_field(name, spec.guard_paths))
                  for name in spec.guard_fields if (get := _getter(spec, name)) is not None}
        always = frozenset(f.name for f in spec.fields if FieldFlag.ALWAYS in f.flags)
        decimals = {name: get for name in sorted(always)
                    if (get := _getter(spec, name)) is not None and decimal_form(get) is not None}
        return cls(rules, getters, guards, always, decimals)

    def _pinned(self, decimals: dict[str, Getter]) -> dict[str, tuple[Getter, frozenset[int]]]:
        """The decimal fields some rule bounds, each with its getter and the integers of the decimal texts any rule
        names: an event whose value is none of them meets, in every rule's bounds, what any other such value meets.
        A named text that is no integer's decimal form (`07`) is no value the field can have."""
        pinned = {}
        for name, get in decimals.items():
            bounds = [possible_values(rule.condition, name) for rule in self.rules if rule not in self.never]
            if all(bound.cofinite and bound.values <= {MISSING} for bound in bounds):
                continue  # no rule bounds it (or only with `exists`, true of every value)
            named = frozenset(int(v) for bound in bounds for v in bound.values
                              if v is not MISSING and is_decimal_text(v))
            pinned[name] = (get, named)
        return pinned

    def index_values(self, field: str, *, among: Callable[[R], bool] | None = None) -> frozenset[Any] | None:
        """The values of index field `field` some rule here (of those `among` selects) can match; None when a
        rule admits any value.

        A source uses it to capture only what the rules can use (the kernel attaches only the
        syscalls in the `evt.type` values)."""
        position = list(self._names).index(field)
        admitted = ValueSet(frozenset(), False)
        for rule, sets in self._admits.values():
            if among is None or among(rule):
                admitted = admitted.union(sets[position])
        return None if admitted.cofinite else frozenset(v for v in admitted.values if v is not MISSING)

    def implied(self, rule: R) -> frozenset[int]:
        """The checks of `rule`'s condition (ids of its Check nodes) that hold on every event the rule is a candidate
        for: conjuncts of the whole condition on an index field, surely true for every value of the field the index
        admits for the rule (`ka.verb=create` in a rule only creates meet). An evaluator need not test them."""
        _rule, sets = self._admits.get(id(rule), (rule, ()))
        admitted = dict(zip(self._names, sets, strict=False))
        implied = set()
        for check in _conjuncts(rule.condition):
            if check.op not in _IMPLIED_OPS or check.modifier or not isinstance(check.lhs, FieldRef):
                continue
            values = admitted.get(check.lhs.name)
            if values is None or values.cofinite or not values.values:
                continue
            surely = _bounds(check, check.lhs.name)[1]
            if all(surely.admits(value) for value in values.values):
                implied.add(id(check))
        return frozenset(implied)

    def candidates(self, event: Event) -> tuple[R, ...]:
        """Rules that can match this event, in evaluation order."""
        return self.narrow(event)[1].rules

    def _narrow_function(self) -> Callable[..., tuple[tuple[Any, ...], Narrowing[R]]]:
        """The generated `narrow` (see `narrowing_text`)."""
        namespace, bind = binder("_n")
        lines = ["def narrow(ev, key=None):", *(f"    {line}" for line in self.narrowing_text(bind, key_given=True)),
                 "    return key, node"]
        exec(compile("\n".join(lines), "<narrow>", "exec"), namespace)
        narrow: Callable[..., tuple[tuple[Any, ...], Narrowing[R]]] = namespace["narrow"]
        return narrow

    def narrowing_text(self, bind: Callable[[Any], str], *, key_given: bool = False) -> list[str]:
        """Statements of generated code that leave in `key` the index key of the event `ev` and in `node` its narrowing
        (what `narrow` returns), the objects they use bound with `bind`: the body of `narrow`, and of the engine's
        function per event. With `key_given` they read the index fields only when `key` is None.

        The index fields are read as the conditions read them, then the memoised narrowing of their values is looked
        up, then its guard fields one at a time, each read inline, while a rule left is guarded by one. A guard field
        whose extraction fails leaves the rules it guards: their conditions meet the same error and count it. A value
        that is not hashable (not text) is judged, not memoised."""
        reads = GeneratedReads(bind)
        errors, memo, selection = bind(EXTRACTION_ERRORS), bind(self._memo), bind(self._selection)
        answer, kept = bind(self._answer), bind(self._kept)
        key = "".join(f"{reads.read_getter(get)}, " for get in self._getters)
        pins = "".join(f"{self._pin_read(reads, get, named, position, bind)}, "
                       for position, (get, named) in enumerate(self._pins.values()))
        guards = [reads.read_getter(get) for get in self._guard_getters]
        # The last guard field is read without a test of its position (a source with one reads it straight).
        value = guards[-1] if guards else "None"
        for position, read in reversed(list(enumerate(guards[:-1]))):
            value = f"{read} if position == {position} else {value}"
        # A key given is another rule set's of the same source: the same index fields, its own decimal fields.
        own = f"key = ({key}{pins})"
        given = f"key[:{len(self._getters)}] + ({pins})" if pins else f"key[:{len(self._getters)}]"
        compute = ["if key is None:", f"    {own}", "else:", f"    key = {given}"] if key_given else [own]
        return [*reads.prologue(), *compute,
                # A subscript costs less than a call of `get`; a key met the first time is rare.
                "try:", f"    node = {memo}[key]", "except KeyError:", f"    node = {selection}(key)",
                "position = node.position",
                "while position >= 0:",
                "    try:", f"        value = {value}",
                f"    except {errors}:", "        break",
                "    try:", "        node = node.by_value[value]",
                "    except KeyError:", f"        node = {kept}(node, value)",
                "    except TypeError:", f"        node = {answer}(node, value)",
                "    position = node.position"]

    @staticmethod
    def _pin_read(reads: GeneratedReads, get: Getter, named: frozenset[int], position: int,
                  bind: Callable[[Any], str]) -> str:
        """Expression for the key part of the decimal field `get` reads: its text when some rule names it (made only
        then), else UNNAMED. One named value (Falco's `0`) costs a comparison, no lookup."""
        number = reads.decimal(get)
        assert number is not None, "a decimal field declares its integer (InlineRead.decimal)"
        if len(named) == 1:
            (only,) = named
            return f"({bind(str(only))} if {number} == {only} else {bind(UNNAMED)})"
        local = f"_pin{position}"
        return f"(str({local}) if ({local} := {number}) in {bind(named)} else {bind(UNNAMED)})"

    def _kept(self, node: Narrowing[R], value: Any) -> Narrowing[R]:
        """`_answer`, memoised on `node`."""
        found = self._answer(node, value)
        if len(node.by_value) >= _GUARD_MEMO_LIMIT:
            node.by_value.clear()
        node.by_value[value] = found
        return found

    def _selection(self, key: tuple[Any, ...]) -> Narrowing[R]:
        found = self._memo.get(key)
        if found is None:
            values = [MISSING if isinstance(v, tuple) else v for v in key]
            found = self._narrowing(tuple((rule, self._guards[id(rule)]) for rule, sets in self._admits.values() if all(
                s.admits(v) for s, v in zip(sets, values, strict=True))))
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
                self._narrowings.clear()
            self._memo[key] = found
        return found

    def _narrowing(self, guarded: tuple[tuple[R, tuple[Guard, ...]], ...]) -> Narrowing[R]:
        identity = tuple((id(rule), guards) for rule, guards in guarded)
        found = self._narrowings.get(identity)
        if found is None:
            if len(self._narrowings) >= _MEMO_LIMIT:
                self._narrowings.clear()
            position = min((g.position for _rule, guards in guarded for g in guards), default=-1)
            found = Narrowing(tuple(rule for rule, _guards in guarded), guarded, position, {})
            self._narrowings[identity] = found
        return found

    def _answer(self, node: Narrowing[R], value: Any) -> Narrowing[R]:
        """What is left of `node` once its guard field has `value`."""
        kept = []
        for rule, guards in node.guarded:
            asked = [g for g in guards if g.position == node.position]
            if all(g.admits(value) for g in asked):
                kept.append((rule, tuple(g for g in guards if g.position != node.position)))
        return self._narrowing(tuple(kept))


def _getter(spec: SourceSpec, name: str) -> Getter | None:
    """The extractor of field `name` of `spec` (without an argument); None when the source lacks it."""
    resolved = spec.fields.resolve(name, None)
    return resolved[0].bind(None) if resolved is not None else None
