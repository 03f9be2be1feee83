"""The operator's view of a running agent: Prometheus `/metrics` and `/healthz` over HTTP.

Nothing is pushed into Prometheus objects on the hot path. The runtime counts what the engine does not (alerts per
rule and priority, events per source, evaluation time) in a `PipelineTally` with plain dict increments, beats a
`Heartbeat` every loop turn, and gives the server one `collect` callable that builds a `MetricsSnapshot` at scrape
time from the engine stats, the tally, the event queue, each live source's `metrics()` and each output's
`counters()`. `/healthz` answers 200 while every part does its work, and 503 naming each part that does not (a JSON
`problems` list of `{"part", "reason"}`): the engine loop once its heartbeat is older than `stale_after_s`, and each
`HealthProblem` the runtime's `problems` callable reports (failed, restarting or stuck sources, a dead reload thread).

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
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, runtime_checkable

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.address import parse_host_port
from agent.alert import Alert
from agent.errors import ConfigError

__all__ = ["HealthProblem", "Heartbeat", "MetricsServer", "MetricsSnapshot", "PipelineTally", "SourceMetrics",
           "build_snapshot", "parse_address"]

log = structlog.get_logger(__name__)

_PREFIX = "falco_agent_"
_OUTPUT_RESULTS = ("delivered", "dropped", "rejected")
_NOT_NAME = re.compile(r"[^a-zA-Z0-9_]")


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


class _SnapshotCollector(Collector):
    """Turns the snapshot of each scrape into metric families."""

    def __init__(self, collect: Callable[[], MetricsSnapshot], heartbeat: Heartbeat) -> None:
        self._collect = collect
        self._heartbeat = heartbeat

    def collect(self) -> Iterator[Metric]:
        snap = self._collect()
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
                                self._heartbeat.age_s())
        yield from self._source_families(snap.sources)
        yield from self._output_families(snap.outputs)
        yield from self._correlation_families(snap.correlations)

    @staticmethod
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

    @staticmethod
    def _source_families(sources: list[SourceMetrics]) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        for entry in sources:
            for key, raw in sorted(entry.values.items()):
                value = _number(raw)
                if value is None:
                    continue
                name = _PREFIX + "source_" + _NOT_NAME.sub("_", key)
                if name not in families:
                    families[name] = GaugeMetricFamily(name, f"Reported by the source as '{key}'.",
                                                       labels=["source", "component"])
                families[name].add_metric([entry.source, entry.component], value)
        yield from families.values()

    @staticmethod
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
                    name = _PREFIX + "output_" + _NOT_NAME.sub("_", key)
                    family = others.setdefault(name, CounterMetricFamily(name, f"Output counter '{key}'.",
                                                                         labels=["output"]))
                    family.add_metric([output], value)
        yield results
        yield depth
        yield from others.values()


def parse_address(address: str) -> tuple[str, int]:
    """The metrics listen address; ConfigError naming the value when it is not host:port."""
    try:
        return parse_host_port(address)
    except ValueError as exc:
        raise ConfigError(f"metrics.address: {exc}") from None


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._metrics()
        elif path == "/healthz":
            self._healthz()
        else:
            self._reply(HTTPStatus.NOT_FOUND, b'{"error": "not found; try /metrics or /healthz"}', "application/json")

    def _metrics(self) -> None:
        try:
            body = generate_latest(self.server.registry)
        except Exception as exc:  # a collect callable or a source's metrics() failed: answer 500, keep serving
            log.error("metrics_collect_failed", error=f"{type(exc).__name__}: {exc}")
            self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, b"metrics collection failed\n", "text/plain")
            return
        self._reply(HTTPStatus.OK, body, CONTENT_TYPE_LATEST)

    def _healthz(self) -> None:
        age_s = self.server.heartbeat.age_s()
        stale_after_s = self.server.stale_after_s
        problems = []
        if age_s > stale_after_s:
            problems.append(HealthProblem("engine_loop", f"has not turned for {age_s:.1f} s (more than "
                                                         f"{stale_after_s:g} s): stuck evaluating a batch or handing "
                                                         "alerts over"))
        try:
            problems += self.server.problems()
        except Exception as exc:  # a check that cannot tell is a problem to report, not a reason to stop answering
            problems.append(HealthProblem("health_check", f"failed: {type(exc).__name__}: {exc}"))
        body = orjson.dumps({"status": "unhealthy" if problems else "ok", "heartbeat_age_s": round(age_s, 3),
                             "stale_after_s": stale_after_s, "problems": [asdict(p) for p in problems]})
        self._reply(HTTPStatus.SERVICE_UNAVAILABLE if problems else HTTPStatus.OK, body, "application/json")

    def _reply(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics_request", line=format % args)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, *, registry: CollectorRegistry, heartbeat: Heartbeat,
                 stale_after_s: float, problems: Callable[[], list[HealthProblem]]) -> None:
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.registry = registry
        self.heartbeat = heartbeat
        self.stale_after_s = stale_after_s
        self.problems = problems
        super().__init__((host, port), _Handler)


class MetricsServer:
    """Serves `/metrics` and `/healthz` from its own threads; `collect` runs once per scrape and `problems` once per
    health check, on a server thread."""

    def __init__(self, address: str, collect: Callable[[], MetricsSnapshot], *, heartbeat: Heartbeat,
                 stale_after_s: float, problems: Callable[[], list[HealthProblem]] = list) -> None:
        self.host, self._port = parse_address(address)
        self._collect = collect
        self._heartbeat = heartbeat
        self._stale_after_s = stale_after_s
        self._problems = problems
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when the address said port 0)."""
        return self._server.server_address[1] if self._server is not None else self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Bind and serve; raises ConfigError naming the address when it cannot bind."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_SnapshotCollector(self._collect, self._heartbeat))
        ProcessCollector(registry=registry)
        try:
            self._server = _HttpServer(self.host, self._port, registry=registry, heartbeat=self._heartbeat,
                                       stale_after_s=self._stale_after_s, problems=self._problems)
        except OSError as exc:
            raise ConfigError(f"metrics.address: cannot listen on {self.host}:{self._port}: {exc.strerror}; free the "
                              "address, change metrics.address or set metrics.enabled=false") from None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="metrics-http", daemon=True)
        self._thread.start()
        log.info("metrics_listening", url=f"{self.url}/metrics")

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None
