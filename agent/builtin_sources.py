"""The sources that ship with the agent, as the CLI and runtime plug them in (the one place naming them)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import structlog

from agent.address import parse_host_port
from agent.config.schema import AgentConfig, KernelConfig
from agent.engine.engine import Engine, RuleMatching
from agent.errors import ConfigError
from agent.priority import Priority
from agent.recorded import FileReplayer
from agent.source import LiveSource, RecordDecoder, SourceSpec
from sources.cloudtrail.aws import AwsSettings
from sources.cloudtrail.decoder import SOURCE as CLOUDTRAIL
from sources.cloudtrail.decoder import CloudTrailDecoder
from sources.cloudtrail.directory import CloudTrailDirectory
from sources.cloudtrail.fields import cloudtrail_source
from sources.cloudtrail.s3 import S3TrailPoller
from sources.cloudtrail.sqs import SqsTrailConsumer
from sources.k8saudit.decoder import K8sAuditDecoder
from sources.k8saudit.fields import SOURCE_NAME as K8S_AUDIT
from sources.k8saudit.fields import k8s_audit_source
from sources.k8saudit.files import AuditLogFiles
from sources.k8saudit.webhook import AuditWebhook, WebhookSettings
from sources.kernel.capture import CaptureReplayer
from sources.kernel.capture_command import CaptureSummary, capture
from sources.kernel.fields import SOURCE_NAME as SYSCALL
from sources.kernel.fields import syscall_source
from sources.kernel.probe import probe_available
from sources.kernel.source import KernelSettings, KernelSource
from sources.kernel.state import live_state
from sources.kernel.syscalls import SYSCALLS

log = structlog.get_logger(__name__)

@dataclass(frozen=True, slots=True)
class LiveContext:
    """What every live input builder may need besides the configuration."""

    hostname: str
    #: The `evt.type` values the current rules can match (None: any); read when the kernel source starts.
    syscall_rule_types: Callable[[], frozenset[str] | None]


@dataclass(frozen=True, slots=True)
class BuiltinSource:
    """One built-in event source: its field table for the engine and the live inputs its config section enables.

    `name` is the event-source name rules, alerts and `--enable-source` use (Falco's names).
    """

    name: str
    spec: Callable[[], SourceSpec]
    live: Callable[[AgentConfig, LiveContext], list[LiveSource]]
    config_section: str


def builtin_source_specs() -> list[SourceSpec]:
    """Every built-in source, so that rules of any of them load."""
    return [source.spec() for source in BUILTIN_SOURCES]


def builtin_source_names() -> list[str]:
    """The event-source names the agent can run, in their usual order."""
    return [source.name for source in BUILTIN_SOURCES]


def source_config_section(name: str) -> str:
    """Where the configuration enables the inputs of event source `name`."""
    return next(source.config_section for source in BUILTIN_SOURCES if source.name == name)


def recorded_decoders(*, hostname: str) -> list[RecordDecoder]:
    """Decoders for recorded JSON input, in the order they are tried."""
    return [K8sAuditDecoder(hostname=hostname), CloudTrailDecoder(hostname=hostname)]


def recorded_replayers(*, hostname: str) -> list[FileReplayer]:
    """Whole-file recorded formats `replay` reads besides JSON documents: kernel captures."""
    return [CaptureReplayer(hostname=hostname)]


def syscall_rule_types(engine: Engine) -> frozenset[str] | None:
    """The `evt.type` values the engine's syscall rules can match (None: any), which the kernel captures."""
    ruleset = engine.ruleset(SYSCALL)
    return ruleset.index_values("evt.type") if ruleset is not None else frozenset()


def kernel_settings(config: KernelConfig) -> KernelSettings:
    return KernelSettings(ring_buffer_pages=config.ring_buffer_pages, extra_syscalls=config.extra_syscalls,
                          kernel_headers=config.kernel_headers, drop_threshold=config.drops.threshold,
                          drop_alert_interval_s=config.drops.alert_interval_s)


def capture_syscalls(path: str, *, config: KernelConfig, rule_types: frozenset[str] | None,
                     stop: threading.Event, seconds: float | None, hostname: str) -> CaptureSummary:
    """`falco-agent capture`: record live syscalls and what the state learned, for `replay`."""
    return capture(path, settings=kernel_settings(config), rule_types=rule_types, stop=stop, seconds=seconds,
                   hostname=hostname)


def new_engine(*, rule_matching: str = "first", min_priority: Priority = Priority.DEBUG, hostname: str = "") -> Engine:
    """An engine with every built-in source registered."""
    engine = Engine(rule_matching=RuleMatching(rule_matching), min_priority=min_priority,
                    hostname=hostname or socket.gethostname())
    for spec in builtin_source_specs():
        engine.add_source(spec)
    return engine


def live_sources(config: AgentConfig, context: LiveContext, *,
                 selected: Collection[str] | None = None) -> dict[str, list[LiveSource]]:
    """The live inputs the configuration enables, not yet started, per event source; only the `selected`
    event sources are built (None: all), so a source left out never touches the kernel or the network."""
    return {source.name: source.live(config, context) for source in BUILTIN_SOURCES
            if selected is None or source.name in selected}


def _kernel_sources(config: AgentConfig, context: LiveContext) -> list[LiveSource]:
    kernel = config.sources.kernel
    if not kernel.enabled:
        return []
    unknown = sorted(set(kernel.extra_syscalls) - set(SYSCALLS))
    if unknown:
        raise ConfigError(f"sources.kernel.extra_syscalls: cannot capture {', '.join(unknown)}")
    reason = probe_available(kernel.kernel_headers)
    if reason is not None:
        # Not an error: a machine without root or BPF still runs the other sources.
        log.warning("kernel_source_unavailable", reason=reason)
        return []
    return [KernelSource(kernel_settings(kernel), rule_types=context.syscall_rule_types,
                         new_state=lambda: live_state(hostname=context.hostname,
                                                      runtime_sockets=kernel.container_runtime_sockets))]


def _k8s_audit_sources(config: AgentConfig, context: LiveContext) -> list[LiveSource]:
    hostname = context.hostname
    out: list[LiveSource] = []
    k8s = config.sources.k8s_audit
    if k8s.enabled and k8s.webhook.enabled:
        hook = k8s.webhook
        try:
            host, port = parse_host_port(hook.listen)
        except ValueError as exc:
            raise ConfigError(f"sources.k8s_audit.webhook.listen: {exc}") from None
        tls = hook.tls
        out.append(AuditWebhook(WebhookSettings(
            host=host, port=port, path=hook.path, max_body_bytes=hook.max_body_bytes,
            max_event_bytes=hook.max_event_bytes, hostname=hostname,
            cert_file=tls.cert_file if tls else "", key_file=tls.key_file if tls else "",
            client_ca_file=tls.client_ca_file if tls else "",
        )))
    files = k8s.files
    if k8s.enabled and files.paths:
        out.append(AuditLogFiles(
            paths=files.paths, follow=files.follow, poll_interval_s=files.poll_interval_s, hostname=hostname,
            checkpoint_path=_path(files.checkpoint_path),
        ))
    return out


def _cloudtrail_sources(config: AgentConfig, context: LiveContext) -> list[LiveSource]:
    hostname = context.hostname
    trail = config.sources.aws_cloudtrail
    if not trail.enabled:
        return []
    aws = AwsSettings(region=trail.aws.region, profile=trail.aws.profile, role_arn=trail.aws.role_arn,
                      endpoint_url=trail.aws.endpoint_url)
    out: list[LiveSource] = []
    folder = trail.directory
    if folder.paths:
        out.append(CloudTrailDirectory(paths=folder.paths, follow=folder.follow, poll_interval_s=folder.poll_interval_s,
                                       checkpoint_path=_path(folder.checkpoint_path), hostname=hostname))
    s3 = trail.s3
    if s3.bucket:
        try:
            start = date.fromisoformat(s3.start_date) if s3.start_date else None
        except ValueError:
            raise ConfigError(f"sources.aws_cloudtrail.s3.start_date: '{s3.start_date}' is not a YYYY-MM-DD "
                              "date") from None
        out.append(S3TrailPoller(bucket=s3.bucket, prefix=s3.prefix, accounts=s3.accounts, regions=s3.regions,
                                 start_date=start, poll_interval_s=s3.poll_interval_s, concurrency=s3.concurrency,
                                 checkpoint_path=_path(s3.checkpoint_path), aws=aws, hostname=hostname))
    sqs = trail.sqs
    if sqs.queue_url:
        out.append(SqsTrailConsumer(queue_url=sqs.queue_url, aws=aws, concurrency=sqs.concurrency,
                                    wait_time_s=sqs.wait_time_s, visibility_timeout_s=sqs.visibility_timeout_s,
                                    max_receive_count=sqs.max_receive_count,
                                    dead_letter_queue_url=sqs.dead_letter_queue_url, hostname=hostname))
    return out


def _path(text: str) -> Path | None:
    return Path(text) if text else None


# The one registration of each built-in source. The kernel's config section keeps its name: it configures
# the capture, whose events are the `syscall` source.
BUILTIN_SOURCES = (
    BuiltinSource(SYSCALL, syscall_source, _kernel_sources, "sources.kernel"),
    BuiltinSource(K8S_AUDIT, k8s_audit_source, _k8s_audit_sources, "sources.k8s_audit"),
    BuiltinSource(CLOUDTRAIL, cloudtrail_source, _cloudtrail_sources, "sources.aws_cloudtrail"),
)
