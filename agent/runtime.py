"""Live mode: reads the configuration, starts the live sources, runs the engine loop, stops without loss.

Sources feed one bounded EventQueue; the main thread takes batches, evaluates them and hands the
alerts to the outputs, then acknowledges each batch so that sources may checkpoint. SIGTERM and
SIGINT stop the sources first, then drain what was queued, flush the outputs and exit 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import structlog

from agent.builtin_sources import live_sources, new_engine
from agent.config import AgentConfig, load_config
from agent.config.schema import GrpcConfig
from agent.engine.engine import Engine
from agent.engine.requirements import ENGINE_VERSION
from agent.errors import AgentError, ConfigError
from agent.event_queue import EventQueue
from agent.grpc.server import AlertServer
from agent.logging import configure_logging
from agent.metrics import Heartbeat, MetricsServer, PipelineTally, build_snapshot
from agent.outputs.base import Output
from agent.outputs.file import FileOutput
from agent.outputs.http import HttpOutput
from agent.outputs.program import ProgramOutput
from agent.outputs.stdout import StdoutOutput
from agent.priority import Priority
from agent.source import LiveSource

log = structlog.get_logger(__name__)
DEFAULT_RULES_DIR = Path(__file__).resolve().parents[1] / "rules"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
_POLL_S = 0.2


def rules_paths(entries: Iterable[str]) -> list[Path]:
    """Files as given; a directory stands for its `*.yaml` files in name order."""
    out: list[Path] = []
    for entry in entries:
        path = Path(entry)
        out += sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    return out


class Stoppable(Protocol):
    def stop(self) -> None: ...


class AgentRuntime:
    """The running agent: sources → queue → engine → outputs."""

    def __init__(self, engine: Engine, sources: list[LiveSource], outputs: list[Output], queue: EventQueue,
                 *, servers: list[Stoppable] | None = None) -> None:
        self.engine = engine
        self.sources = sources
        self.outputs = outputs
        self.queue = queue
        self.servers = servers or []
        self.heartbeat = Heartbeat()
        self.tally = PipelineTally()
        self._stop = threading.Event()
        self.running: list[LiveSource] = []

    def start_sources(self) -> None:
        """Start every source; one that cannot start is reported and the others run."""
        for source in self.sources:
            try:
                source.start(self.queue)
            except AgentError as exc:
                log.error("source_start_failed", source=source.name, error=str(exc))
                continue
            self.running.append(source)

    def request_stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Evaluate batches until asked to stop, then drain: every accepted event reaches the outputs."""
        while not self._stop.is_set():
            self.heartbeat.beat()
            batch = self.queue.get(timeout_s=_POLL_S)
            if batch is not None:
                self._process(batch.events, batch.on_done)
        for source in self.running:
            source.stop()
        self.queue.close()
        while (batch := self.queue.get(timeout_s=0)) is not None:
            self._process(batch.events, batch.on_done)
        for output in self.outputs:
            output.close()
        for server in self.servers:
            server.stop()
        log.info("agent_stopped", events=self.engine.stats.events, alerts=self.engine.stats.alerts)

    def reopen_outputs(self) -> None:
        """Ask file outputs to reopen their files (logrotate sends SIGUSR1)."""
        for output in self.outputs:
            reopen = getattr(output, "reopen", None)
            if reopen is not None:
                reopen()

    def _process(self, events: Any, on_done: Any) -> None:
        process = self.engine.process
        count_alert = self.tally.count_alert
        started = time.perf_counter()
        for event in events:
            for alert in process(event):
                count_alert(alert)
                for output in self.outputs:
                    output.emit(alert)
        self.tally.add_eval_time(time.perf_counter() - started)
        if events:
            self.tally.count_events(events[0].source, len(events))
        for output in self.outputs:
            output.flush()
        if on_done is not None:
            on_done()


def build_runtime(config: AgentConfig, *, extra_rules: list[str], only_sources: list[str],
                  json_alerts: bool) -> AgentRuntime:
    """Engine with rules loaded, the enabled sources and the outputs, from the configuration."""
    engine = new_engine(rule_matching=config.rule_matching, min_priority=Priority.parse(config.priority),
                        hostname=config.hostname)
    files = rules_paths([*config.rules_files, *extra_rules] or [str(DEFAULT_RULES_DIR)])
    result = engine.load_rules_files(files)
    for problem in result.problems:
        (log.error if problem.is_error else log.warning)("rules_problem", problem=problem.as_text())
    if not result.successful:
        raise ConfigError(f"rules did not load ({len(result.errors)} errors); fix them and start again")
    log.info("rules_loaded", files=[str(f) for f in files], rules=len(engine.rules))
    sources = [s for s in live_sources(config, hostname=engine.hostname) if not only_sources or s.name in only_sources]
    outputs = build_outputs(config, json_alerts=json_alerts)
    servers: list[Stoppable] = []
    server = start_grpc_server(config.grpc)
    if server is not None:
        outputs.append(server.output)
        servers.append(server)
    return AgentRuntime(engine, sources, outputs, EventQueue(config.queue_capacity_events), servers=servers)


def build_outputs(config: AgentConfig, *, json_alerts: bool) -> list[Output]:
    """The alert outputs the configuration enables (the gRPC server adds its own)."""
    iso = config.time_format_iso_8601
    wanted = config.outputs
    outputs: list[Output] = []
    if wanted.stdout.enabled:
        outputs.append(StdoutOutput(as_json=json_alerts or wanted.stdout.format == "json", iso8601=iso))
    if wanted.file.enabled:
        outputs.append(FileOutput(wanted.file.path, as_json=wanted.file.format == "json", iso8601=iso))
    if wanted.http.enabled:
        http = wanted.http
        headers = {}
        for header in http.headers:
            name, sep, value = header.partition(":")
            if not sep:
                raise ConfigError(f"outputs.http.headers: '{header}' must look like 'Name: value'")
            headers[name.strip()] = value.strip()
        outputs.append(HttpOutput(http.url, iso8601=iso, timeout_s=http.timeout_s, max_queue=http.max_queue,
                                  batch=http.batch, close_timeout_s=http.close_timeout_s, headers=headers,
                                  verify_tls=http.verify_tls, ca_file=http.ca_file, client_cert=http.client_cert,
                                  client_key=http.client_key))
    if wanted.program.enabled:
        program = wanted.program
        outputs.append(ProgramOutput(program.command, as_json=program.format == "json", iso8601=iso,
                                     keep_alive=program.keep_alive, max_queue=program.max_queue,
                                     close_timeout_s=program.close_timeout_s))
    return outputs


def start_metrics_server(config: AgentConfig, runtime: AgentRuntime) -> MetricsServer | None:
    """Prometheus /metrics and /healthz over the runtime's parts; None when disabled or it cannot listen."""
    if not config.metrics.enabled:
        return None

    def collect() -> Any:
        return build_snapshot(engine_stats=runtime.engine.stats, tally=runtime.tally, queue=runtime.queue,
                              sources=runtime.running, outputs=runtime.outputs, rules_loaded=len(runtime.engine.rules))

    try:
        server = MetricsServer(config.metrics.address, collect, heartbeat=runtime.heartbeat,
                               stale_after_s=config.metrics.stale_after_s)
        server.start()
    except ConfigError as exc:
        log.error("metrics_server_failed", error=str(exc), hint="change metrics.address or set metrics.enabled=false")
        return None
    return server


def start_grpc_server(config: GrpcConfig) -> AlertServer | None:
    """The alert API server, started; None (and the reason logged) when it is disabled or cannot start."""
    if not config.enabled:
        return None
    tls = config.tls
    try:
        server = AlertServer(
            spool_dir=config.spool_dir, socket_path=config.socket_path or None, address=config.address or None,
            tls_cert=tls.cert_file if tls else None, tls_key=tls.key_file if tls else None,
            tls_client_ca=(tls.client_ca_file or None) if tls else None,
            allow_insecure_tcp=config.allow_insecure_tcp, max_subscribers=config.max_subscribers,
            subscriber_queue_size=config.subscriber_queue_size, spool_max_bytes=config.spool_max_bytes,
            spool_max_age_s=config.spool_max_age_s, engine_version=ENGINE_VERSION)
        server.start()
    except (AgentError, OSError) as exc:
        log.error("grpc_server_failed", error=str(exc), hint="fix the grpc section or set grpc.enabled=false")
        return None
    log.info("grpc_listening", socket=config.socket_path, address=config.address or None)
    return server


def run_agent(args: argparse.Namespace) -> int:
    """`falco-agent [-c agent.yaml] ...`: run until SIGTERM or SIGINT."""
    try:
        config = load_config(args.config, overrides=args.option)
    except ConfigError as exc:
        print(f"falco-agent: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    log_format = config.logging.format
    configure_logging(level=config.logging.level, json=None if log_format == "auto" else log_format == "json")
    try:
        runtime = build_runtime(config, extra_rules=args.rules, only_sources=args.enable_source,
                                json_alerts=args.json)
    except ConfigError as exc:
        print(f"falco-agent: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    runtime.start_sources()
    if not runtime.running:
        print("falco-agent: no source could start (see the errors above); nothing to do", file=sys.stderr)
        for server in runtime.servers:
            server.stop()
        return EXIT_FAILURE
    metrics = start_metrics_server(config, runtime)
    if metrics is not None:
        runtime.servers.append(metrics)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: runtime.request_stop())
    signal.signal(signal.SIGUSR1, lambda *_: runtime.reopen_outputs())
    log.info("agent_started", sources=[s.name for s in runtime.running])
    runtime.run()
    return EXIT_OK
