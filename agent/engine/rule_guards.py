"""Guards: what a rule's condition allows of a source's guard fields, checked before the condition itself.

A guard field is a scalar text field with too many values to index (`fd.name`, `ka.user.name`). For each such
field a rule's condition bounds (agent.engine.string_bounds: exact values, prefixes, suffixes), the rule gets a
`Guard`; an event whose value the guard refuses cannot make the condition true, so the engine skips the rule
without evaluating it. A check on a part of a path field (its directory, its file name) bounds the path too:
`fd.directory in (/etc/pam.d)` allows only `fd.name` /etc/pam.d and /etc/pam.d/...

A guard also refuses the exact values for which the condition is surely false, as exceptions spell them: `not
proc.name in (rkhunter)` skips the rule for rkhunter's events, whatever else the rule would look at.

A missing value (None) is refused when the rule bounds the field or needs text of it: every such check is false
without a value (a refusal alone admits it: `not proc.name in (...)` is true then). A value that is not text is
admitted, as the checks may compare it in ways a text bound does not describe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.engine.ast import Check, Expr, FieldRef, walk
from agent.engine.string_bounds import (
    AtomBound,
    AtomFacts,
    AtomValues,
    StringBound,
    exact_values_atom,
    literal_bound,
    necessary_facts,
    refused_values,
    string_bound,
)
from agent.source import PathParts, SourceSpec


@dataclass(frozen=True, slots=True)
class Guard:
    """The values of one guard field (by its position among the rule set's guard fields) a rule admits."""

    position: int
    #: False: the condition bounds no value of the field, only what it must contain.
    bounded: bool
    exact: frozenset[str]
    prefixes: tuple[str, ...]
    suffixes: tuple[str, ...]
    #: Texts every way of making the condition true needs the value to contain (`fd.nameraw contains "../"`).
    needs: tuple[str, ...]
    #: Values for which the condition is surely false (`not proc.name in (rkhunter)`).
    refused: frozenset[str] = frozenset()

    def admits(self, value: Any) -> bool:
        if value.__class__ is not str:
            return value is not None or not (self.bounded or self.needs)
        if value in self.refused:
            return False
        for part in self.needs:
            if part not in value:
                return False
        return not self.bounded or (value in self.exact or value.startswith(self.prefixes)
                                    or value.endswith(self.suffixes))


def _directory_bound(bound: StringBound) -> StringBound | None:
    """What a bound on a path's directory says of the path. The directory is the path before its last slash, the
    path itself when it ends with a slash or names a directory, and `/` for a path with no slash past the first
    character: a bound admitting `/` says nothing."""
    if bound.suffixes or any(value in ("", "/") for value in bound.exact) or any(
            "/".startswith(prefix) for prefix in bound.prefixes):
        return None
    return StringBound(bound.exact, bound.prefixes | {value + "/" for value in bound.exact})


def _filename_bound(bound: StringBound) -> StringBound | None:
    """What a bound on a path's file name says of the path. The file name is what follows the path's last slash,
    the path itself when it ends with a slash, and `/` for a path with no slash: a bound admitting `/` says
    nothing, and a prefix of the name is no prefix of the path."""
    if bound.prefixes or any("/".endswith(value) for value in bound.exact | bound.suffixes):
        return None
    return StringBound(frozenset(value for value in bound.exact if "/" in value), frozenset(), bound.suffixes | {
        "/" + value for value in bound.exact if "/" not in value})


@dataclass(frozen=True, slots=True)
class GuardField:
    """How checks bound one guard field: the fields whose checks can (the field and its path parts), the atom of
    their bounds, the atom of the text they need it to contain and the atom of the values they decide."""

    names: frozenset[str]
    bound: AtomBound
    needs: AtomFacts
    values: AtomValues


def guard_field(field: str, parts: tuple[PathParts, ...]) -> GuardField:
    """`field` as a guard: bounded by its own checks and by those of its directory or file name."""
    directories = {p.directory for p in parts if p.path == field and p.directory}
    filenames = {p.filename for p in parts if p.path == field and p.filename}

    def bound_atom(name: str, arg: str | None, op: str, values: tuple[str, ...]) -> StringBound | None:
        if arg is not None:
            return None
        if name == field:
            return literal_bound(op, values)
        bound = literal_bound(op, values) if name in directories or name in filenames else None
        if bound is None:
            return None
        return _directory_bound(bound) if name in directories else _filename_bound(bound)

    def needs_atom(name: str, arg: str | None, op: str, values: tuple[str, ...]) -> frozenset[str]:
        if name != field or arg is not None or op != "contains" or len(values) != 1 or not values[0]:
            return frozenset()
        return frozenset(values)

    return GuardField(frozenset({field} | directories | filenames), bound_atom, needs_atom, exact_values_atom(field))


def check_guard_fields(spec: SourceSpec) -> None:
    """ValueError naming a guard field (or path part) of `spec` that is not a scalar text field compared as text."""
    parts = [name for p in spec.guard_paths for name in (p.path, p.directory, p.filename) if name]
    for name in (*spec.guard_fields, *parts):
        resolved = spec.fields.resolve(name, None)
        field = resolved[0] if resolved is not None else None
        if field is None or field.is_list or field.type.kind != "string" or field.comparator is not None:
            raise ValueError(f"source '{spec.name}': guard field '{name}' is not a scalar text field of the source")


def guards_of(condition: Expr, fields: tuple[GuardField, ...]) -> tuple[Guard, ...]:
    """One guard per guard field (in order) that `condition` bounds or needs text of."""
    named = {node.lhs.name for node in walk(condition) if isinstance(node, Check) and isinstance(node.lhs, FieldRef)}
    found = []
    for position, field in enumerate(fields):
        if named.isdisjoint(field.names):
            continue  # the analyses walk the whole condition: skip those that cannot find anything
        bound = string_bound(condition, field.bound)
        needs = tuple(sorted(necessary_facts(condition, field.needs)))
        refused = refused_values(condition, field.values)
        if bound is not None or needs or refused:
            found.append(Guard(position, bound is not None, bound.exact if bound else frozenset(),
                               tuple(sorted(bound.prefixes)) if bound else (),
                               tuple(sorted(bound.suffixes)) if bound else (), needs, refused))
    return tuple(found)
