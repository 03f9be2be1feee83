"""The sources that ship with the agent, as plugins of agent.plugins.api (the one place naming them), and what
the CLI needs of them beyond one source: the default engine, kernel captures, the syscall rule types."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import structlog

from agent import __version__
from agent.address import parse_host_port
from agent.config.schema import CloudTrailConfig, K8sAuditConfig, KernelConfig
from agent.engine.engine import Engine, RuleMatching
from agent.engine.rule_fields import canonical_keys, names_any
from agent.engine.ruleset import MISSING, ValueSet, possible_values
from agent.errors import ConfigError
from agent.plugins.api import LiveContext, Plugin
from agent.priority import Priority
from agent.recorded import FileReplayer
from agent.source import LiveSource, RecordDecoder, SourceSpec
from agent.syscall_prefilter import PlanCache
from sources.cloudtrail.aws import AwsSettings
from sources.cloudtrail.decoder import CloudTrailDecoder
from sources.cloudtrail.directory import CloudTrailDirectory
from sources.cloudtrail.fields import cloudtrail_source
from sources.cloudtrail.objects import ObjectLimits
from sources.cloudtrail.s3 import S3TrailPoller
from sources.cloudtrail.sqs import SqsTrailConsumer
from sources.k8saudit.decoder import K8sAuditDecoder
from sources.k8saudit.fields import k8s_audit_source
from sources.k8saudit.files import AuditLogFiles
from sources.k8saudit.webhook import AuditWebhook, WebhookSettings
from sources.kernel.capture import CaptureReplayer
from sources.kernel.capture_command import CaptureSummary, capture
from sources.kernel.fields import SOURCE_NAME as SYSCALL
from sources.kernel.fields import syscall_source
from sources.kernel.prefilter import PrefilterPlan
from sources.kernel.probe import probe_available
from sources.kernel.source import BUFFER_FIELDS, KernelSettings, KernelSource
from sources.kernel.state import live_state
from sources.kernel.syscalls import SYSCALLS

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class BuiltinPlugin:
    """A built-in source, registered through the plugin API; its config is the section of agent.yaml at
    `config_key` (a loaded plugin's is its `init_config`)."""

    plugin: Plugin[Any]
    config_key: str


def builtin_source_specs() -> list[SourceSpec]:
    """Every built-in source, so that rules of any of them load."""
    return [spec for builtin in BUILTIN_PLUGINS if (spec := builtin.plugin.source_spec()) is not None]


def recorded_replayers(*, hostname: str) -> list[FileReplayer]:
    """Whole-file recorded formats `replay` reads besides JSON documents: kernel captures."""
    return [CaptureReplayer(hostname=hostname)]


def rule_values(engine: Engine, source: str, field: str) -> frozenset[Any] | None:
    """The values of index field `field` that the engine's rules and correlation steps of `source` can match (None:
    any): a correlation whose step waits for a `mkdir` needs it captured as much as a rule does."""
    ruleset = engine.ruleset(source)
    of_rules = ruleset.index_values(field) if ruleset is not None else frozenset()
    if of_rules is None:
        return None
    admitted = ValueSet(of_rules, False)
    for step in (s for c in engine.correlations if c.enabled for s in c.steps if s.source == source):
        admitted = admitted.union(possible_values(step.condition, field))
    return None if admitted.cofinite else frozenset(admitted.values - {MISSING})


def rule_values_naming(engine: Engine, source: str, field: str, names: frozenset[str]) -> frozenset[Any] | None:
    """The values of index field `field` that the engine's rules of `source` naming one of the fields `names` can
    match (None: any)."""
    ruleset = engine.ruleset(source)
    if ruleset is None:
        return frozenset()
    table = engine.sources[source].fields
    keys = canonical_keys(table, names)
    return ruleset.index_values(field, among=lambda rule: names_any(rule, table, keys))


def syscall_rule_types(engine: Engine) -> frozenset[str] | None:
    """The `evt.type` values the engine's syscall rules can match (None: any), which the kernel captures."""
    return rule_values(engine, SYSCALL, "evt.type")


def syscall_buffer_types(engine: Engine) -> frozenset[str] | None:
    """The `evt.type` values of the engine's syscall rules that read I/O buffers (None: any), whose buffers the
    kernel copies."""
    return rule_values_naming(engine, SYSCALL, "evt.type", BUFFER_FIELDS)


def kernel_settings(config: KernelConfig) -> KernelSettings:
    return KernelSettings(ring_buffer_pages=config.ring_buffer_pages, extra_syscalls=config.extra_syscalls,
                          kernel_headers=config.kernel_headers, drop_threshold=config.drops.threshold,
                          drop_alert_interval_s=config.drops.alert_interval_s, snaplen=config.snaplen)


def capture_syscalls(path: str, *, config: KernelConfig, rule_types: frozenset[str] | None,
                     stop: threading.Event, seconds: float | None, hostname: str,
                     buffer_types: frozenset[str] | None = None) -> CaptureSummary:
    """`falco-agent capture`: record live syscalls and what the state learned, for `replay`; the I/O buffers of
    `buffer_types` (None: every one captured)."""
    return capture(path, settings=kernel_settings(config), rule_types=rule_types, stop=stop, seconds=seconds,
                   hostname=hostname, buffer_types=buffer_types)


def new_engine(*, rule_matching: str = "first", min_priority: Priority = Priority.DEBUG, hostname: str = "",
               sources: Iterable[SourceSpec] | None = None) -> Engine:
    """An engine with `sources` registered (the registry's, agent.plugins.registry); by default the built-in ones."""
    engine = Engine(rule_matching=RuleMatching(rule_matching), min_priority=min_priority,
                    hostname=hostname or socket.gethostname())
    for spec in builtin_source_specs() if sources is None else sources:
        engine.add_source(spec)
    return engine


def _kernel_sources(kernel: KernelConfig, context: LiveContext) -> list[LiveSource]:
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
    plans = PlanCache()

    def prefilter() -> PrefilterPlan | None:
        engine = context.engine()
        return plans.plan(engine, keeping=kernel.prefilter) if engine is not None else None

    return [KernelSource(kernel_settings(kernel), rule_types=lambda: context.rule_values(SYSCALL, "evt.type"),
                         buffer_types=lambda: context.rule_values_naming(SYSCALL, "evt.type", BUFFER_FIELDS),
                         prefilter=prefilter,
                         new_state=lambda: live_state(hostname=context.hostname,
                                                      runtime_sockets=kernel.container_runtime_sockets))]


def _k8s_audit_sources(k8s: K8sAuditConfig, context: LiveContext) -> list[LiveSource]:
    hostname = context.hostname
    out: list[LiveSource] = []
    if k8s.enabled and k8s.webhook.enabled:
        hook = k8s.webhook
        host, port = parse_host_port(hook.listen)  # checked when the configuration loaded
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


def _cloudtrail_sources(trail: CloudTrailConfig, context: LiveContext) -> list[LiveSource]:
    hostname = context.hostname
    if not trail.enabled:
        return []
    aws = AwsSettings(region=trail.aws.region, profile=trail.aws.profile, role_arn=trail.aws.role_arn,
                      endpoint_url=trail.aws.endpoint_url)
    limits = ObjectLimits(max_object_bytes=trail.max_object_bytes, max_event_bytes=trail.max_event_bytes)
    out: list[LiveSource] = []
    folder = trail.directory
    if folder.paths:
        out.append(CloudTrailDirectory(paths=folder.paths, follow=folder.follow, poll_interval_s=folder.poll_interval_s,
                                       checkpoint_path=_path(folder.checkpoint_path), hostname=hostname,
                                       limits=limits, follow_symlinks_outside=folder.follow_symlinks_outside))
    s3 = trail.s3
    if s3.bucket:
        try:
            start = date.fromisoformat(s3.start_date) if s3.start_date else None
        except ValueError:
            raise ConfigError(f"sources.aws_cloudtrail.s3.start_date: '{s3.start_date}' is not a YYYY-MM-DD "
                              "date") from None
        out.append(S3TrailPoller(bucket=s3.bucket, prefix=s3.prefix, accounts=s3.accounts, regions=s3.regions,
                                 start_date=start, poll_interval_s=s3.poll_interval_s, concurrency=s3.concurrency,
                                 checkpoint_path=_path(s3.checkpoint_path), aws=aws, hostname=hostname,
                                 limits=limits))
    sqs = trail.sqs
    if sqs.queue_url:
        out.append(SqsTrailConsumer(queue_url=sqs.queue_url, aws=aws, concurrency=sqs.concurrency,
                                    wait_time_s=sqs.wait_time_s, visibility_timeout_s=sqs.visibility_timeout_s,
                                    max_receive_count=sqs.max_receive_count,
                                    dead_letter_queue_url=sqs.dead_letter_queue_url, hostname=hostname,
                                    limits=limits))
    return out


def _path(text: str) -> Path | None:
    return Path(text) if text else None


def _builtin(spec: SourceSpec, config: type[Any], live: Callable[[Any, LiveContext], list[LiveSource]],
             decoder: Callable[[str], RecordDecoder] | None = None) -> Plugin[Any]:
    """A built-in source as a plugin: its fields, index and the Falco plugins it stands in for from its spec."""
    return Plugin(name=spec.name, version=__version__, config=config, source=spec.name, fields=tuple(spec.fields),
                  index_fields=spec.index_fields, live=live, decoder=decoder, warn_unindexed=spec.warn_unindexed,
                  falco_plugins=spec.plugins, guard_fields=spec.guard_fields, guard_paths=spec.guard_paths)


# The one registration of each built-in source, in their usual order. The kernel's config section keeps its
# name: it configures the capture, whose events are the `syscall` source.
BUILTIN_PLUGINS = (
    BuiltinPlugin(_builtin(syscall_source(), KernelConfig, _kernel_sources), "sources.kernel"),
    BuiltinPlugin(_builtin(k8s_audit_source(), K8sAuditConfig, _k8s_audit_sources,
                           lambda hostname: K8sAuditDecoder(hostname=hostname)), "sources.k8s_audit"),
    BuiltinPlugin(_builtin(cloudtrail_source(), CloudTrailConfig, _cloudtrail_sources,
                           lambda hostname: CloudTrailDecoder(hostname=hostname)), "sources.aws_cloudtrail"),
)
