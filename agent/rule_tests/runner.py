"""Runs test cases through the agent's own engine (agent.engine_setup.load_engine, with `rule_matching: all` so that
an earlier rule never hides the one under test) and says, per case, whether the rule did what the case expects.

Rule cases share one engine. A correlation case gets an engine of its own: correlation state must start empty. Each
event of a rule case is also explained (agent.explain), which gives the coverage of macros and exceptions and
checks that the explanation agrees with the engine's verdict; a correlation that did not fire when it should have
is explained afterwards (what was missing).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.alert import Alert
from agent.config import AgentConfig
from agent.engine.engine import Engine
from agent.engine.load_result import LoadResult
from agent.engine.output_format import EXTRACTION_ERRORS
from agent.engine_setup import load_engine
from agent.errors import DecodeError
from agent.event import Event
from agent.explain.correlation import CorrelationExplainer
from agent.explain.evaluate import deciding_paths, macros_true
from agent.explain.model import RulesModel, read_model
from agent.explain.verdict import Explainer, RuleExplanation, Status
from agent.rule_tests.cases import RuleCase
from agent.rule_tests.inputs import EventReader
from agent.source import SourceSpec

_ABSENT = object()


@dataclass(slots=True)
class CaseResult:
    """What a case did: `problems` are readable lines saying why it failed (none when it passed)."""

    case: RuleCase
    problems: list[str] = field(default_factory=list)
    alerts: int = 0
    #: Values of the expected `event_fields`, read from the event of the first alert when it was raised.
    event_fields: dict[str, Any] = field(default_factory=dict)
    macros_true: set[str] = field(default_factory=set)
    exceptions_used: set[str] = field(default_factory=set)
    #: Per event of a rule case, the explanation made when the engine evaluated it.
    explanations: list[RuleExplanation] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.problems


class RulesUnderTest:
    """The rules files loaded into the agent's engine, the rules as written, and the readers of case input."""

    def __init__(self, config: AgentConfig, files: Sequence[Path], *, sources: Sequence[SourceSpec],
                 reader: EventReader) -> None:
        self.config = replace(config, rule_matching="all")
        self.files = list(files)
        self._sources = list(sources)
        self.reader = reader
        self.engine, self.load_result = self.new_engine()
        self.model: RulesModel | None = None
        if self.load_result.successful:
            self.model = read_model(self.files, known_sources=frozenset(self.engine.sources))

    def new_engine(self) -> tuple[Engine, LoadResult]:
        return load_engine(self.config, self.files, sources=self._sources, hostname=self.config.hostname)

    def run(self, cases: Sequence[RuleCase]) -> list[CaseResult]:
        assert self.model is not None, "the rules did not load"
        explainer = Explainer(self.engine, self.model)
        results = []
        for case in cases:
            started = time.perf_counter()
            result = self._run_case(case, explainer)
            result.elapsed_s = time.perf_counter() - started
            results.append(result)
        return results

    def _run_case(self, case: RuleCase, explainer: Explainer) -> CaseResult:
        result = CaseResult(case)
        is_correlation = any(c.name == case.rule for c in self.engine.correlations)
        problem = self._naming_problem(case, is_correlation=is_correlation)
        if problem:
            result.problems.append(problem)
            return result
        engine = self.new_engine()[0] if is_correlation else self.engine
        observe = None if is_correlation else _explaining(explainer, case.rule, result)
        alerts = self._alerts(case, engine, observe, result)
        if not result.problems:
            _compare(case, alerts, result)
        if result.problems and case.expect.matches and not alerts:
            result.problems += self._why_not_fired(case, explainer) if is_correlation else \
                _why_silent(result.explanations)
        return result

    def _why_not_fired(self, case: RuleCase, explainer: Explainer) -> list[str]:
        """For a correlation that did not fire: what was missing, as `falco-agent explain` says it."""
        if case.input.file is not None and not case.input.file.exists():
            return []
        correlations = CorrelationExplainer(explainer, self.new_engine()[0], [case.rule])
        for item in self._items(case):
            if isinstance(item, Event):
                correlations.observe(item)
        return [f"  {line}" for verdict in correlations.verdicts() for line in verdict.missing]

    def _items(self, case: RuleCase) -> Iterable[Event | DecodeError]:
        forced = self.reader.decoder(case.source)
        if case.input.file is not None:
            return self.reader.files([case.input.file], forced=forced)
        return self.reader.written(case.input.documents, origin=f"{case.location.file}:{case.location.line}",
                                   forced=forced)

    def _naming_problem(self, case: RuleCase, *, is_correlation: bool) -> str:
        """What is wrong with the rule, correlation or source the case names ('' when nothing is)."""
        rule = next((r for r in self.engine.rules if r.name == case.rule), None)
        if rule is None and not is_correlation:
            return f"no rule or correlation named '{case.rule}' is loaded"
        if case.source is not None and case.source not in self.engine.sources:
            return f"source '{case.source}' is not loaded; known: {', '.join(self.engine.sources)}"
        if case.is_correlation != is_correlation:
            kind = "correlation" if is_correlation else "rule"
            return f"'{case.rule}' is a {kind}: name it with '{kind}:'"
        if rule is not None and case.source is not None and rule.source != case.source:
            return f"'{case.rule}' is a rule of source '{rule.source}', the case says '{case.source}'"
        return ""

    def _alerts(self, case: RuleCase, engine: Engine, observe: Callable[[Event, list[Alert]], None] | None,
                result: CaseResult) -> list[Alert]:
        """The case's rule's alerts; events are evaluated as they are read (kernel state moves on after)."""
        if case.input.file is not None and not case.input.file.exists():
            result.problems.append(f"input file not found: {case.input.file}")
            return []
        items = self._items(case)
        alerts: list[Alert] = []
        events = 0
        for item in items:
            if isinstance(item, DecodeError):
                result.problems.append(f"input: {item}")
                continue
            events += 1
            raised = engine.process(item)
            if observe is not None:
                observe(item, raised)
            mine = [alert for alert in raised if alert.rule == case.rule]
            if mine and not alerts:
                result.event_fields = _read_fields(engine, item, case.expect.event_fields)
            alerts += mine
        if not events and not result.problems:
            result.problems.append("the input holds no event")
        return alerts


def _explaining(explainer: Explainer, rule: str, result: CaseResult) -> Callable[[Event, list[Alert]], None]:
    """Explains each event for coverage, and checks the explanation's verdict against the engine's."""
    def observe(event: Event, alerts: list[Alert]) -> None:
        explanation = explainer.explain(rule, event)
        result.explanations.append(explanation)
        if explanation.condition is not None:
            result.macros_true |= macros_true(explanation.condition)
        result.exceptions_used |= {ex.name for ex in explanation.exceptions if ex.suppressed_by}
        alerted = any(alert.rule == rule for alert in alerts)
        if explanation.is_match != alerted:
            result.problems.append(f"explain says {explanation.status.value}, the engine "
                                   f"{'alerted' if alerted else 'did not alert'} (event {event.num}): a bug")
    return observe


def _compare(case: RuleCase, alerts: list[Alert], result: CaseResult) -> None:
    expect = case.expect
    result.alerts = len(alerts)
    if not expect.matches:
        if alerts:
            result.problems.append(f"expected no match, got {len(alerts)} alert(s):")
            result.problems += [f"  {alert.priority.label} {alert.output}" for alert in alerts[:3]]
        return
    if not alerts:
        result.problems.append("expected a match, got no alert")
        return
    if expect.count is not None and len(alerts) != expect.count:
        result.problems.append(f"expected {expect.count} alert(s), got {len(alerts)}")
    first = alerts[0]
    if expect.priority is not None and first.priority is not expect.priority:
        result.problems.append(f"priority: expected {expect.priority.label}, got {first.priority.label}")
    for title, actual in (("output fields", first.output_fields), ("event fields", result.event_fields)):
        expected = expect.output_fields if title == "output fields" else expect.event_fields
        diff = output_fields_diff(expected, actual)
        if diff:
            result.problems.append(f"{title} (- expected, + actual):")
            result.problems += diff


def _read_fields(engine: Engine, event: Event, names: Iterable[str]) -> dict[str, Any]:
    """Values of fields (`name` or `name[arg]`) of an event, through its source's table; an unknown field is left
    out (the diff says so)."""
    table = engine.sources[event.source].fields
    out = {}
    for written in names:
        name, _, arg = written.partition("[")
        resolved = table.resolve(name, arg.removesuffix("]") if arg else None)
        if resolved is not None:
            try:
                out[written] = resolved[0].bind(resolved[1])(event)
            except EXTRACTION_ERRORS as exc:
                out[written] = f"<{type(exc).__name__}: {exc}>"
    return out


def output_fields_diff(expected: dict[str, Any] | Any, actual: dict[str, Any]) -> list[str]:
    """`- field: expected` / `+ field: actual` lines for each expected field whose value differs; a YAML value
    equals an actual value when equal as is or as text (`1000` and 1000)."""
    lines = []
    for name, want in expected.items():
        got = actual.get(name, _ABSENT)
        if got is not _ABSENT and (got == want or str(got) == str(want)):
            continue
        lines.append(f"  - {name}: {want!r}")
        lines.append(f"  + {name}: " + ("(absent)" if got is _ABSENT else repr(got)))
    return lines


def _why_silent(explanations: list[RuleExplanation]) -> list[str]:
    """For a rule that stayed silent: per event, what decided (`falco-agent explain` shows the whole tree)."""
    lines = []
    for number, explanation in enumerate(explanations, start=1):
        if explanation.status is Status.NOT_CANDIDATE:
            lines.append(f"  event {number}: not a candidate: {explanation.reason}")
        elif explanation.status is Status.SUPPRESSED:
            lines += [f"  event {number}: suppressed by exception '{ex.name}': {ex.suppressed_by}"
                      for ex in explanation.exceptions if ex.suppressed_by]
        elif explanation.condition is not None:
            for path, check in deciding_paths(explanation.condition)[:3]:
                values = ", ".join(f"{k}={v!r}" for k, v in check.values.items())
                lines.append(f"  event {number}: {' > '.join(path)} > {check.text} is {check.outcome.value} "
                             f"({values})")
        if len(lines) > 8:
            break
    return lines
