"""How the engine evaluates an event's candidate rules and makes their alerts.

Rule by rule at first; once a set of candidates (a narrowing) has met EVALUATOR_AFTER_EVENTS events, by one function
generated for it: every rule's condition and, after each, the composition of its alert, written into one body that
reads each field at most once. The index fields come from the index key the engine already has, and any other field
several conditions or outputs read is kept at its first read, so an alert's output reuses what its condition read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol

from agent.alert import Alert
from agent.engine.codegen import Builder, Condition, condition_bodies, condition_of
from agent.engine.output_format import EXTRACTION_ERRORS, alert_for, composition
from agent.engine.ruleset import CompiledRule, Narrowing, RuleSet
from agent.event import Event

#: Events a narrowing meets before its rules are evaluated by one generated function: the narrowings in use get one
#: (a compilation each), the others keep evaluating rule by rule.
EVALUATOR_AFTER_EVENTS = 16


class ErrorCount(Protocol):
    """Where an evaluator counts the rules an extraction error kept from matching."""

    rule_errors: int


#: Evaluates rules in turn on an event: `evaluate(event, key, errors, first_only)` gives the alerts of the rules whose
#: condition holds (only the first with `first_only`), counting in `errors` each one an extraction error stopped;
#: `key` is the event's index key (agent.engine.ruleset.RuleSet.narrow).
Evaluator = Callable[[Event, tuple[Any, ...], ErrorCount, bool], list[Alert]]


def evaluator_of(node: Narrowing[CompiledRule], ruleset: RuleSet[CompiledRule], hostname: str) -> Evaluator:
    """How `node`'s rules are evaluated for this event: rule by rule until it met EVALUATOR_AFTER_EVENTS events, then
    by the function generated for them (kept on the node), or rule by rule for good when one is not generated.
    `hostname` is the agent's, for events that name none."""
    node.uses += 1
    if node.uses < EVALUATOR_AFTER_EVENTS:
        return partial(evaluate_in_turn, node.rules, hostname)
    evaluator = generate_evaluator(node.rules, ruleset, hostname) or partial(
        evaluate_in_turn, node.rules, hostname)
    node.evaluator = evaluator
    return evaluator


def evaluate_in_turn(rules: tuple[CompiledRule, ...], hostname: str, event: Event, _key: tuple[Any, ...],
                     counts: ErrorCount, first_only: bool) -> list[Alert]:
    """The alerts of the rules whose condition holds on `event`, in order (the first alone with `first_only`)."""
    alerts = []
    for rule in rules:
        try:
            if rule.predicate(event):
                alerts.append(alert_for(rule, event, hostname=hostname))
                if first_only:
                    break
        except EXTRACTION_ERRORS:
            # An extractor met an input shape it did not expect: the rule cannot match this
            # event, and the agent goes on with the next rule.
            counts.rule_errors += 1
    return alerts


def generate_evaluator(rules: Sequence[CompiledRule], ruleset: RuleSet[CompiledRule], hostname: str,
                       ) -> Evaluator | None:
    """One function doing what `evaluate_in_turn` does for `rules`, candidates of `ruleset` together, alerts in the
    same order (None when a rule's condition was not generated). The index fields are given in the index key (`key[i]`
    the value of the field whose cache key is `ruleset.index_cache_keys[i]`), and the checks the index already
    decided (`RuleSet.implied`) are not tested."""
    conditions: list[Condition] = []
    for rule in rules:
        condition = condition_of(rule.predicate)
        if condition is None:
            return None
        conditions.append(condition)
    given = {key: f"_i{position}" for position, key in enumerate(ruleset.index_cache_keys) if key is not None}
    implied = [ruleset.implied(rule) for rule in rules]
    builder, body = _evaluator_text(rules, conditions, given, set(), implied, hostname)
    shared = {key for key, count in builder.reads.reads.items() if count > 1 and key not in given}
    if shared:
        builder, body = _evaluator_text(rules, conditions, given, shared, implied, hostname)
    lines = ["def evaluate(ev, key, counts, first_only):",
             *(f"    {local} = key[{local[2:]}]" for local in sorted(builder.reads.held_used)),
             *(f"    {line}" for line in builder.reads.prologue()), "    alerts = []", *body, "    return alerts"]
    exec(compile("\n".join(lines), "<rules>", "exec"), builder.namespace)
    evaluate: Evaluator = builder.namespace["evaluate"]
    return evaluate


def _evaluator_text(rules: Sequence[CompiledRule], conditions: Sequence[Condition], held: dict[str, str],
                    shared: set[str], implied: Sequence[frozenset[int]], hostname: str) -> tuple[Builder, list[str]]:
    """The body of the generated evaluator (after its opening statements), and the builder that wrote it."""
    builder, bodies = condition_bodies(conditions, held, shared, implied)
    bind = builder.bind
    errors, alert, host = bind(EXTRACTION_ERRORS), bind(Alert), bind(hostname)
    lines = []
    for position, (rule, body) in enumerate(zip(rules, bodies, strict=True)):
        # Read in a branch: what only the outputs read is opened when a rule matched, not on every event.
        reads = builder.reads.branch()
        statements, text, fields = composition(rule.output, bind, reads, f"_o{position}_")
        made = (f"{alert}({bind(rule.name)}, {bind(rule.priority)}, ev.source, ev.ts_ns, {text}, {fields}, "
                f"ev.hostname or {host}, {bind(rule.tags)})")
        lines += ["    try:", f"        if {body}:",
                  *(f"            {line}" for line in (*reads.prologue(), *statements)),
                  f"            alerts.append({made})", "            if first_only:", "                return alerts",
                  f"    except {errors}:", "        counts.rule_errors += 1"]
    return builder, lines
