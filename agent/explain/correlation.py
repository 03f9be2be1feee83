"""Why a correlation fired or not on a stream: per event, each step of the event's source with its condition tree
(evaluated as a rule's, agent.explain.verdict) and the key its match was filed under; at the end of the input, the
engine's own verdict and, when it did not fire, what was missing.

The verdict is never worked out here: the same events are fed to an engine of the same rules, and its alerts (and
its count of late step matches) are what explain reports. What was missing is read from the step matches recorded
on the way (a step that never matched, keys that differ, a step that came too early, a chain longer than the
window, too few matches, an absence cancelled or not confirmed yet), to point at the cause.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.engine.correlation_compiler import CompiledCorrelation, CompiledStep
from agent.engine.engine import Engine
from agent.engine.output_format import render_value
from agent.engine.ruleset import RuleSet
from agent.event import Event
from agent.explain.verdict import Explainer, RuleExplanation, Status, index_reason

_NS_PER_S = 1_000_000_000


@dataclass(slots=True)
class StepOnEvent:
    """One step of a correlation on one event: the step's explanation (as a rule's), and when it matched, the key
    values the match was filed under (None when a key field is missing: the engine files nothing); `note` says why
    the engine could not use the match ('' when it could)."""

    step: str
    explanation: RuleExplanation
    key_fields: tuple[str, ...]
    key: tuple[str, ...] | None = None
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"step": self.step, **self.explanation.as_json(), "key_fields": list(self.key_fields),
                "key": list(self.key) if self.key is not None else None, "note": self.note or None}


@dataclass(slots=True)
class CorrelationOnEvent:
    """A correlation on one event: its steps of the event's source, and the alerts the engine raised for it."""

    correlation: str
    priority: str
    steps: list[StepOnEvent]
    alerts: int = 0

    @property
    def matched_steps(self) -> list[str]:
        return [step.step for step in self.steps if step.explanation.is_match]

    def as_json(self) -> dict[str, Any]:
        return {"correlation": self.correlation, "priority": self.priority, "matched_steps": self.matched_steps,
                "steps": [step.as_json() for step in self.steps], "alerts": self.alerts}


@dataclass(slots=True)
class CorrelationVerdict:
    """At the end of the input: how often the engine fired the correlation (on which events), or what was missing."""

    correlation: str
    fired: int
    fired_at: list[int]
    missing: list[str]

    def as_json(self) -> dict[str, Any]:
        return {"correlation": self.correlation, "fired": self.fired > 0, "alerts": self.fired,
                "fired_at_events": self.fired_at, "missing": self.missing}


@dataclass(frozen=True, slots=True)
class _Filing:
    """A step match as the engine received it: event number, time, key, distinct value; `left_out` says why the
    engine could not use it ('' when it could)."""

    event: int
    ts_ns: int
    position: int
    key: tuple[str, ...] | None
    distinct: Any
    left_out: str = ""


@dataclass(slots=True)
class _Tracked:
    rule: CompiledCorrelation
    filings: list[_Filing] = field(default_factory=list)
    fired_at: list[int] = field(default_factory=list)
    #: Per `new_value` step: per `per` key, the time each value was last seen (to say why a match was refused).
    seen: dict[int, dict[tuple[str, ...], dict[str, int]]] = field(default_factory=dict)
    newest_ns: int = 0


class CorrelationExplainer:
    """Explains correlations on a stream, event by event in arrival order. `explainer` evaluates step conditions
    (the rules as written, the engine's compiled checks); `verdict_engine`, a fresh engine of the same rules, is fed
    every event and gives the verdict."""

    def __init__(self, explainer: Explainer, verdict_engine: Engine, names: Sequence[str] | None = None) -> None:
        self._explainer = explainer
        self._verdict_engine = verdict_engine
        loaded = {c.name: c for c in explainer.engine.correlations}
        chosen = loaded if names is None else {name: loaded[name] for name in names}
        self._tracked = {name: _Tracked(rule) for name, rule in chosen.items()}
        self._steps: dict[str, RuleSet[CompiledStep]] = {}
        for source, spec in explainer.engine.sources.items():
            steps = [step for rule in chosen.values() for step in rule.steps if step.source == source]
            if steps:
                self._steps[source] = RuleSet.of_source(steps, spec)
        self._events = 0

    def observe(self, event: Event, *, every_step: bool = False) -> list[CorrelationOnEvent]:
        """Feed the event to the verdict engine and explain the tracked correlations whose steps the index admits
        it to (with `every_step`, every step of the event's source, candidate or not, of every tracked
        correlation with one)."""
        self._events += 1
        late_before = self._late_counts()
        alerts = self._verdict_engine.process(event)
        late_after = self._late_counts()
        ruleset = self._steps.get(event.source)
        admitted = set(ruleset.candidates(event)) if ruleset is not None else set()
        out = []
        for name, tracked in self._tracked.items():
            if event.source in tracked.rule.sources:
                tracked.newest_ns = max(tracked.newest_ns, event.ts_ns)
            fired = sum(1 for alert in alerts if alert.rule == name)
            tracked.fired_at += [self._events] * fired
            is_late = late_after.get(name, 0) > late_before.get(name, 0)
            shown = [step for step in tracked.rule.steps
                     if step.source == event.source and (every_step or step in admitted)]
            steps = [self._step(tracked, step, event, is_late) if step in admitted
                     else self._not_candidate(tracked.rule, step, event) for step in shown]
            if steps or fired:
                out.append(CorrelationOnEvent(name, tracked.rule.priority.label, steps, fired))
        return out

    def verdicts(self, *, only: set[str] | None = None) -> list[CorrelationVerdict]:
        """At the end of the input, per tracked correlation (those in `only` when given): fired, or what was
        missing."""
        out = []
        for name, tracked in self._tracked.items():
            if only is not None and name not in only:
                continue
            missing = [] if tracked.fired_at else self._missing(tracked)
            out.append(CorrelationVerdict(name, len(tracked.fired_at), list(tracked.fired_at), missing))
        return out

    # ----- one event ---------------------------------------------------------------------------
    def _step(self, tracked: _Tracked, step: CompiledStep, event: Event, is_late: bool) -> StepOnEvent:
        explanation = self._explainer.explain_step(tracked.rule, step, event)
        on_event = StepOnEvent(step.step, explanation, self._key_fields(step))
        if not explanation.is_match:
            return on_event
        on_event.key = _key(step, event)
        left_out = ""
        if is_late:
            left_out = (f"late: older than the correlation's clock minus its lateness "
                        f"({_duration(tracked.rule.lateness_ns)}); the engine left it out")
        refused = self._not_new(tracked, step, event)
        left_out = left_out or refused
        if on_event.key is None:
            left_out = left_out or "a key field is missing: the engine files nothing"
        elif step.distinct is not None and step.distinct(event) is None:
            left_out = left_out or "the distinct field is missing: the engine files nothing"
        on_event.note = left_out
        distinct = step.distinct(event) if step.distinct is not None else None
        tracked.filings.append(_Filing(self._events, event.ts_ns, step.position, on_event.key, distinct, left_out))
        return on_event

    def _not_candidate(self, rule: CompiledCorrelation, step: CompiledStep, event: Event) -> StepOnEvent:
        spec = self._explainer.engine.sources[step.source]
        reason = index_reason(self._steps.get(step.source), spec, step, event) or \
            "the index or its guards keep the step from this event"
        explanation = RuleExplanation(step.name, Status.NOT_CANDIDATE, reason, step.source, rule.priority.label)
        return StepOnEvent(step.step, explanation, self._key_fields(step))

    def _key_fields(self, step: CompiledStep) -> tuple[str, ...]:
        correlation = step.name.removesuffix(f"/{step.step}")
        return self._explainer.model.correlations[correlation][step.position].key

    def _not_new(self, tracked: _Tracked, step: CompiledStep, event: Event) -> str:
        """For a `new_value` step: why the engine refuses this match ('' when the value is new), remembering the
        value as the engine does."""
        check = step.new_value
        if check is None:
            return ""
        per = _rendered(tuple(get(event) for get in check.per))
        value = check.get(event)
        if per is None or value is None:
            return "the new_value field or a `per` field is missing"
        seen = tracked.seen.setdefault(step.position, {}).setdefault(per, {})
        shown = render_value(value)
        last = seen.get(shown)
        seen[shown] = event.ts_ns if last is None else max(last, event.ts_ns)
        if last is not None and event.ts_ns - last <= check.history_ns:
            return (f"not a new value: {shown} was seen for {_tuple_text(per)} within "
                    f"{_duration(check.history_ns)}; the engine refuses the match")
        return ""

    def _late_counts(self) -> dict[str, int]:
        return {m.rule: m.late_events for m in self._verdict_engine.correlation_metrics()}

    # ----- what was missing ----------------------------------------------------------------------
    def _missing(self, tracked: _Tracked) -> list[str]:
        rule = tracked.rule
        reason = self._explainer.selection_reason(rule)
        if reason:
            return [reason]
        lines = [f"event {f.event} (step '{rule.steps[f.position].step}'): {f.left_out}"
                 for f in tracked.filings if f.left_out]
        usable = [f for f in tracked.filings if not f.left_out]
        chain = [step for step in rule.steps if not step.absent]
        by_step = {step.position: [f for f in usable if f.position == step.position] for step in chain}
        never = [step for step in chain if not by_step[step.position]]
        if never:
            matched = {f.position for f in tracked.filings}
            return lines + [f"step '{step.step}' " + ("matched only on events the engine left out (above)"
                                                      if step.position in matched else "never matched")
                            for step in never]
        keys = [{f.key for f in by_step[step.position] if f.key is not None} for step in chain]
        common = set.intersection(*keys)
        if not common:
            return [*lines, _key_mismatch(chain, keys)]
        findings = [_chain_problem(rule, chain, key, usable, tracked.newest_ns) for key in sorted(common)]
        return lines + findings


def _key_mismatch(chain: list[CompiledStep], keys: list[set[Any]]) -> str:
    """Names the first step whose keys meet none of the earlier steps' keys."""
    shared = keys[0]
    for step, step_keys in zip(chain[1:], keys[1:], strict=True):
        if not shared & step_keys:
            earlier = chain[chain.index(step) - 1]
            return (f"step '{step.step}' matched with key {_keys_text(step_keys)} but step '{earlier.step}' "
                    f"had key {_keys_text(shared)}")
        shared &= step_keys
    return "no key holds a match of every step"


def _chain_problem(rule: CompiledCorrelation, chain: list[CompiledStep], key: tuple[str, ...],
                   usable: list[_Filing], newest_ns: int) -> str:
    """Why the matches filed under `key` make no chain the engine fires on."""
    where = f"key {_tuple_text(key)}"
    lists = {step.position: sorted((f for f in usable if f.key == key and f.position == step.position),
                                   key=lambda f: (f.ts_ns, f.event)) for step in chain}
    for step in chain:
        have = _group_size(lists[step.position])
        if have < step.count:
            what = f"{have} distinct value(s) of its distinct field" if step.distinct is not None else f"{have} time(s)"
            return f"step '{step.step}' matched {what} under {where}; it needs {step.count}"
    best: tuple[int, _Filing, _Filing] | None = None
    broken = ""
    for start in range(len(lists[chain[0].position])):
        first_group = _group(lists[chain[0].position][start:], chain[0])
        if first_group is None:
            break
        bound = first_group[-1]
        for step in chain[1:]:
            after = [f for f in lists[step.position] if (f.ts_ns, f.event) > (bound.ts_ns, bound.event)]
            group = _group(after, step)
            if group is None:
                earlier = chain[chain.index(step) - 1]
                broken = (f"wrong order under {where}: no match of step '{step.step}' comes after step "
                          f"'{earlier.step}' (event {bound.event}); step '{step.step}' matched at event(s) "
                          f"{_events_text(lists[step.position])}")
                break
            bound = group[-1]
        else:
            span = bound.ts_ns - first_group[0].ts_ns
            if best is None or span < best[0]:
                best = (span, first_group[0], bound)
    if best is None:
        return broken or f"no chain of the steps in order under {where}"
    span, first, last = best
    if span > rule.window_ns:
        return (f"outside the window under {where}: the shortest chain (events {first.event} to {last.event}) "
                f"spans {_duration(span)}, the window is {_duration(rule.window_ns)}")
    if rule.steps[-1].absent:
        return _absence(rule, key, usable, last, newest_ns)
    return (f"a chain under {where} (events {first.event} to {last.event}) fits the window, yet the engine did not "
            "fire: its matches were used by an earlier alert or dropped by the state limits (max_keys)")


def _absence(rule: CompiledCorrelation, key: tuple[str, ...], usable: list[_Filing], last: _Filing,
             newest_ns: int) -> str:
    absent = rule.steps[-1]
    deadline = last.ts_ns + absent.within_ns
    cancelling = [f for f in usable if f.position == absent.position and f.key == key
                  and last.ts_ns <= f.ts_ns <= deadline]
    if cancelling:
        return (f"step '{absent.step}' (absent) matched at event {cancelling[0].event}, within "
                f"{_duration(absent.within_ns)} after the chain ended (event {last.event}): no alert")
    confirm = deadline + rule.lateness_ns
    return (f"the absence of step '{absent.step}' is not confirmed yet: it needs an event of "
            f"{', '.join(rule.sources)} at or after {_duration(confirm - last.ts_ns)} past event {last.event} "
            f"(deadline + lateness); the newest event is {_duration(max(newest_ns - last.ts_ns, 0))} past it")


def _group(filings: list[_Filing], step: CompiledStep) -> list[_Filing] | None:
    """The shortest run of matches from the first of `filings` that satisfies the step's count, or None."""
    if step.distinct is None:
        return filings[:step.count] if len(filings) >= step.count else None
    seen = set()
    for end, filing in enumerate(filings):
        seen.add(filing.distinct)
        if len(seen) >= step.count:
            return filings[:end + 1]
    return None


def _group_size(filings: list[_Filing]) -> int:
    """How many matches a count can use: distinct values when the step has them, else every match."""
    distinct = {f.distinct for f in filings}
    return len(filings) if distinct == {None} else len(distinct)


def _key(step: CompiledStep, event: Event) -> tuple[str, ...] | None:
    return _rendered(tuple(get(event) for get in step.key))


def _rendered(values: tuple[Any, ...]) -> tuple[str, ...] | None:
    """Key values as text (the engine joins an IP object and an IP string), None when one is missing."""
    if any(value is None for value in values):
        return None
    return tuple(render_value(value) for value in values)


def _keys_text(keys: set[Any]) -> str:
    return " or ".join(_tuple_text(key) for key in sorted(keys))


def _tuple_text(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(values) + ")" if values else "() (the correlation has no key)"


def _events_text(filings: list[_Filing]) -> str:
    return ", ".join(str(f.event) for f in filings)


def _duration(ns: int) -> str:
    """`1d2h3m4s`, as correlations write durations (whole seconds)."""
    seconds = ns // _NS_PER_S
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    return "".join(f"{amount}{unit}" for amount, unit in parts if amount) or "0s"
