"""The loaded correlations at run time: their steps indexed per source like rules, their states, their clocks.

An event meets only the steps its source's index and guards admit (`evt.type`, `ka.verb`, `ct.name`...; `fd.name`),
exactly as it meets rules, so a correlation costs nothing on events none of its steps can match.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.alert import Alert
from agent.engine.correlation_compiler import CompiledCorrelation, CompiledStep
from agent.engine.correlation_state import CorrelationMetrics, CorrelationState
from agent.engine.ruleset import RuleSet
from agent.event import Event
from agent.priority import Priority
from agent.source import SourceSpec

if TYPE_CHECKING:
    from agent.engine.engine import EngineStats


class CorrelationSet:
    """Every correlation of one load with its state; `process` feeds it events in arrival order."""

    def __init__(self, correlations: list[CompiledCorrelation], *, hostname: str) -> None:
        self.correlations = correlations
        self._states = {c.name: CorrelationState(c, hostname=hostname) for c in correlations}
        self._state_of: dict[CompiledStep, CorrelationState] = {
            step: self._states[c.name] for c in correlations for step in c.steps}
        self._sources_of = {c.name: c.sources for c in correlations}
        #: Per source, the newest event time seen: the clock of the correlations that read that source.
        self._clock: dict[str, int] = {}
        self._seq = 0
        self._index: dict[str, RuleSet[CompiledStep]] = {}
        self._with_absence: dict[str, tuple[CorrelationState, ...]] = {}

    def rebuild(self, sources: dict[str, SourceSpec], *, min_priority: Priority) -> None:
        """Index the steps of enabled correlations at or above `min_priority`; states are kept as they are."""
        live = [c for c in self.correlations if c.enabled and c.priority <= min_priority]
        index: dict[str, RuleSet[CompiledStep]] = {}
        for name, spec in sources.items():
            steps = [step for c in live for step in c.steps if step.source == name]
            if not steps:
                continue
            index[name] = RuleSet.of_source(steps, spec)
        self._index = index
        self._with_absence = {
            name: tuple(self._states[c.name] for c in live if c.steps[-1].absent and name in c.sources)
            for name in index}

    def adopt(self, previous: CorrelationSet) -> None:
        """Keep the state of each correlation whose matching definition is unchanged since `previous`."""
        self._clock = dict(previous._clock)
        self._seq = previous._seq
        for name, state in self._states.items():
            old = previous._states.get(name)
            if old is not None and old.rule.signature == state.rule.signature:
                state.adopt(old)

    def process(self, event: Event, index_key: tuple[Any, ...], stats: EngineStats) -> list[Alert]:
        """Alerts of the correlations this event completes, and of absences its time confirms.

        `index_key` is the event's index values as the engine's rule set of its source computed them.
        """
        source = event.source
        index = self._index.get(source)
        if index is None:
            return []
        if event.ts_ns > self._clock.get(source, 0):
            self._clock[source] = event.ts_ns
        self._seq += 1
        alerts: list[Alert] = []
        for step in index.narrow(event, index_key)[1].rules:
            try:
                matched = step.predicate(event)
            except (TypeError, ValueError, AttributeError, KeyError, IndexError):
                # Same contract as rules: an extractor met an input shape it did not expect.
                stats.rule_errors += 1
                continue
            if matched:
                state = self._state_of[step]
                alerts += state.on_match(step, event, self._seq, self._clock_of(state))
        for state in self._with_absence[source]:
            if state.pending_count:
                alerts += state.due(self._clock_of(state))
        return alerts

    def _clock_of(self, state: CorrelationState) -> int:
        clock = self._clock
        sources = self._sources_of[state.rule.name]
        if len(sources) == 1:
            return clock[sources[0]]  # the source of the event being processed: always set
        return max([clock.get(source, 0) for source in sources])

    def metrics(self) -> list[CorrelationMetrics]:
        return [state.metrics() for state in self._states.values()]
