"""Live mode: reads the configuration, starts the live sources, runs the engine loop, stops without loss.

Sources feed one bounded EventQueue; the main thread takes batches, evaluates them and hands the
alerts to the outputs, then acknowledges each batch so that sources may checkpoint. Between two
batches the loop swaps in reloaded rules (agent.reload) and emits the agent's internal alerts
(agent.internal_alerts); a supervisor thread restarts failed sources (agent.supervisor). SIGHUP
forces a rules reload. SIGTERM and SIGINT stop the sources first, then drain what was queued,
flush the outputs and exit 0.

At start, what the configuration asks for and cannot be had is fatal (exit 1, after stopping what
started, with a message naming the key): a webhook, web server or gRPC address it cannot listen on, a
spool it cannot write. What fails later is supervised instead, and `/healthz` names it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import asdict
from typing import Any, Protocol

import structlog

from agent.alert import Alert, JsonAlertFormat
from agent.builtin_sources import rule_values, rule_values_naming
from agent.config import AgentConfig
from agent.config.falco import warn_unsupported_keys
from agent.config.schema import GrpcConfig
from agent.drop_watch import DropWatch
from agent.engine.engine import Engine
from agent.engine.requirements import ENGINE_VERSION
from agent.errors import AgentError, ConfigError
from agent.event_queue import EventQueue
from agent.falco_metrics import FalcoMetricsReader, RulesLoad
from agent.gc_tuning import settle_after_startup
from agent.grpc.server import AlertServer
from agent.internal_alerts import InternalAlerts
from agent.logging import configure_logging
from agent.metrics import HealthProblem, Heartbeat, MetricsSnapshot, PipelineTally, build_snapshot
from agent.metrics_writer import MetricsSnapshotWriter
from agent.noise import NoiseFilter
from agent.outputs.base import Output
from agent.outputs.file import FileOutput
from agent.outputs.http import HttpOptions, HttpOutput
from agent.outputs.nats import NatsOutput
from agent.outputs.program import ProgramOutput
from agent.outputs.stdout import StdoutOutput
from agent.outputs.syslog import SyslogOutput
from agent.plugins.registry import PluginRegistry
from agent.reload import (
    DEFAULT_RULES_DIR,
    EngineSwap,
    RulesReloader,
    fingerprint,
    rules_paths,
    swap_in,
    watched_paths,
)
from agent.source import DropReporting, LiveSource
from agent.source_selection import SourceSelectionError, select_sources
from agent.startup_check import dry_run, load_rules
from agent.supervisor import SourceSupervisor
from agent.versions import versions_info
from agent.webserver import WebServer, metrics_off_reason

log = structlog.get_logger(__name__)
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
_POLL_S = 0.2
__all__ = ["DEFAULT_RULES_DIR", "AgentRuntime", "build_runtime", "rules_paths", "run_agent"]


class Stoppable(Protocol):
    def stop(self) -> None: ...


class AgentRuntime:
    """The running agent: sources → queue → engine → outputs.

    Thread-safety: only the engine loop (`run`) evaluates events and calls the outputs. Other threads hand it
    work through `swap` (a reloaded engine) and `raise_alert` (internal alerts), both taken between batches.
    """

    def __init__(self, engine: Engine, sources: list[LiveSource], outputs: list[Output], queue: EventQueue,
                 *, servers: list[Stoppable] | None = None, restart_backoff_s: tuple[float, float] = (1.0, 60.0),
                 supervise_interval_s: float = 1.0, stuck_after_s: float = 120.0,
                 noise: NoiseFilter | None = None) -> None:
        self.engine = engine
        self.noise = noise if noise is not None and noise.is_active else None
        self.sources = sources
        self.outputs = outputs
        self.queue = queue
        self.servers = servers or []
        self.heartbeat = Heartbeat()
        self.tally = PipelineTally()
        # The rules files in use and when they loaded, for the metrics; build_runtime names the first ones.
        self.rules_load = RulesLoad(())
        self.swap = EngineSwap()
        self.internal_alerts = InternalAlerts(hostname=engine.hostname)
        self.reloader: RulesReloader | None = None
        self.supervisor = SourceSupervisor(sources, queue, alerts=self.internal_alerts, emit=self.raise_alert,
                                           initial_backoff_s=restart_backoff_s[0], max_backoff_s=restart_backoff_s[1],
                                           poll_interval_s=supervise_interval_s, stuck_after_s=stuck_after_s)
        self._drop_watch = DropWatch(outputs, alerts=self.internal_alerts)
        self._pending_alerts: deque[Alert] = deque()
        self._stop = threading.Event()

    @property
    def running(self) -> list[LiveSource]:
        """The sources running now."""
        return self.supervisor.running

    def start_sources(self) -> None:
        """Start every source; one that cannot start is reported, retried with backoff, and the others run.

        ListenError (a source cannot listen where the configuration says) is raised instead: fatal at start.
        """
        self.supervisor.start_sources()

    def abandon_start(self) -> None:
        """Stop the sources and servers started so far, when the start cannot go on (nothing was evaluated)."""
        self.supervisor.stop()
        for server in self.servers:
            server.stop()

    def health_problems(self) -> list[HealthProblem]:
        """What does not do its work now, besides the engine loop (its heartbeat): sources, the rules reloader."""
        problems = self.supervisor.problems()
        reload_failure = self.reloader.failure() if self.reloader is not None else None
        if reload_failure is not None:
            problems.append(HealthProblem("rules_reload", f"{reload_failure}; rules changes are no longer applied: "
                                                          "restart the agent"))
        return problems

    def raise_alert(self, alert: Alert) -> None:
        """Queue an internal alert for every output; any thread may call it."""
        self._pending_alerts.append(alert)

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        """Reload the rules now (SIGHUP)."""
        if self.reloader is not None:
            self.reloader.request()

    def run(self) -> None:
        """Evaluate batches until asked to stop, then drain: every accepted event reaches the outputs."""
        self.supervisor.start()
        if self.reloader is not None:
            self.reloader.start()
        while not self._stop.is_set():
            self.heartbeat.beat()
            batch = self.queue.get(timeout_s=_POLL_S)
            self._between_batches()  # after get: a batch taken after a swap was offered uses the new rules
            if batch is not None:
                self._process(batch.events, batch.on_done)
        if self.reloader is not None:
            self.reloader.stop()
        self.supervisor.stop()
        self.queue.close()
        while (batch := self.queue.get(timeout_s=0)) is not None:
            self._between_batches()
            self._process(batch.events, batch.on_done)
        if self.noise is not None:
            self._pending_alerts.extend(self.noise.flush())
        self._between_batches()
        for output in self.outputs:
            output.close()
        for server in self.servers:
            server.stop()
        log.info("agent_stopped", events=self.engine.stats.events, alerts=self.engine.stats.alerts)

    def _between_batches(self) -> None:
        """Swap in reloaded rules and emit internal alerts; runs on the engine loop only, never inside a batch."""
        reloaded = self.swap.take()
        if reloaded is not None:
            self.engine = swap_in(self.engine, reloaded)
            self.rules_load = RulesLoad(reloaded.files)
        self._pending_alerts.extend(self._drop_watch.check())
        for source in self.supervisor.running:
            if isinstance(source, DropReporting):
                self._pending_alerts.extend(self.internal_alerts.input_dropped(source.name, notice)
                                            for notice in source.drop_notices())
        summaries = self.noise.due_summaries() if self.noise is not None else []
        if not self._pending_alerts and not summaries:
            return
        while self._pending_alerts:
            alert = self._pending_alerts.popleft()
            self.tally.count_alert(alert)
            self._emit(alert)
        for summary in summaries:  # the folded alerts were counted when the engine raised them
            self._emit(summary)
        for output in self.outputs:
            output.flush()

    def _emit(self, alert: Alert) -> None:
        for output in self.outputs:
            try:
                output.emit(alert)
            except Exception as exc:  # one alert an output cannot take must not end the loop and lose the batch
                log.error("alert_output_failed", output=output.name, rule=alert.rule, source=alert.source,
                          error=f"{type(exc).__name__}: {exc}", hint="this alert is skipped on this output")

    def reopen_outputs(self) -> None:
        """Ask file outputs to reopen their files (logrotate sends SIGUSR1)."""
        self._call_outputs("reopen")

    def _call_outputs(self, method: str) -> None:
        """Call the optional `method` (`reopen`, `sync`) of every output that has it."""
        for output in self.outputs:
            call = getattr(output, method, None)
            if call is not None:
                call()

    def _process(self, events: Any, on_done: Any) -> None:
        process = self.engine.process
        count_alert = self.tally.count_alert
        admit = self.noise.admit if self.noise is not None else None
        emit = self._emit
        started = time.perf_counter()
        for event in events:
            for alert in process(event):
                count_alert(alert)
                if admit is not None and not admit(alert):
                    continue  # folded into a summary alert that comes out when its window closes
                emit(alert)
        self.tally.add_eval_time(time.perf_counter() - started)
        if events:
            self.tally.count_events(events[0].source, len(events))
        for output in self.outputs:
            output.flush()
        if on_done is not None:
            self._call_outputs("sync")  # on disk before the source may checkpoint past these events
            on_done()


def build_runtime(config: AgentConfig, registry: PluginRegistry, *, extra_rules: list[str], json_alerts: bool,
                  selected_sources: frozenset[str] | None = None, config_path: str | None = None,
                  overrides: list[str] | None = None) -> AgentRuntime:
    """Engine with rules loaded, the enabled sources and the outputs, from the configuration; rules hot reload on.

    `registry` holds the plugins (built-in sources included) the configuration loads; `selected_sources` are the
    event sources the command line chose (None: every one the config enables).
    """
    # Taken before loading, so that a file changed while the agent starts is reloaded, not missed.
    seen = fingerprint(watched_paths(config, config_path=config_path, extra_rules=extra_rules))
    engine, files = load_rules(config, registry, extra_rules)
    # Read when a source starts and as rules reload: the engine in use then, not this first one.
    built = registry.live_sources(
        hostname=engine.hostname, selected=selected_sources,
        rule_values=lambda source, field: rule_values(runtime.engine, source, field),
        rule_values_naming=lambda source, field, names: rule_values_naming(runtime.engine, source, field, names),
        engine=lambda: runtime.engine)
    for name, inputs in built.items():
        if not inputs and selected_sources is not None:
            log.warning("selected_source_has_no_input", source=name,
                        hint=f"enable an input under {registry.config_key(name)} in the configuration")
    sources = [source for inputs in built.values() for source in inputs]
    log.info("event_sources_enabled", sources=[name for name, inputs in built.items() if inputs])
    outputs = build_outputs(config, json_alerts=json_alerts)
    # Stopped after the sources (which use the plugins) when the agent stops or abandons its start.
    servers: list[Stoppable] = [registry]
    server = start_grpc_server(config.grpc)
    if server is not None:
        outputs.append(server.output)
        servers.append(server)
    runtime = AgentRuntime(engine, sources, outputs, EventQueue(config.queue_capacity_events), servers=servers,
                           stuck_after_s=config.metrics.stuck_after_s, noise=NoiseFilter(config.noise.rules))
    runtime.rules_load = RulesLoad(files)
    runtime.reloader = RulesReloader(config=config, config_path=config_path, overrides=overrides or [],
                                     extra_rules=extra_rules, template=engine, swap=runtime.swap,
                                     alerts=runtime.internal_alerts, emit=runtime.raise_alert, seen=seen,
                                     stuck_after_s=config.metrics.stuck_after_s)
    return runtime


def build_outputs(config: AgentConfig, *, json_alerts: bool) -> list[Output]:
    """The alert outputs the configuration enables (the gRPC server adds its own).

    `outputs.json` shapes the JSON alert of every output that writes one; `outputs.queue_capacity`, when above 0,
    replaces the `max_queue` of each output that queues; `outputs.timeout_ms` caps each network request's timeout.
    Unbuffered (`outputs.buffered` false), stdout is flushed after each alert: the only output that buffers.
    """
    iso = config.time_format_iso_8601
    wanted = config.outputs
    json_format = JsonAlertFormat(**asdict(wanted.json))  # the same include_* keys, field for field
    capped_s = wanted.timeout_ms / 1000

    def queue(own: int) -> int:
        return wanted.queue_capacity or own

    outputs: list[Output] = []
    if wanted.stdout.enabled:
        outputs.append(StdoutOutput(as_json=json_alerts or wanted.stdout.format == "json", iso8601=iso,
                                    json_format=json_format, flush_each_alert=not wanted.buffered))
    if wanted.file.enabled:
        outputs.append(FileOutput(wanted.file.path, as_json=wanted.file.format == "json", iso8601=iso,
                                  json_format=json_format, keep_alive=wanted.file.keep_alive))
    if wanted.http.enabled:
        http = wanted.http
        headers = {}
        for header in http.headers:
            name, sep, value = header.partition(":")
            if not sep:
                raise ConfigError(f"outputs.http.headers: '{header}' must look like 'Name: value'")
            headers[name.strip()] = value.strip()
        options = HttpOptions(headers=headers, user_agent=http.user_agent, compress=http.compress_uploads,
                              keep_alive=http.keep_alive, echo=http.echo)
        outputs.append(HttpOutput(http.url, iso8601=iso, timeout_s=min(http.timeout_s, capped_s),
                                  max_queue=queue(http.max_queue), batch=http.batch,
                                  close_timeout_s=http.close_timeout_s, options=options, verify_tls=http.verify_tls,
                                  ca_file=http.ca_file, ca_path=http.ca_path, client_cert=http.client_cert,
                                  client_key=http.client_key, json_format=json_format))
    if wanted.program.enabled:
        program = wanted.program
        outputs.append(ProgramOutput(program.command, as_json=program.format == "json", iso8601=iso,
                                     keep_alive=program.keep_alive, max_queue=queue(program.max_queue),
                                     close_timeout_s=program.close_timeout_s, json_format=json_format))
    if wanted.nats.enabled:
        nats = wanted.nats
        outputs.append(NatsOutput(nats.servers, subject=nats.subject, stream=nats.stream,
                                  create_stream=nats.create_stream, credentials_file=nats.credentials_file,
                                  iso8601=iso, max_queue=queue(nats.max_queue), timeout_s=min(nats.timeout_s, capped_s),
                                  close_timeout_s=nats.close_timeout_s, json_format=json_format))
    if wanted.syslog.enabled:
        syslog = wanted.syslog
        outputs.append(SyslogOutput(syslog.address, as_json=syslog.format == "json", iso8601=iso,
                                    facility=syslog.facility, ident=syslog.ident, max_queue=queue(syslog.max_queue),
                                    timeout_s=capped_s, json_format=json_format))
    return outputs


def start_metrics_server(config: AgentConfig, runtime: AgentRuntime) -> WebServer | None:
    """Falco's web server (/healthz, /versions, /metrics) and the periodic metrics snapshots, over the runtime's
    parts; None for the server when `webserver.enabled` is off. A ConfigError names the key to change when the
    server cannot listen or load its certificate, or the snapshot file cannot be written."""
    metrics = config.metrics

    def collect() -> MetricsSnapshot:
        return build_snapshot(engine_stats=runtime.engine.stats, tally=runtime.tally, queue=runtime.queue,
                              sources=runtime.running, outputs=runtime.outputs, rules_loaded=len(runtime.engine.rules),
                              correlations=runtime.engine.correlation_metrics())

    falco = FalcoMetricsReader(metrics, rules=lambda: runtime.engine.rules, rules_load=lambda: runtime.rules_load,
                               config_files=config.loaded_files, hostname=runtime.engine.hostname)
    server = None
    if config.webserver.enabled:
        server = WebServer(config.webserver, collect, heartbeat=runtime.heartbeat, stale_after_s=metrics.stale_after_s,
                           problems=runtime.health_problems, falco=falco, metrics_off=metrics_off_reason(config),
                           versions=lambda: versions_info(plugin for spec in runtime.engine.sources.values()
                                                          for plugin in spec.plugins))
        server.start()
    if metrics.enabled and (metrics.output_rule or metrics.output_file):
        writer = MetricsSnapshotWriter(metrics, collect=collect, falco=falco, alerts=runtime.internal_alerts,
                                       emit=runtime.raise_alert, min_priority=config.priority)
        try:
            writer.start()
        except ConfigError:
            if server is not None:
                server.stop()
            raise
        runtime.servers.append(writer)
    return server


def start_grpc_server(config: GrpcConfig) -> AlertServer | None:
    """The alert API server, started; None when disabled, ConfigError naming the `grpc` key when it cannot start
    (a spool it cannot write, an address or socket it cannot listen on), after closing what it opened."""
    if not config.enabled:
        return None
    tls = config.tls
    server = AlertServer(
        spool_dir=config.spool_dir, socket_path=config.socket_path or None, address=config.address or None,
        tls_cert=tls.cert_file if tls else None, tls_key=tls.key_file if tls else None,
        tls_client_ca=(tls.client_ca_file or None) if tls else None,
        allow_insecure_tcp=config.allow_insecure_tcp, max_subscribers=config.max_subscribers,
        subscriber_queue_size=config.subscriber_queue_size, spool_max_bytes=config.spool_max_bytes,
        spool_max_age_s=config.spool_max_age_s, engine_version=ENGINE_VERSION)
    try:
        server.start()
    except ConfigError:
        server.stop()  # closes the spool it opened
        raise
    log.info("grpc_listening", socket=config.socket_path, address=config.address or None)
    return server


def run_agent(args: argparse.Namespace, config: AgentConfig, registry: PluginRegistry, *,
              overrides: list[str]) -> int:
    """`falco-agent [-c agent.yaml] ...`: run until SIGTERM or SIGINT (or for `-M` seconds), with the plugins of
    `registry`; with `--dry-run`, stop before building the sources. `overrides` are `-o` and the flags standing for
    configuration keys (agent.cli_falco.flag_overrides), read again by each rules reload."""
    log_format = config.logging.format
    configure_logging(level=config.logging.level, json=None if log_format == "auto" else log_format == "json",
                      stderr=config.logging.stderr,
                      syslog_address=config.outputs.syslog.address if config.logging.syslog else None)
    try:
        selected = select_sources(registry.source_names(), enable=args.enable_source, disable=args.disable_source)
    except SourceSelectionError as exc:
        print(f"falco-agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    explicit = selected if args.enable_source or args.disable_source else None
    warn_unsupported_keys(config.unsupported_keys)
    try:
        if args.dry_run:
            dry_run(config, registry, rules_override=args.rules)
            return EXIT_OK
        runtime = build_runtime(config, registry, extra_rules=args.rules, selected_sources=explicit,
                                json_alerts=args.json, config_path=args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"falco-agent: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    # Handlers first: a SIGTERM that arrives while sources start still drains instead of killing.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: runtime.request_stop())
    signal.signal(signal.SIGUSR1, lambda *_: runtime.reopen_outputs())
    signal.signal(signal.SIGHUP, lambda *_: runtime.request_reload())
    try:
        runtime.start_sources()
        metrics = start_metrics_server(config, runtime) if runtime.running else None
    except AgentError as exc:  # a ListenError of a source, a ConfigError of the metrics server
        print(f"falco-agent: cannot start: {exc}", file=sys.stderr)
        runtime.abandon_start()
        return EXIT_FAILURE
    if not runtime.running:
        print("falco-agent: no source could start (see the errors above); nothing to do", file=sys.stderr)
        runtime.abandon_start()
        return EXIT_FAILURE
    if metrics is not None:
        runtime.servers.append(metrics)
    log.info("agent_started", sources=[s.name for s in runtime.running])
    if args.duration is not None:  # Falco's -M: stop as SIGTERM would, draining what was accepted
        timer = threading.Timer(args.duration, runtime.request_stop)
        timer.daemon = True  # a stop before it fires must not wait for it
        timer.start()
    settle_after_startup()
    runtime.run()
    return EXIT_OK
