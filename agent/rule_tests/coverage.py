"""What the cases leave untested: rules and correlations without a case expecting a match or one expecting none,
macros never true on a case's event, exceptions (with values) that never suppressed an alert.

A macro counts for the rules whose conditions reach it (through other macros too); one reached only from
correlation steps is not tracked. An exception without values can suppress nothing and is not listed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from agent.engine.ast import Expr, MacroRef, walk
from agent.engine.engine import Engine
from agent.explain.model import RulesModel
from agent.rule_tests.runner import CaseResult


@dataclass(frozen=True, slots=True)
class Coverage:
    files: tuple[str, ...]
    rules: int
    without_positive: tuple[str, ...]
    without_negative: tuple[str, ...]
    macros: int
    macros_never_true: tuple[str, ...]
    exceptions: int
    exceptions_never_used: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"files": list(self.files), "rules": self.rules,
                "rules_without_positive_case": list(self.without_positive),
                "rules_without_negative_case": list(self.without_negative), "macros": self.macros,
                "macros_never_true": list(self.macros_never_true), "exceptions_with_values": self.exceptions,
                "exceptions_never_used": list(self.exceptions_never_used)}

    def lines(self) -> list[str]:
        covered = (f"  {self.rules - len(self.without_positive)}/{self.rules} rules and correlations with a case "
                   f"expecting a match, {self.rules - len(self.without_negative)}/{self.rules} with one expecting none",
                   f"  {self.macros - len(self.macros_never_true)}/{self.macros} macros true on some case's event",
                   f"  {self.exceptions - len(self.exceptions_never_used)}/{self.exceptions} exceptions with values "
                   "suppressed some case's alert")
        out = [f"coverage of {', '.join(self.files)}:", *covered]
        for title, names in (("no positive case", self.without_positive), ("no negative case", self.without_negative),
                             ("macro never true", self.macros_never_true),
                             ("exception never used", self.exceptions_never_used)):
            out += [f"    {title}: {name}" for name in names]
        return out


def measure(results: Iterable[CaseResult], engine: Engine, model: RulesModel, *, files: Iterable[str]) -> Coverage:
    """Coverage of the rules loaded in `engine` (from `files`) by the cases' results."""
    results = list(results)
    names = [rule.name for rule in engine.rules] + [c.name for c in engine.correlations]
    positive = {r.case.rule for r in results if r.case.expect.matches}
    negative = {r.case.rule for r in results if not r.case.expect.matches}
    reached = sorted({macro for rule in model.rules.values() for macro in _macros(rule.condition, model.macros)})
    true = set().union(*(r.macros_true for r in results)) if results else set()
    exceptions = [f"{rule.name} / {ex.name}" for rule in model.rules.values() for ex in rule.exceptions]
    used = {f"{r.case.rule} / {name}" for r in results for name in r.exceptions_used}
    return Coverage(
        files=tuple(files), rules=len(names),
        without_positive=tuple(n for n in names if n not in positive),
        without_negative=tuple(n for n in names if n not in negative),
        macros=len(reached), macros_never_true=tuple(m for m in reached if m not in true),
        exceptions=len(exceptions), exceptions_never_used=tuple(e for e in exceptions if e not in used),
    )


def _macros(tree: Expr, macros: dict[str, Expr], seen: set[str] | None = None) -> Iterator[str]:
    """Names of the macros a condition reaches, directly or through other macros."""
    seen = set() if seen is None else seen
    for node in walk(tree):
        if isinstance(node, MacroRef) and node.name not in seen and node.name in macros:
            seen.add(node.name)
            yield node.name
            yield from _macros(macros[node.name], macros, seen)
