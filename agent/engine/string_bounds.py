"""What a condition says about one string field, soundly: the values it can be true for, as exact strings,
prefixes and suffixes, the exact values it is surely false for, and the facts it needs.

The engine uses the bounds to skip rules whose guard field cannot match an event (`fd.name` of an open of
/etc/hostname against rules on /etc/shadow); a source can use them to decide earlier still (the kernel probe
keeps such opens in the kernel). Both analyses are over-approximations: a rule is skipped only when no value
outside the bound could make it true. A negation says nothing (`not fd.name startswith /etc` is bounded by
nothing a prefix can express), nor does a transformer, a modifier or a comparison with another field. What a
negation does say is which exact values surely make the condition false: `not proc.name in (rkhunter)` refuses
rkhunter, however the rest of the condition turns out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.engine.ast import And, Check, Expr, FieldRef, ListLit, Not, Or, StrLit

#: The checks that pin a string to one of some values, or to start with one of them.
EXACT_OPS = frozenset({"=", "==", "in"})
#: `pmatch` is not among them: it matches path components (`/etc/` matches the value `/etc`), not text.
PREFIX_OPS = frozenset({"startswith"})
SUFFIX_OPS = frozenset({"endswith"})
#: The characters that make a glob pattern (and a `pmatch` entry) more than literal text.
GLOB_SPECIALS = "*?[\\"


@dataclass(frozen=True, slots=True)
class StringBound:
    """The values a field can have: one of `exact`, or starting with one of `prefixes`, or ending with one of
    `suffixes`."""

    exact: frozenset[str]
    prefixes: frozenset[str]
    suffixes: frozenset[str] = frozenset()

    def union(self, other: StringBound) -> StringBound:
        return StringBound(self.exact | other.exact, self.prefixes | other.prefixes, self.suffixes | other.suffixes)

    def intersection(self, other: StringBound) -> StringBound:
        """Sound, not exact: a value starting with p and ending with s is kept as "starts with p"."""
        exact = {v for v in self.exact if other.admits(v)} | {v for v in other.exact if self.admits(v)}
        prefixes = {_longer(p, q) for p in self.prefixes for q in other.prefixes if _nested(p, q, str.startswith)}
        prefixes |= {p for p in self.prefixes if other.suffixes} | {q for q in other.prefixes if self.suffixes}
        suffixes = {_longer(s, t) for s in self.suffixes for t in other.suffixes if _nested(s, t, str.endswith)}
        return StringBound(frozenset(exact), frozenset(prefixes), frozenset(suffixes))

    def admits(self, value: str) -> bool:
        return (value in self.exact or any(value.startswith(p) for p in self.prefixes)
                or any(value.endswith(s) for s in self.suffixes))

    def is_empty(self) -> bool:
        return not self.exact and not self.prefixes and not self.suffixes


def _nested(a: str, b: str, extends: Callable[[str, str], bool]) -> bool:
    return extends(a, b) or extends(b, a)


def _longer(a: str, b: str) -> str:
    return a if len(a) >= len(b) else b


#: What one check implies about the target field: (field name, field argument, operator, literal values) to a
#: bound, or None when the check does not bound the target.
AtomBound = Callable[[str, "str | None", str, tuple[str, ...]], "StringBound | None"]
#: What one check decides of the target's exact values: those for which it is surely true, and those for which it is
#: surely false, whatever the other fields hold.
AtomValues = Callable[[str, "str | None", str, tuple[str, ...]], "tuple[frozenset[str], frozenset[str]]"]
#: What one check implies as named facts (say, "the open reads"): the same arguments to the facts it needs.
AtomFacts = Callable[[str, "str | None", str, tuple[str, ...]], frozenset[str]]


def literals(check: Check) -> tuple[str, ...] | None:
    """The constants a plain check compares its field with; None for a transformer, a modifier, a comparison
    with a field or `exists`."""
    if not isinstance(check.lhs, FieldRef) or check.modifier or check.rhs is None:
        return None
    rhs = check.rhs
    if isinstance(rhs, StrLit):
        return (rhs.value,)
    if isinstance(rhs, ListLit) and all(isinstance(item, StrLit) for item in rhs.items):
        return tuple(item.value for item in rhs.items if isinstance(item, StrLit))
    return None


def literal_bound(op: str, values: tuple[str, ...]) -> StringBound | None:
    """The bound a check `FIELD op values` puts on FIELD itself; None when it puts none."""
    if op in EXACT_OPS:
        return StringBound(frozenset(values), frozenset())
    if op in PREFIX_OPS:
        return None if "" in values else StringBound(frozenset(), frozenset(values))
    if op in SUFFIX_OPS:
        return None if "" in values else StringBound(frozenset(), frozenset(), frozenset(values))
    if op == "glob" and len(values) == 1:
        pattern = values[0]
        cut = min((i for i, c in enumerate(pattern) if c in GLOB_SPECIALS), default=len(pattern))
        if cut == len(pattern):
            return StringBound(frozenset({pattern}), frozenset())
        return StringBound(frozenset(), frozenset({pattern[:cut]})) if cut else None
    return None


def field_atom(field: str) -> AtomBound:
    """The atom bounding `field` by its own checks."""
    def atom(name: str, arg: str | None, op: str, values: tuple[str, ...]) -> StringBound | None:
        return literal_bound(op, values) if name == field and arg is None else None
    return atom


def string_bound(expr: Expr, atom: AtomBound) -> StringBound | None:
    """An over-approximation of the target's values for which `expr` can be true; None: any value."""
    if isinstance(expr, Check):
        values = literals(expr)
        if values is None:
            return None
        assert isinstance(expr.lhs, FieldRef)
        return atom(expr.lhs.name, expr.lhs.arg, expr.op, values)
    if isinstance(expr, And):
        bounds = [b for b in (string_bound(c, atom) for c in expr.children) if b is not None]
        if not bounds:
            return None
        found = bounds[0]
        for bound in bounds[1:]:
            found = found.intersection(bound)
        return found
    if isinstance(expr, Or):
        union = StringBound(frozenset(), frozenset())
        for child in expr.children:
            part = string_bound(child, atom)
            if part is None:
                return None
            union = union.union(part)
        return union
    return None  # Not, and a macro left unexpanded


def necessary_facts(expr: Expr, atom: AtomFacts) -> frozenset[str]:
    """The facts every way of making `expr` true needs (an under-approximation: a fact named is surely needed)."""
    if isinstance(expr, Check):
        values = literals(expr)
        if values is None:
            return frozenset()
        assert isinstance(expr.lhs, FieldRef)
        return atom(expr.lhs.name, expr.lhs.arg, expr.op, values)
    if isinstance(expr, And):
        return frozenset().union(*(necessary_facts(c, atom) for c in expr.children))
    if isinstance(expr, Or):
        found = [necessary_facts(c, atom) for c in expr.children]
        return frozenset.intersection(*found) if found else frozenset()
    return frozenset()



_NOTHING: frozenset[str] = frozenset()


def exact_values_atom(field: str) -> AtomValues:
    """The atom deciding `field` by its own equality checks: `F in (a, b)` is surely true for a and b, `F != a`
    surely false for a."""
    def atom(name: str, arg: str | None, op: str, values: tuple[str, ...]) -> tuple[frozenset[str], frozenset[str]]:
        if name != field or arg is not None:
            return _NOTHING, _NOTHING
        if op in EXACT_OPS:
            return frozenset(values), _NOTHING
        if op == "!=":
            return _NOTHING, frozenset(values)
        return _NOTHING, _NOTHING
    return atom


def refused_values(expr: Expr, atom: AtomValues) -> frozenset[str]:
    """Exact values of the target for which `expr` is surely false (an under-approximation)."""
    return _decided(expr, atom)[1]


def _decided(expr: Expr, atom: AtomValues) -> tuple[frozenset[str], frozenset[str]]:
    """(values for which `expr` is surely true, values for which it is surely false)."""
    if isinstance(expr, Check):
        values = literals(expr)
        if values is None:
            return _NOTHING, _NOTHING
        assert isinstance(expr.lhs, FieldRef)
        return atom(expr.lhs.name, expr.lhs.arg, expr.op, values)
    if isinstance(expr, Not):
        true, false = _decided(expr.child, atom)
        return false, true
    if isinstance(expr, And | Or):
        parts = [_decided(child, atom) for child in expr.children]
        trues = [true for true, _false in parts]
        falses = [false for _true, false in parts]
        if isinstance(expr, And):  # one conjunct surely false is enough; surely true needs them all
            return frozenset.intersection(*trues), frozenset().union(*falses)
        return frozenset().union(*trues), frozenset.intersection(*falses)
    return _NOTHING, _NOTHING  # a macro left unexpanded
