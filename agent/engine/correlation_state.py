"""The state of one correlation: step matches per key, chains found in event-time order, absences, limits.

Every step match is kept per key, sorted by event time, as `(ts_ns, seq, captures, distinct value)`; `seq`
is the engine's arrival number of the event and breaks ties, so one event never fills two steps of a chain.
A match completes a chain when, with it, every step has its matches in order and the first and last lie within
the window, whatever order they arrived in. Matches used by a chain are consumed, so each one counts once.

Time is event time. The rule's clock is the newest event time seen on its sources; an event older than the
clock minus the lateness tolerance is late: it is counted and left out, since state it could join may be gone.
A match stays as long as a chain could still use it: `lateness + window` for a step that later steps follow,
`lateness` for the last one (only a late earlier step can still join it). Keys hold no more than `max_keys`;
past that, the least recently updated key is dropped and counted.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from agent.alert import Alert
from agent.engine.correlation_compiler import CompiledCorrelation, CompiledStep
from agent.engine.output_format import alert_for, render_value
from agent.event import Event

Entry = tuple[int, int, tuple[Any, ...], Any]
Group = tuple[int, int]
_ORDER = itemgetter(0, 1)
#: Values a `new_value` step remembers per key; past it the least recently seen is forgotten.
MAX_VALUES_PER_KEY = 256
#: Every this many matches, up to this many keys are examined for expiry: bounded, amortised work.
_SWEEP_EVERY = 8


@dataclass(frozen=True, slots=True)
class CorrelationMetrics:
    """Counters and gauges of one correlation, for the metrics endpoint (see `Engine.correlation_metrics`).

    Gauges: `live_keys` (keys holding state), `pending_absences` (chains waiting for their absence to be
    confirmed). Counters: `step_matches` (step conditions matched), `matches` (alerts raised),
    `evicted_expired` (keys dropped holding nothing usable: expired or used up), `evicted_limit` (keys, or
    `new_value` histories, dropped past `max_keys`), `entries_shed` (matches past the per-key cap, values past
    a history's), `late_events` (step matches older than the clock minus the lateness, left out).
    """

    rule: str
    live_keys: int
    pending_absences: int
    step_matches: int
    matches: int
    evicted_expired: int
    evicted_limit: int
    entries_shed: int
    late_events: int


@dataclass(slots=True)
class _Counters:
    step_matches: int = 0
    matches: int = 0
    evicted_expired: int = 0
    evicted_limit: int = 0
    entries_shed: int = 0
    late_events: int = 0


class _Key:
    """One key's matches per step and its chains waiting for an absence to be confirmed."""

    __slots__ = ("pending", "steps")

    def __init__(self, width: int) -> None:
        self.steps: list[list[Entry]] = [[] for _ in range(width)]
        #: (deadline_ns, chain end ts_ns, seq, captures per step)
        self.pending: list[tuple[int, int, int, tuple[Any, ...]]] = []


class CorrelationState:
    """Matches steps of one compiled correlation into chains; not thread-safe (the engine loop owns it)."""

    def __init__(self, rule: CompiledCorrelation, *, hostname: str) -> None:
        self.rule = rule
        self.hostname = hostname
        steps = rule.steps
        self._has_absence = steps[-1].absent
        self._chain_width = len(steps) - 1 if self._has_absence else len(steps)
        last = self._chain_width - 1
        self._reach = [rule.window_ns if i < last else 0 for i in range(len(steps))]
        #: How far behind the clock a step's matches are kept.
        self._keep_ns = [rule.lateness_ns + reach for reach in self._reach]
        self._cap = [4 * step.count + 12 for step in steps]
        #: Per step, the other steps of the chain: a chain search needs every one of them to hold a match.
        self._others = [tuple(j for j in range(self._chain_width) if j != i) for i in range(len(steps))]
        self._keys: OrderedDict[tuple[Any, ...], _Key] = OrderedDict()
        self._history: list[OrderedDict[tuple[Any, ...], dict[Any, int]]] = [OrderedDict() for _ in steps]
        self._deadlines: list[tuple[int, int, tuple[Any, ...]]] = []
        #: Chains waiting for their absence to be confirmed (a gauge; zero lets the engine skip `due`).
        self.pending_count = 0
        self._until_sweep = _SWEEP_EVERY
        self.counts = _Counters()

    def adopt(self, previous: CorrelationState) -> None:
        """Take over the keys, history and counters of the same correlation from an earlier load."""
        self._keys, self._history, self._deadlines = previous._keys, previous._history, previous._deadlines
        self.pending_count = previous.pending_count
        self.counts = previous.counts

    def metrics(self) -> CorrelationMetrics:
        c = self.counts
        return CorrelationMetrics(self.rule.name, len(self._keys), self.pending_count, c.step_matches, c.matches,
                                  c.evicted_expired, c.evicted_limit, c.entries_shed, c.late_events)

    # ----- matching ---------------------------------------------------------------------------
    def on_match(self, step: CompiledStep, event: Event, seq: int, clock_ns: int) -> list[Alert]:
        """Record that `step`'s condition matched `event`; the alerts of the chains it completes."""
        counts = self.counts
        counts.step_matches += 1
        ts = event.ts_ns
        if ts < clock_ns - self.rule.lateness_ns:
            counts.late_events += 1
            if step.new_value is not None:
                self._is_new(step, event, ts)  # too late to join a chain, not too late to have been seen
            return []
        # The history check comes first: on a step that learns from every call, most matches stop here.
        if step.new_value is not None and not self._is_new(step, event, ts):
            return []
        key = _values(step.key, event)
        distinct = step.distinct(event) if step.distinct is not None else None
        if key is None or (step.distinct is not None and distinct is None):
            return []
        state = self._touch(key)
        entries = state.steps[step.position]
        # Only this step's list is pruned here: stale matches of other steps can never pass the window
        # check with a match that is not late, so they cost memory (bounded by the cap), not correctness.
        _drop_before(entries, clock_ns - self._keep_ns[step.position])
        entry = (ts, seq, tuple([get(event) for get in step.captures]), distinct)
        if not entries or entries[-1] < entry:  # arrival in event-time order, the common case
            at = len(entries)
            entries.append(entry)
        else:
            at = bisect_right(entries, (ts, seq), key=_ORDER)
            entries.insert(at, entry)
        if len(entries) > self._cap[step.position]:
            del entries[0]
            counts.entries_shed += 1
            at -= 1
        alerts: list[Alert] = []
        if step.absent:
            self._cancel(state, ts)
        elif at >= 0:
            alerts = self._complete(state, key, step, at, event)
        self._until_sweep -= 1
        if not self._until_sweep:
            self._until_sweep = _SWEEP_EVERY
            self._sweep(clock_ns)
        return alerts

    def due(self, clock_ns: int) -> list[Alert]:
        """Alerts of absences confirmed by the clock: nothing came within their time, late events included."""
        watermark = clock_ns - self.rule.lateness_ns
        alerts = []
        while self._deadlines and self._deadlines[0][0] <= watermark:
            deadline, seq, key = heapq.heappop(self._deadlines)
            state = self._keys.get(key)
            if state is None:
                continue  # the key was evicted (and counted) since
            for i, pending in enumerate(state.pending):
                if pending[2] == seq:
                    del state.pending[i]
                    self.pending_count -= 1
                    self.counts.matches += 1
                    alerts.append(self._alert(pending[3], deadline, ""))
                    break
        return alerts

    def _complete(self, state: _Key, key: tuple[Any, ...], step: CompiledStep, at: int, event: Event) -> list[Alert]:
        lists = state.steps
        if len(lists[step.position]) < step.count or not all([lists[j] for j in self._others[step.position]]):
            return []  # most matches: the chain is still missing a step
        groups = self._find_chain(lists, step, at)
        if groups is None:
            return []
        captures = tuple(lists[j][end][2] for j, (_start, end) in enumerate(groups))
        end_ts, end_seq = lists[len(groups) - 1][groups[-1][1]][:2]
        for j, (start, end) in enumerate(groups):
            del lists[j][start:end + 1]
        if not self._has_absence:
            self.counts.matches += 1
            return [self._alert(captures, end_ts, event.hostname)]
        absent = self.rule.steps[-1]
        deadline = end_ts + absent.within_ns
        if any(end_ts <= entry[0] <= deadline for entry in lists[-1]):
            return []
        state.pending.append((deadline, end_ts, end_seq, captures))
        self.pending_count += 1
        heapq.heappush(self._deadlines, (deadline, end_seq, key))
        return []

    def _cancel(self, state: _Key, ts: int) -> None:
        kept = [p for p in state.pending if not p[1] <= ts <= p[0]]
        self.pending_count -= len(state.pending) - len(kept)
        state.pending = kept

    def _find_chain(self, lists: list[list[Entry]], step: CompiledStep, at: int) -> list[Group] | None:
        """Groups (first, last index) per step forming a chain through the new entry, or None.

        Steps before the new entry's step take their latest matches before it and steps after it their
        earliest after it: that gives the shortest chain holding the new entry, so no shorter one is missed.
        """
        steps = self.rule.steps
        width = self._chain_width
        position = step.position
        for group in _groups_around(lists[position], at, step, self.rule.window_ns):
            groups: list[Group | None] = [None] * width
            groups[position] = group
            bound = lists[position][group[0]]
            for j in range(position - 1, -1, -1):
                found = _pick(lists[j], bound, steps[j], before=True)
                if found is None:
                    break
                groups[j], bound = found, lists[j][found[0]]
            else:
                first_ts = bound[0]
                bound = lists[position][group[1]]
                for j in range(position + 1, width):
                    found = _pick(lists[j], bound, steps[j], before=False)
                    if found is None:
                        break
                    groups[j], bound = found, lists[j][found[1]]
                else:
                    if bound[0] - first_ts <= self.rule.window_ns:
                        return groups  # type: ignore[return-value]
        return None

    # ----- state upkeep -----------------------------------------------------------------------
    def _touch(self, key: tuple[Any, ...]) -> _Key:
        state = self._keys.get(key)
        if state is not None:
            self._keys.move_to_end(key)
            return state
        if len(self._keys) >= self.rule.max_keys:
            _, dropped = self._keys.popitem(last=False)
            self.pending_count -= len(dropped.pending)
            self.counts.evicted_limit += 1
        state = self._keys[key] = _Key(len(self.rule.steps))
        return state

    def _prune(self, state: _Key, clock_ns: int) -> bool:
        """Drop matches no chain can use any more; True when the key holds nothing."""
        horizon = clock_ns - self.rule.lateness_ns
        empty = not state.pending
        for entries, reach in zip(state.steps, self._reach, strict=True):
            _drop_before(entries, horizon - reach)
            empty = empty and not entries
        return empty

    def _sweep(self, clock_ns: int) -> None:
        """Expire idle keys from the least recently updated end; stop at the first still in use."""
        for _ in range(_SWEEP_EVERY):
            if not self._keys:
                return
            key, state = next(iter(self._keys.items()))
            if not self._prune(state, clock_ns):
                return
            del self._keys[key]
            self.counts.evicted_expired += 1

    def _is_new(self, step: CompiledStep, event: Event, ts: int) -> bool:
        check = step.new_value
        assert check is not None
        per = _values(check.per, event)
        value = check.get(event)
        if per is None or value is None:
            return False
        history = self._history[step.position]
        seen = history.get(per)
        if seen is None:
            if len(history) >= self.rule.max_keys:
                history.popitem(last=False)
                self.counts.evicted_limit += 1
            seen = history[per] = {}
        else:
            history.move_to_end(per)
        last = seen.get(value)
        seen[value] = ts if last is None else max(last, ts)
        if len(seen) > MAX_VALUES_PER_KEY:
            del seen[min(seen, key=seen.__getitem__)]
            self.counts.entries_shed += 1
        return last is None or ts - last > check.history_ns

    def _alert(self, captures: tuple[Any, ...], ts_ns: int, hostname: str) -> Alert:
        source = self.rule.steps[self._chain_width - 1].source
        return alert_for(self.rule, Event(source, ts_ns, captures, hostname=hostname), hostname=self.hostname)


def _values(getters: tuple[Any, ...], event: Event) -> tuple[Any, ...] | None:
    """Key values, as text where sources differ in type (an IP object and an IP string join); None if any is missing."""
    values = tuple([get(event) for get in getters])
    for value in values:
        if value.__class__ is not str:
            return None if None in values else tuple([v if v.__class__ is str else render_value(v) for v in values])
    return values


def _drop_before(entries: list[Entry], cutoff_ns: int) -> None:
    """Remove the entries older than `cutoff_ns` from the front of a time-sorted list."""
    if entries and entries[0][0] < cutoff_ns:
        drop = 1
        while drop < len(entries) and entries[drop][0] < cutoff_ns:
            drop += 1
        del entries[:drop]


def _groups_around(entries: list[Entry], at: int, step: CompiledStep, window_ns: int) -> Iterator[Group]:
    """Runs of consecutive entries holding entry `at` that satisfy the step's count (or distinct count)."""
    count = step.count
    if step.distinct is None:
        for start in range(max(0, at - count + 1), min(at, len(entries) - count) + 1):
            yield start, start + count - 1
        return
    for start in range(at, -1, -1):
        if entries[at][0] - entries[start][0] > window_ns:
            return
        seen = set()
        for end in range(start, len(entries)):
            seen.add(entries[end][3])
            if len(seen) >= count:
                yield start, max(end, at)
                break


def _pick(entries: list[Entry], bound: Entry, step: CompiledStep, *, before: bool) -> Group | None:
    """The latest group of matches before `bound` (or the earliest after it) that satisfies the step's count."""
    count = step.count
    if before:
        last = bisect_left(entries, bound[:2], key=_ORDER) - 1
        indexes = range(last, -1, -1)
    else:
        first = bisect_right(entries, bound[:2], key=_ORDER)
        indexes = range(first, len(entries))
    if not indexes:
        return None
    if step.distinct is None:
        if len(indexes) < count:
            return None
        other = indexes[count - 1]
    else:
        seen = set()
        for other in indexes:
            seen.add(entries[other][3])
            if len(seen) >= count:
                break
        else:
            return None
    return (other, indexes[0]) if before else (indexes[0], other)
