"""Falco's `-L` and `-l RULE`: the loaded rules with their descriptions, as a table or as JSON."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

from agent.engine.ruleset import CompiledRule

#: The rule name column is this wide (with its space), then descriptions wrap at this line length, as Falco's do.
_NAME_WIDTH = 51
_LINE_LENGTH = 110


class UnknownRuleError(LookupError):
    """`-l` names a rule that is not loaded."""

    def __init__(self, name: str, loaded: Sequence[CompiledRule]) -> None:
        super().__init__(f"rule '{name}' is not loaded ({len(loaded)} rules are; `-L` lists them)")


def select_rules(rules: Sequence[CompiledRule], name: str | None) -> list[CompiledRule]:
    """Every rule (`name` None), or the one named; UnknownRuleError when no loaded rule has that name."""
    if name is None:
        return list(rules)
    chosen = [rule for rule in rules if rule.name == name]
    if not chosen:
        raise UnknownRuleError(name, rules)
    return chosen


def rules_table(rules: Sequence[CompiledRule]) -> str:
    """A `Rule` / `Description` table; a long description wraps under its column, a blank line after each rule."""
    lines = [f"{'Rule':<{_NAME_WIDTH - 1}} Description", f"{'----':<{_NAME_WIDTH - 1}} -----------"]
    for rule in rules:
        first, *rest = textwrap.wrap(" ".join(rule.description.split()), _LINE_LENGTH - _NAME_WIDTH) or [""]
        lines += [f"{rule.name:<{_NAME_WIDTH - 1}} {first}", *(" " * _NAME_WIDTH + line for line in rest), ""]
    return "\n".join(lines) + "\n"


def rules_json(rules: Sequence[CompiledRule]) -> dict[str, Any]:
    """`{"rules": [{"info": {...}}]}`, the `info` part of each rule in Falco's JSON rule description."""
    return {"rules": [{"info": {"name": rule.name, "desc": rule.description, "priority": rule.priority.label,
                                "source": rule.source, "tags": list(rule.tags), "enabled": rule.enabled}}
                      for rule in rules]}
