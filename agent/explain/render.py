"""Explanations as indented text for people: one line per node, ✓ true, ✗ false, ! error, `<` on the child that
decided its parent; macros by name, their bodies shown when expanded."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from agent.event import Event
from agent.explain.evaluate import Node, Outcome
from agent.explain.verdict import RuleExplanation, Status

_MARKS = {Outcome.TRUE: "✓", Outcome.FALSE: "✗", Outcome.ERROR: "!"}
#: Longest value text shown next to a check.
MAX_VALUE_CHARS = 120


def event_heading(number: int, event: Event) -> str:
    return f"event {number}: source {event.source}, type {event.type}, time {event.ts_ns}"


def rule_lines(explanation: RuleExplanation, *, expand: bool | Collection[str]) -> list[str]:
    """The lines of one rule's explanation; `expand` is True (every macro), or the names of macros to open."""
    head = f"  rule '{explanation.rule}'"
    if explanation.priority:
        head += f" ({explanation.priority})"
    head += f": {explanation.status.value.upper()}"
    if explanation.status is Status.NOT_CANDIDATE:
        return [f"{head}: {explanation.reason}"]
    lines = [head]
    if explanation.condition is not None:
        lines += _node_lines(explanation.condition, 2, expand)
    for exception in explanation.exceptions:
        verdict = f"suppressed by {exception.suppressed_by}" if exception.suppressed_by else exception.outcome.value
        lines.append(f"    exception '{exception.name}': {verdict}")
        for _text, node in exception.items:
            lines += _node_lines(node, 3, expand)
    return lines


def _node_lines(node: Node, depth: int, expand: bool | Collection[str]) -> list[str]:
    pad = "  " * depth
    mark = _MARKS[node.outcome] + (" <" if node.decisive else "")
    if node.kind == "check":
        values = "  ".join(f"{name}={_value(value)}" for name, value in node.values.items())
        error = f"  [{node.error}]" if node.error else ""
        return [f"{pad}{mark} {node.text}    {values}{error}".rstrip()]
    if node.kind == "macro":
        is_open = expand is True or (not isinstance(expand, bool) and node.name in expand)
        lines = [f"{pad}{mark} macro {node.name}"]
        if is_open:
            lines += [line for child in node.children for line in _node_lines(child, depth + 1, expand)]
        return lines
    lines = [f"{pad}{mark} {node.kind}"]
    for child in node.children:
        lines += _node_lines(child, depth + 1, expand)
    return lines


def _value(value: Any) -> str:
    text = "<missing>" if value is None else repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS - 3] + "..."
