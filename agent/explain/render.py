"""Explanations as indented text for people: one line per node, ✓ true, ✗ false, ! error, `<` on the child that
decided its parent; macros by name, their bodies shown when expanded. A correlation's steps are shown as rules are,
with the key each match was filed under, and the verdict at the end of the input."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from agent.event import Event
from agent.explain.correlation import CorrelationOnEvent, CorrelationVerdict
from agent.explain.evaluate import Node, NodeKind, Outcome
from agent.explain.verdict import RuleExplanation, Status

_MARKS = {Outcome.TRUE: "✓", Outcome.FALSE: "✗", Outcome.ERROR: "!"}
#: Longest value text shown next to a check.
MAX_VALUE_CHARS = 120


def event_heading(number: int, event: Event) -> str:
    return f"event {number}: source {event.source}, type {event.type}, time {event.ts_ns}"


def rule_lines(explanation: RuleExplanation, *, expand: bool | Collection[str], title: str = "") -> list[str]:
    """The lines of one rule's explanation; `expand` is True (every macro), or the names of macros to open;
    `title` names what is explained when it is not a rule (a correlation's step)."""
    head = "  " + (title or f"rule '{explanation.rule}'")
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
    if node.kind is NodeKind.CHECK:
        values = "  ".join(f"{name}={_value(value)}" for name, value in node.values.items())
        error = f"  [{node.error}]" if node.error else ""
        return [f"{pad}{mark} {node.text}    {values}{error}".rstrip()]
    if node.kind is NodeKind.MACRO:
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


def correlation_lines(on_event: CorrelationOnEvent, *, expand: bool | Collection[str]) -> list[str]:
    """A correlation on one event: which steps matched, each step of the event's source shown as a rule is, the key
    a match was filed under, and the alerts the engine raised."""
    matched = ", ".join(f"'{name}'" for name in on_event.matched_steps) or "none"
    alerts = f"; the engine fired {on_event.alerts} alert(s)" if on_event.alerts else ""
    lines = [f"  correlation '{on_event.correlation}' ({on_event.priority}): step(s) matched: {matched}{alerts}"]
    for step in on_event.steps:
        step_lines = rule_lines(step.explanation, expand=expand, title=f"step '{step.step}'")
        lines.append("  " + step_lines[0])
        if step.explanation.is_match:
            fields = ", ".join(step.key_fields) or "no key"
            filed = "nothing (a key value is missing)" if step.key is None else "(" + ", ".join(step.key) + ")"
            lines.append(f"        filed under ({fields}) = {filed}")
        if step.note:
            lines.append(f"        {step.note}")
        lines += ["  " + line for line in step_lines[1:]]
    return lines


def verdict_lines(verdict: CorrelationVerdict) -> list[str]:
    """At the end of the input: the engine's verdict on a correlation and, when it did not fire, what was missing."""
    if verdict.fired:
        events = ", ".join(str(number) for number in verdict.fired_at)
        return [f"correlation '{verdict.correlation}': FIRED {verdict.fired} time(s) (event {events})"]
    return [f"correlation '{verdict.correlation}': DID NOT FIRE", *(f"  - {line}" for line in verdict.missing)]
