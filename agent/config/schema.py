"""The configuration tree: frozen dataclasses holding every key and its default (the only place defaults live)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Server TLS: certificate and key; with `client_ca_file`, clients must present a certificate it signed."""

    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""


@dataclass(frozen=True, slots=True)
class K8sWebhookConfig:
    """The kube-apiserver audit webhook receiver."""

    enabled: bool = True
    listen: str = "127.0.0.1:9765"
    path: str = "/k8s-audit"
    tls: TlsConfig | None = None
    max_body_bytes: int = 12 * 1024 * 1024
    max_event_bytes: int = 256 * 1024


@dataclass(frozen=True, slots=True)
class K8sFilesConfig:
    """kube-apiserver audit log files (`--audit-log-path`), followed across rotation."""

    paths: tuple[str, ...] = ()
    follow: bool = True
    checkpoint_path: str = ""
    poll_interval_s: float = 0.25


@dataclass(frozen=True, slots=True)
class K8sAuditConfig:
    enabled: bool = True
    webhook: K8sWebhookConfig = field(default_factory=K8sWebhookConfig)
    files: K8sFilesConfig = field(default_factory=K8sFilesConfig)


@dataclass(frozen=True, slots=True)
class SourcesConfig:
    k8s_audit: K8sAuditConfig = field(default_factory=K8sAuditConfig)


@dataclass(frozen=True, slots=True)
class StdoutOutputConfig:
    enabled: bool = True
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True, slots=True)
class OutputsConfig:
    stdout: StdoutOutputConfig = field(default_factory=StdoutOutputConfig)


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "text"] = "auto"


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything `agent.yaml` can say. An empty `rules_files` means the rules shipped in `rules/`."""

    rules_files: tuple[str, ...] = ()
    rule_matching: Literal["first", "all"] = "first"
    priority: Literal[
        "emergency", "alert", "critical", "error", "warning", "notice", "informational", "info", "debug"
    ] = "debug"
    time_format_iso_8601: bool = False
    hostname: str = ""
    queue_capacity_events: int = 100_000
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
