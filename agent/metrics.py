"""The agent's own metrics (`falco_agent_*`) and health: what the web server (agent.webserver) serves on
`/metrics` next to Falco's families (agent.falco_metrics), and on `/healthz`.

Nothing is pushed into Prometheus objects on the hot path. The runtime counts what the engine does not (alerts per
rule and priority, events per source, evaluation time) in a `PipelineTally` with plain dict increments, beats a
`Heartbeat` every loop turn, and gives the server one `collect` callable that builds a `MetricsSnapshot` at scrape
time from the engine stats, the tally, the event queue, each live source's `metrics()` and each output's
`counters()`. `health_problems` says what does not do its work now: the engine loop once its heartbeat is older
than `stale_after_s`, and each `HealthProblem` the runtime reports (failed, restarting or stuck sources, a dead
reload thread).

Exposed families (prefix `falco_agent_`): `events_total`, `alerts_total`, `rule_errors_total`,
`events_evaluated_total{source}`, `rule_alerts_total{rule,priority,source}`, `engine_eval_seconds_total`,
`event_queue_depth`, `event_queue_capacity`, `rules_loaded`, `heartbeat_age_seconds`,
`source_<key>{source,component}` for every numeric key a source reports, `output_alerts_total{output,result}`
(delivered, dropped, rejected), `output_queue_depth{output}`, `output_<key>_total{output}` for other output counters,
plus the standard `process_*` families.
"""
from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agent.alert import Alert

__all__ = ["HealthProblem", "Heartbeat", "MetricsSnapshot", "PipelineTally", "SourceMetrics", "agent_families",
           "build_snapshot", "health"]

_PREFIX = "falco_agent_"
_OUTPUT_RESULTS = ("delivered", "dropped", "rejected")
#: What a Prometheus metric or label name may not hold; replaced by "_".
NOT_NAME = re.compile(r"[^a-zA-Z0-9_]")


_CORRELATION_GAUGES = frozenset({"live_keys", "pending_absences"})

class Heartbeat:
    """When the engine loop last turned; `beat` is one float store, cheap enough for every loop turn."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last_s = clock()  # starting counts as alive

    def beat(self) -> None:
        self._last_s = self._clock()

    def age_s(self) -> float:
        return self._clock() - self._last_s


@dataclass(frozen=True, slots=True)
class HealthProblem:
    """A part of the agent that does not do its work now (`part`: "engine_loop", "source k8s_audit (AuditWebhook)"
    ...) and why, with what to do where there is something to do."""

    part: str
    reason: str


class PipelineTally:
    """Counts kept by the engine thread and read at scrape time: alerts by rule, events by source, evaluation time.

    Only the engine thread writes; a scrape copies the dicts (`dict.copy` runs without releasing the GIL).
    """

    def __init__(self) -> None:
        self._alerts: dict[tuple[str, str, str], int] = {}
        self._events: dict[str, int] = {}
        self.eval_s = 0.0

    def count_alert(self, alert: Alert) -> None:
        key = (alert.rule, alert.priority.label, alert.source)
        self._alerts[key] = self._alerts.get(key, 0) + 1

    def count_events(self, source: str, count: int) -> None:
        self._events[source] = self._events.get(source, 0) + count

    def add_eval_time(self, seconds: float) -> None:
        self.eval_s += seconds

    def alerts(self) -> dict[tuple[str, str, str], int]:
        """(rule, priority label, source) → alerts."""
        return self._alerts.copy()

    def events(self) -> dict[str, int]:
        """source → events evaluated."""
        return self._events.copy()


@dataclass(frozen=True, slots=True)
class SourceMetrics:
    """What one live source reported; `component` tells apart two sources of the same name (directory and S3)."""

    source: str
    component: str
    values: Mapping[str, Any]


@dataclass(slots=True)
class MetricsSnapshot:
    """Everything one scrape shows, built by the runtime's `collect` callable."""

    events_total: int = 0
    alerts_total: int = 0
    rule_errors_total: int = 0
    rules_loaded: int = 0
    events_by_source: dict[str, int] = field(default_factory=dict)
    alerts_by_rule: dict[tuple[str, str, str], int] = field(default_factory=dict)
    eval_seconds_total: float = 0.0
    queue_depth: int = 0
    queue_capacity: int = 0
    sources: list[SourceMetrics] = field(default_factory=list)
    outputs: dict[str, Mapping[str, int]] = field(default_factory=dict)
    #: Per correlation rule: its gauges and counters (see Engine.correlation_metrics).
    correlations: dict[str, Mapping[str, int]] = field(default_factory=dict)


class EngineStatsLike(Protocol):
    events: int
    alerts: int
    rule_errors: int


class QueueLike(Protocol):
    capacity: int

    @property
    def depth(self) -> int: ...


class SourceLike(Protocol):
    name: str

    def metrics(self) -> dict[str, Any]: ...


@runtime_checkable
class CountingOutput(Protocol):
    name: str

    def counters(self) -> dict[str, int]: ...


def build_snapshot(*, engine_stats: EngineStatsLike, tally: PipelineTally, queue: QueueLike,
                   sources: Iterable[SourceLike], outputs: Iterable[object], rules_loaded: int = 0,
                   correlations: Iterable[Any] = ()) -> MetricsSnapshot:
    """The snapshot from the runtime's parts; outputs without `counters()` are left out."""
    counting = [o for o in outputs if isinstance(o, CountingOutput)]
    names = [o.name for o in counting]
    return MetricsSnapshot(
        events_total=engine_stats.events, alerts_total=engine_stats.alerts, rule_errors_total=engine_stats.rule_errors,
        rules_loaded=rules_loaded, events_by_source=tally.events(), alerts_by_rule=tally.alerts(),
        eval_seconds_total=tally.eval_s, queue_depth=queue.depth, queue_capacity=queue.capacity,
        sources=[SourceMetrics(s.name, type(s).__name__, s.metrics()) for s in sources],
        # Two outputs of one kind are told apart by their position among those of that kind.
        outputs={(n if names.count(n) == 1 else f"{n}_{names[:i].count(n)}"): o.counters()
                 for i, (n, o) in enumerate(zip(names, counting, strict=True))},
        correlations={c.rule: {k: v for k, v in asdict(c).items() if k != "rule"} for c in correlations},
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return None


def health(heartbeat: Heartbeat, *, stale_after_s: float,
           problems: Callable[[], list[HealthProblem]]) -> dict[str, Any]:
    """The `/healthz` document: `status` "ok" (Falco's answer, of which this is a superset) or "unhealthy" with each
    problem; a `problems` callable that raises is itself a problem, not a reason to stop answering."""
    age_s = heartbeat.age_s()
    found = []
    if age_s > stale_after_s:
        found.append(HealthProblem("engine_loop", f"has not turned for {age_s:.1f} s (more than {stale_after_s:g} "
                                                  "s): stuck evaluating a batch or handing alerts over"))
    try:
        found += problems()
    except Exception as exc:
        found.append(HealthProblem("health_check", f"failed: {type(exc).__name__}: {exc}"))
    return {"status": "unhealthy" if found else "ok", "heartbeat_age_s": round(age_s, 3),
            "stale_after_s": stale_after_s, "problems": [asdict(p) for p in found]}


def agent_families(snap: MetricsSnapshot, heartbeat: Heartbeat) -> Iterator[Metric]:
    """The `falco_agent_*` families of one scrape's snapshot."""
    yield CounterMetricFamily(_PREFIX + "events", "Events evaluated by the engine.", snap.events_total)
    yield CounterMetricFamily(_PREFIX + "alerts", "Alerts raised by the engine.", snap.alerts_total)
    yield CounterMetricFamily(_PREFIX + "rule_errors", "Rule evaluations that failed.", snap.rule_errors_total)
    yield GaugeMetricFamily(_PREFIX + "rules_loaded", "Rules loaded.", snap.rules_loaded)
    events = CounterMetricFamily(_PREFIX + "events_evaluated", "Events evaluated, by source.", labels=["source"])
    for source, count in sorted(snap.events_by_source.items()):
        events.add_metric([source], count)
    yield events
    alerts = CounterMetricFamily(_PREFIX + "rule_alerts", "Alerts by rule, priority and source.",
                                 labels=["rule", "priority", "source"])
    for key, count in sorted(snap.alerts_by_rule.items()):
        alerts.add_metric(list(key), count)
    yield alerts
    yield CounterMetricFamily(_PREFIX + "engine_eval_seconds", "Wall time spent evaluating event batches.",
                              snap.eval_seconds_total)
    yield GaugeMetricFamily(_PREFIX + "event_queue_depth", "Events queued for the engine.", snap.queue_depth)
    yield GaugeMetricFamily(_PREFIX + "event_queue_capacity", "Capacity of the engine queue, in events.",
                            snap.queue_capacity)
    yield GaugeMetricFamily(_PREFIX + "heartbeat_age_seconds", "Seconds since the engine loop last turned.",
                            heartbeat.age_s())
    yield from _source_families(snap.sources)
    yield from _output_families(snap.outputs)
    yield from _correlation_families(snap.correlations)


def _correlation_families(correlations: Mapping[str, Mapping[str, int]]) -> Iterator[Metric]:
    families: dict[str, Metric] = {}
    for rule, values in sorted(correlations.items()):
        for key, value in sorted(values.items()):
            name = _PREFIX + "correlation_" + key
            if name not in families:
                kind = GaugeMetricFamily if key in _CORRELATION_GAUGES else CounterMetricFamily
                families[name] = kind(name, f"Correlation rule state: {key.replace('_', ' ')}.", labels=["rule"])
            families[name].add_metric([rule], value)  # type: ignore[attr-defined]
    yield from families.values()


def _source_families(sources: list[SourceMetrics]) -> Iterator[Metric]:
    families: dict[str, GaugeMetricFamily] = {}
    for entry in sources:
        for key, raw in sorted(entry.values.items()):
            value = _number(raw)
            if value is None:
                continue
            name = _PREFIX + "source_" + NOT_NAME.sub("_", key)
            if name not in families:
                families[name] = GaugeMetricFamily(name, f"Reported by the source as '{key}'.",
                                                   labels=["source", "component"])
            families[name].add_metric([entry.source, entry.component], value)
    yield from families.values()


def _output_families(outputs: Mapping[str, Mapping[str, int]]) -> Iterator[Metric]:
    results = CounterMetricFamily(_PREFIX + "output_alerts", "Alerts an output delivered, dropped or rejected.",
                                  labels=["output", "result"])
    depth = GaugeMetricFamily(_PREFIX + "output_queue_depth", "Alerts waiting in an output's queue.",
                              labels=["output"])
    others: dict[str, CounterMetricFamily] = {}
    for output, counters in sorted(outputs.items()):
        for key, value in sorted(counters.items()):
            if key in _OUTPUT_RESULTS:
                results.add_metric([output, key], value)
            elif key == "queue_depth":
                depth.add_metric([output], value)
            else:
                name = _PREFIX + "output_" + NOT_NAME.sub("_", key)
                family = others.setdefault(name, CounterMetricFamily(name, f"Output counter '{key}'.",
                                                                     labels=["output"]))
                family.add_metric([output], value)
    yield results
    yield depth
    yield from others.values()
