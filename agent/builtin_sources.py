"""The sources that ship with the agent, as the CLI and runtime plug them in (the one place naming them)."""

from __future__ import annotations

import socket
from pathlib import Path

from agent.config.schema import AgentConfig
from agent.engine.engine import Engine, RuleMatching
from agent.errors import ConfigError
from agent.priority import Priority
from agent.source import LiveSource, RecordDecoder, SourceSpec
from sources.cloudtrail.decoder import CloudTrailDecoder
from sources.cloudtrail.fields import cloudtrail_source
from sources.k8saudit.decoder import K8sAuditDecoder
from sources.k8saudit.fields import k8s_audit_source
from sources.k8saudit.files import AuditLogFiles
from sources.k8saudit.webhook import AuditWebhook, WebhookSettings, parse_listen
from sources.kernel.fields import syscall_source


def builtin_source_specs() -> list[SourceSpec]:
    """Every built-in source, so that rules of any of them load."""
    return [syscall_source(), k8s_audit_source(), cloudtrail_source()]


def recorded_decoders(*, hostname: str) -> list[RecordDecoder]:
    """Decoders for recorded JSON input, in the order they are tried."""
    return [K8sAuditDecoder(hostname=hostname), CloudTrailDecoder(hostname=hostname)]


def new_engine(*, rule_matching: str = "first", min_priority: Priority = Priority.DEBUG, hostname: str = "") -> Engine:
    """An engine with every built-in source registered."""
    engine = Engine(rule_matching=RuleMatching(rule_matching), min_priority=min_priority,
                    hostname=hostname or socket.gethostname())
    for spec in builtin_source_specs():
        engine.add_source(spec)
    return engine


def live_sources(config: AgentConfig, *, hostname: str) -> list[LiveSource]:
    """The live inputs the configuration enables, not yet started."""
    out: list[LiveSource] = []
    k8s = config.sources.k8s_audit
    if k8s.enabled and k8s.webhook.enabled:
        hook = k8s.webhook
        try:
            host, port = parse_listen(hook.listen)
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
            checkpoint_path=Path(files.checkpoint_path) if files.checkpoint_path else None,
        ))
    return out
