"""The configuration tree: frozen dataclasses holding every key and its default (the only place defaults live)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

#: The example CloudTrail logs of a checkout, which the built-in configuration reads (absent from other installs).
EXAMPLE_TRAIL_DIR = Path(__file__).resolve().parents[2] / "examples" / "cloudtrail" / "AWSLogs"


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
class AwsConfig:
    """How to reach AWS; empty values leave boto3's own defaults (environment, profile, instance role)."""

    region: str = ""
    profile: str = ""
    role_arn: str = ""
    endpoint_url: str = ""


@dataclass(frozen=True, slots=True)
class CloudTrailDirectoryConfig:
    """Local CloudTrail log files (`.json`, `.json.gz`), e.g. a folder a trail is synced or copied into."""

    paths: tuple[str, ...] = ()
    follow: bool = True
    poll_interval_s: float = 1.0
    checkpoint_path: str = ""


@dataclass(frozen=True, slots=True)
class CloudTrailS3Config:
    """A trail's S3 bucket, polled for new log objects (plain or organisation layout)."""

    bucket: str = ""
    prefix: str = ""
    accounts: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    start_date: str = ""
    poll_interval_s: float = 60.0
    concurrency: int = 4
    checkpoint_path: str = ""


@dataclass(frozen=True, slots=True)
class CloudTrailSqsConfig:
    """An SQS queue of CloudTrail SNS or S3 event notifications; several agents may share one queue."""

    queue_url: str = ""
    concurrency: int = 4
    wait_time_s: int = 10
    visibility_timeout_s: int = 300
    max_receive_count: int = 5
    dead_letter_queue_url: str = ""


@dataclass(frozen=True, slots=True)
class CloudTrailConfig:
    enabled: bool = True
    aws: AwsConfig = field(default_factory=AwsConfig)
    directory: CloudTrailDirectoryConfig = field(default_factory=CloudTrailDirectoryConfig)
    s3: CloudTrailS3Config = field(default_factory=CloudTrailS3Config)
    sqs: CloudTrailSqsConfig = field(default_factory=CloudTrailSqsConfig)


@dataclass(frozen=True, slots=True)
class KernelDropsConfig:
    """When lost syscall events raise the internal "syscall event drop" alert."""

    # Fraction of the events of one second that may be lost before an alert (0 = any loss alerts).
    threshold: float = 0.0
    # Least time between two drop alerts, in seconds; losses in between are summed into the next.
    alert_interval_s: float = 30.0


@dataclass(frozen=True, slots=True)
class KernelConfig:
    """Syscalls captured with eBPF (BCC) on tracepoints; needs root and BPF."""

    enabled: bool = True
    # Ring buffer size in pages of 4 KiB (power of two).
    ring_buffer_pages: int = 4096
    # Syscalls to capture beyond those the rules and the process/fd state need.
    extra_syscalls: tuple[str, ...] = ()
    # Kernel headers for BCC; "" = /lib/modules/<release>/build or what scripts/install_bcc.sh unpacked.
    kernel_headers: str = ""
    # Docker, containerd or CRI-O sockets asked for container names, images and pod labels.
    container_runtime_sockets: tuple[str, ...] = (
        "/var/run/docker.sock",
        "/run/podman/podman.sock",
        "/run/containerd/containerd.sock",
        "/run/crio/crio.sock",
        "/run/k3s/containerd/containerd.sock",
    )
    drops: KernelDropsConfig = field(default_factory=KernelDropsConfig)


@dataclass(frozen=True, slots=True)
class SourcesConfig:
    kernel: KernelConfig = field(default_factory=KernelConfig)
    k8s_audit: K8sAuditConfig = field(default_factory=K8sAuditConfig)
    aws_cloudtrail: CloudTrailConfig = field(default_factory=CloudTrailConfig)


@dataclass(frozen=True, slots=True)
class StdoutOutputConfig:
    enabled: bool = True
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True, slots=True)
class FileOutputConfig:
    """Alert lines appended to a file, reopened on SIGUSR1 (for logrotate)."""

    enabled: bool = False
    path: str = "/var/log/falco-agent/alerts.log"
    format: Literal["text", "json"] = "json"


@dataclass(frozen=True, slots=True)
class HttpOutputConfig:
    """Falcosidekick-compatible JSON POSTed from a bounded queue; `headers` are `Name: value` strings."""

    enabled: bool = False
    url: str = ""
    headers: tuple[str, ...] = ()
    batch: bool = False
    timeout_s: float = 5.0
    max_queue: int = 10_000
    close_timeout_s: float = 5.0
    verify_tls: bool = True
    ca_file: str = ""
    client_cert: str = ""
    client_key: str = ""


@dataclass(frozen=True, slots=True)
class ProgramOutputConfig:
    """Alert lines piped to a shell command's standard input."""

    enabled: bool = False
    command: str = ""
    format: Literal["text", "json"] = "json"
    keep_alive: bool = True
    max_queue: int = 10_000
    close_timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class NatsOutputConfig:
    """Falco JSON alerts published to NATS JetStream from a bounded queue, each publish acknowledged by the stream.

    `subject` may use `{source}`, `{priority}`, `{rule}` and `{hostname}`; `credentials_file` is a NATS `.creds` file.
    """

    enabled: bool = False
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    subject: str = "falco.alerts.{source}.{priority}"
    stream: str = "FALCO_ALERTS"
    create_stream: bool = True
    credentials_file: str = ""
    max_queue: int = 10_000
    timeout_s: float = 5.0
    close_timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class OutputsConfig:
    stdout: StdoutOutputConfig = field(default_factory=StdoutOutputConfig)
    file: FileOutputConfig = field(default_factory=FileOutputConfig)
    http: HttpOutputConfig = field(default_factory=HttpOutputConfig)
    program: ProgramOutputConfig = field(default_factory=ProgramOutputConfig)
    nats: NatsOutputConfig = field(default_factory=NatsOutputConfig)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Prometheus `/metrics` and `/healthz`."""

    enabled: bool = True
    address: str = "127.0.0.1:9376"
    stale_after_s: float = 10.0


@dataclass(frozen=True, slots=True)
class GrpcConfig:
    """The alert API: a unix socket by default; TCP needs `tls` unless `allow_insecure_tcp`."""

    enabled: bool = True
    socket_path: str = "/run/falco-agent/grpc.sock"
    address: str = ""
    tls: TlsConfig | None = None
    allow_insecure_tcp: bool = False
    max_subscribers: int = 64
    subscriber_queue_size: int = 10_000
    spool_dir: str = "/var/lib/falco-agent/spool"
    spool_max_bytes: int = 256 * 1024 * 1024
    spool_max_age_s: float = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "text"] = "auto"


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """A token bucket: at most `alerts` per `per_s` seconds per rule, per distinct value of `fields` when given."""

    alerts: int = 10
    per_s: float = 60.0
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DedupConfig:
    """Repeats of a rule with the same values of `fields` within `window_s` of the first one are folded."""

    fields: tuple[str, ...] = ()
    window_s: float = 60.0


@dataclass(frozen=True, slots=True)
class NoisePolicyConfig:
    """Noise control for the rules whose name matches the glob `match`; the first matching entry applies."""

    match: str = ""
    rate: RateLimitConfig | None = None
    dedup: DedupConfig | None = None


@dataclass(frozen=True, slots=True)
class NoiseConfig:
    """Rate limits and dedup windows; suppressed repeats are folded into summary alerts, never dropped."""

    rules: tuple[NoisePolicyConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleMatchConfig:
    """The rules one `rules` command selects: names matching the glob `rule` and rules with a tag matching `tag`."""

    rule: str = ""
    tag: str = ""


@dataclass(frozen=True, slots=True)
class RuleSelectionConfig:
    """One command of `rules`, Falco's form: exactly one of `enable` and `disable`."""

    enable: RuleMatchConfig | None = None
    disable: RuleMatchConfig | None = None


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything `agent.yaml` can say. An empty `rules_files` means the rules shipped in `rules/`."""

    rules_files: tuple[str, ...] = ()
    # Applied in order after every (re)load, over the `enabled` the rules files say.
    rules: tuple[RuleSelectionConfig, ...] = ()
    rule_matching: Literal["first", "all"] = "first"
    priority: Literal[
        "emergency", "alert", "critical", "error", "warning", "notice", "informational", "info", "debug"
    ] = "debug"
    time_format_iso_8601: bool = False
    hostname: str = ""
    # Bounds memory too: a queued event holds its decoded payload (a few KB for a syscall with its state).
    queue_capacity_events: int = 20_000
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    grpc: GrpcConfig = field(default_factory=GrpcConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)


def builtin_settings() -> dict[str, Any]:
    """The keys, over the defaults above, that the agent runs with when it is given no configuration file.

    `make run` on a fresh machine then shows every source at work: besides the webhook, the rules, gRPC and stdout
    that the defaults give, the CloudTrail directory input reads the example logs of the checkout.
    """
    if not EXAMPLE_TRAIL_DIR.is_dir():
        return {}
    return {"sources": {"aws_cloudtrail": {"directory": {"paths": [str(EXAMPLE_TRAIL_DIR)]}}}}
