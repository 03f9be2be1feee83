"""Compile `AlertFilter` allow and deny lists into one predicate, once per subscription.

The predicate takes the four alert attributes filters look at, so the same compiled filter serves
live alerts (the agent's `Alert`) and spooled ones (a parsed wire `Alert`):
`matches(priority, source, rule, tags)` with `priority` in Falco's numbering (0 = EMERGENCY).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence

from agent.grpc._gen.falco_agent.v1 import alerts_pb2 as pb

__all__ = ["MAX_FILTERS", "MAX_GLOBS", "MAX_GLOB_LENGTH", "MAX_VALUES", "AlertPredicate", "FilterError",
           "compile_filter", "compile_selection", "match_all"]

AlertPredicate = Callable[[int, str, str, Sequence[str]], bool]
_GLOB_CHARS = frozenset("*?[")
_MAX_PRIORITY = max(pb.Priority.values())
# What one request may ask for. Every filter is checked against every alert on the engine's thread, and rule globs
# compile to one regular expression tried in turn: 100,000 globs took 14 s and 400 MB to compile, then 150 ms per
# alert. Within these limits the worst request compiles in 0.2 s and costs under 0.1 ms per alert.
MAX_FILTERS = 100  # in each of allow_list and deny_list
MAX_VALUES = 10_000  # sources, rules and tags in all the filters
MAX_GLOBS = 100  # rule globs in all the filters
MAX_GLOB_LENGTH = 256  # characters of one rule glob


class FilterError(ValueError):
    """A filter the server cannot compile; reported to the client as INVALID_ARGUMENT."""


def match_all(priority: int, source: str, rule: str, tags: Sequence[str]) -> bool:
    return True


def _rule_matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    exact = frozenset(p for p in patterns if not _GLOB_CHARS.intersection(p))
    globs = [p for p in patterns if _GLOB_CHARS.intersection(p)]
    if not globs:
        return exact.__contains__
    try:
        regex = re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))
    except re.error as exc:
        raise FilterError(f"invalid rule glob in {globs!r}: {exc}") from None
    full = regex.match

    def matches(rule: str) -> bool:
        return rule in exact or full(rule) is not None

    return matches


def compile_filter(spec: pb.AlertFilter) -> AlertPredicate:
    """One filter: every set field must match (AND); an empty filter matches everything."""
    if not 0 <= spec.min_priority <= _MAX_PRIORITY:
        raise FilterError(f"unknown min_priority {spec.min_priority}")
    checks: list[AlertPredicate] = []
    if spec.min_priority:
        # Our enum is Falco's number plus one; lower means more severe.
        ceiling = spec.min_priority - 1
        checks.append(lambda p, s, r, t: p <= ceiling)
    if spec.sources:
        sources = frozenset(spec.sources)
        checks.append(lambda p, s, r, t: s in sources)
    if spec.rules:
        rule_ok = _rule_matcher(list(spec.rules))
        checks.append(lambda p, s, r, t: rule_ok(r))
    if spec.tags_any:
        wanted_any = frozenset(spec.tags_any)
        checks.append(lambda p, s, r, t: not wanted_any.isdisjoint(t))
    if spec.tags_all:
        wanted_all = frozenset(spec.tags_all)
        checks.append(lambda p, s, r, t: wanted_all.issubset(t))
    if not checks:
        return match_all
    if len(checks) == 1:
        return checks[0]
    all_checks = tuple(checks)

    def matches(priority: int, source: str, rule: str, tags: Sequence[str]) -> bool:
        for check in all_checks:
            if not check(priority, source, rule, tags):
                return False
        return True

    return matches


def _any_of(predicates: list[AlertPredicate]) -> AlertPredicate:
    if len(predicates) == 1:
        return predicates[0]
    members = tuple(predicates)

    def matches(priority: int, source: str, rule: str, tags: Sequence[str]) -> bool:
        for predicate in members:
            if predicate(priority, source, rule, tags):
                return True
        return False

    return matches


def _check_limits(allow_list: Sequence[pb.AlertFilter], deny_list: Sequence[pb.AlertFilter]) -> None:
    """FilterError naming the limit a request goes over (see MAX_FILTERS and the others)."""
    for name, filters in (("allow_list", allow_list), ("deny_list", deny_list)):
        if len(filters) > MAX_FILTERS:
            raise FilterError(f"{name} has {len(filters)} filters, more than the limit of {MAX_FILTERS}")
    every = [*allow_list, *deny_list]
    values = sum(len(f.sources) + len(f.rules) + len(f.tags_any) + len(f.tags_all) for f in every)
    if values > MAX_VALUES:
        raise FilterError(f"the filters name {values} sources, rules and tags, more than the limit of {MAX_VALUES}")
    globs = [rule for f in every for rule in f.rules if _GLOB_CHARS.intersection(rule)]
    if len(globs) > MAX_GLOBS:
        raise FilterError(f"the filters hold {len(globs)} rule globs, more than the limit of {MAX_GLOBS}")
    for glob in globs:
        if len(glob) > MAX_GLOB_LENGTH:
            raise FilterError(f"rule glob {glob[:40]!r}... is {len(glob)} characters long, more than the limit of "
                              f"{MAX_GLOB_LENGTH}")


def compile_selection(allow_list: Iterable[pb.AlertFilter], deny_list: Iterable[pb.AlertFilter]) -> AlertPredicate:
    """Allowed when the allow list is empty or any allow filter matches, and no deny filter matches."""
    allow_specs, deny_specs = list(allow_list), list(deny_list)
    _check_limits(allow_specs, deny_specs)
    allow = [compile_filter(f) for f in allow_specs]
    deny = [compile_filter(f) for f in deny_specs]
    if match_all in deny:
        raise FilterError("an empty filter in deny_list would drop every alert")
    allowed = match_all if not allow or match_all in allow else _any_of(allow)
    if not deny:
        return allowed
    denied = _any_of(deny)
    if allowed is match_all:
        return lambda p, s, r, t: not denied(p, s, r, t)
    return lambda p, s, r, t: allowed(p, s, r, t) and not denied(p, s, r, t)
