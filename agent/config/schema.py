"""The configuration tree: frozen dataclasses holding every key and its default (the only place defaults live)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

#: The example CloudTrail logs of a checkout, which the built-in configuration reads (absent from other installs).
EXAMPLE_TRAIL_DIR = Path(__file__).resolve().parents[2] / "examples" / "cloudtrail" / "AWSLogs"
#: The field metadata key under which a numeric key's `Bounds` are kept.
BOUNDS = "bounds"
#: Field metadata of a `host:port` key, checked at load (an empty value, where allowed, means off).
IS_LISTEN_ADDRESS = "is_listen_address"
LISTEN_ADDRESS = {IS_LISTEN_ADDRESS: True}
#: Field metadata of a key the loader fills and a configuration file may not write.
IS_INTERNAL = "is_internal"
INTERNAL = {IS_INTERNAL: True}


@dataclass(frozen=True, slots=True)
class Bounds:
    """The values a numeric key accepts: at least `ge` (or more than `gt`), at most `le`, maybe a power of two.

    Every int and float key of the schema states its bounds (`field(..., metadata=limits(...))`); the loader
    refuses a value outside them with the dotted key and the file line.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    is_power_of_two: bool = False

    def problem(self, value: float) -> str | None:
        """What is wrong with `value` ("must be >= 1"), or None when it is inside the bounds."""
        if ((self.ge is not None and value < self.ge) or (self.gt is not None and value <= self.gt)
                or (self.le is not None and value > self.le)):
            wanted = [f">= {self.ge}" if self.ge is not None else "", f"> {self.gt}" if self.gt is not None else "",
                      f"<= {self.le}" if self.le is not None else ""]
            return "must be " + " and ".join(w for w in wanted if w)
        if self.is_power_of_two and int(value) & (int(value) - 1):
            return "must be a power of two"
        return None


def limits(*, ge: float | None = None, gt: float | None = None, le: float | None = None,
           is_power_of_two: bool = False) -> dict[str, Bounds]:
    """Field metadata stating a numeric key's bounds."""
    return {BOUNDS: Bounds(ge=ge, gt=gt, le=le, is_power_of_two=is_power_of_two)}


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
    listen: str = field(default="127.0.0.1:9765", metadata=LISTEN_ADDRESS)
    path: str = "/k8s-audit"
    tls: TlsConfig | None = None
    # Below 1 KiB no audit event fits.
    max_body_bytes: int = field(default=12 * 1024 * 1024, metadata=limits(ge=1024))
    max_event_bytes: int = field(default=256 * 1024, metadata=limits(ge=1024))


@dataclass(frozen=True, slots=True)
class K8sFilesConfig:
    """kube-apiserver audit log files (`--audit-log-path`), followed across rotation."""

    paths: tuple[str, ...] = ()
    follow: bool = True
    checkpoint_path: str = ""
    poll_interval_s: float = field(default=0.25, metadata=limits(gt=0))


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
    poll_interval_s: float = field(default=1.0, metadata=limits(gt=0))
    checkpoint_path: str = ""
    # Follow a symbolic link whose target is outside the watched paths (a link inside them is always followed).
    follow_symlinks_outside: bool = False


@dataclass(frozen=True, slots=True)
class CloudTrailS3Config:
    """A trail's S3 bucket, polled for new log objects (plain or organisation layout)."""

    bucket: str = ""
    prefix: str = ""
    accounts: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    start_date: str = ""
    poll_interval_s: float = field(default=60.0, metadata=limits(gt=0))
    concurrency: int = field(default=4, metadata=limits(ge=1))
    checkpoint_path: str = ""


@dataclass(frozen=True, slots=True)
class CloudTrailSqsConfig:
    """An SQS queue of CloudTrail SNS or S3 event notifications; several agents may share one queue."""

    queue_url: str = ""
    concurrency: int = field(default=4, metadata=limits(ge=1))
    # SQS's own limits: long polls of 0 to 20 s, a visibility timeout of at most 12 hours.
    wait_time_s: int = field(default=10, metadata=limits(ge=0, le=20))
    visibility_timeout_s: int = field(default=300, metadata=limits(ge=0, le=43_200))
    max_receive_count: int = field(default=5, metadata=limits(ge=1))
    dead_letter_queue_url: str = ""


@dataclass(frozen=True, slots=True)
class CloudTrailConfig:
    enabled: bool = True
    aws: AwsConfig = field(default_factory=AwsConfig)
    # Largest log file or S3 object read by every input, stored and once decompressed; a larger one is skipped
    # whole (logged, counted, remembered as done). Decoding takes about 4 times its size in memory at peak.
    # Below 1 KiB no CloudTrail record fits.
    max_object_bytes: int = field(default=256 * 1024 * 1024, metadata=limits(ge=1024))
    # Largest single record, as compact JSON (the k8saudit plugin's maxEventSize); a larger one is skipped.
    max_event_bytes: int = field(default=1024 * 1024, metadata=limits(ge=1024))
    directory: CloudTrailDirectoryConfig = field(default_factory=CloudTrailDirectoryConfig)
    s3: CloudTrailS3Config = field(default_factory=CloudTrailS3Config)
    sqs: CloudTrailSqsConfig = field(default_factory=CloudTrailSqsConfig)


@dataclass(frozen=True, slots=True)
class KernelDropsConfig:
    """When lost syscall events raise the internal "syscall event drop" alert."""

    # Fraction of the events of one second that may be lost before an alert (0 = any loss alerts).
    threshold: float = field(default=0.0, metadata=limits(ge=0, le=1))
    # Least time between two drop alerts, in seconds; losses in between are summed into the next.
    alert_interval_s: float = field(default=30.0, metadata=limits(ge=0))


@dataclass(frozen=True, slots=True)
class KernelConfig:
    """Syscalls captured with eBPF (BCC) on tracepoints; needs root and BPF."""

    enabled: bool = True
    # Ring buffer size in pages of 4 KiB (power of two).
    ring_buffer_pages: int = field(default=4096, metadata=limits(ge=1, is_power_of_two=True))
    # Syscalls to capture beyond those the rules and the process/fd state need.
    extra_syscalls: tuple[str, ...] = ()
    # Bytes of an I/O buffer (evt.buffer) copied, for the syscalls of rules that read it (Falco's snaplen).
    snaplen: int = field(default=80, metadata=limits(ge=1, le=1024))
    # Keep in the kernel the opens (and their closes) no loaded rule can match, decided from the rules.
    prefilter: bool = True
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
    # False reopens the file for every alert, as Falco's `file_output.keep_alive: false` does.
    keep_alive: bool = True


@dataclass(frozen=True, slots=True)
class HttpOutputConfig:
    """Falcosidekick-compatible JSON POSTed from a bounded queue; `headers` are `Name: value` strings."""

    enabled: bool = False
    url: str = ""
    headers: tuple[str, ...] = ()
    batch: bool = False
    timeout_s: float = field(default=5.0, metadata=limits(gt=0))
    max_queue: int = field(default=10_000, metadata=limits(ge=1))
    close_timeout_s: float = field(default=5.0, metadata=limits(ge=0))
    verify_tls: bool = True
    ca_file: str = ""
    # A folder of CA certificates (one PEM each, hashed names as `c_rehash` makes), Falco's `ca_path`.
    ca_path: str = ""
    client_cert: str = ""
    client_key: str = ""
    # "" sends `falco-agent/<version>`.
    user_agent: str = ""
    compress_uploads: bool = False
    keep_alive: bool = True
    # Print each answer of the server on stdout, as Falco's `http_output.echo`.
    echo: bool = False


@dataclass(frozen=True, slots=True)
class SyslogOutputConfig:
    """Alerts sent to syslog (RFC 3164 datagrams over a unix socket, as syslog(3) writes), at the syslog severity
    of each alert's priority. A missing socket is counted as dropped alerts, never fatal."""

    enabled: bool = False
    format: Literal["text", "json"] = "text"
    address: str = "/dev/log"
    facility: Literal["kern", "user", "daemon", "auth", "syslog", "local0", "local1", "local2", "local3",
                      "local4", "local5", "local6", "local7"] = "user"
    ident: str = "falco"
    max_queue: int = field(default=10_000, metadata=limits(ge=1))


@dataclass(frozen=True, slots=True)
class JsonAlertConfig:
    """Which properties a JSON alert holds besides rule, priority, time, source and hostname (Falco's
    `json_include_*_property` keys)."""

    include_output: bool = True
    # `message`: the output without its time and priority prefix.
    include_message: bool = False
    include_output_fields: bool = True
    include_tags: bool = True


@dataclass(frozen=True, slots=True)
class ProgramOutputConfig:
    """Alert lines piped to a shell command's standard input."""

    enabled: bool = False
    command: str = ""
    format: Literal["text", "json"] = "json"
    keep_alive: bool = True
    max_queue: int = field(default=10_000, metadata=limits(ge=1))
    close_timeout_s: float = field(default=5.0, metadata=limits(ge=0))


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
    max_queue: int = field(default=10_000, metadata=limits(ge=1))
    timeout_s: float = field(default=5.0, metadata=limits(gt=0))
    close_timeout_s: float = field(default=5.0, metadata=limits(ge=0))


@dataclass(frozen=True, slots=True)
class OutputsConfig:
    stdout: StdoutOutputConfig = field(default_factory=StdoutOutputConfig)
    file: FileOutputConfig = field(default_factory=FileOutputConfig)
    http: HttpOutputConfig = field(default_factory=HttpOutputConfig)
    program: ProgramOutputConfig = field(default_factory=ProgramOutputConfig)
    nats: NatsOutputConfig = field(default_factory=NatsOutputConfig)
    syslog: SyslogOutputConfig = field(default_factory=SyslogOutputConfig)
    json: JsonAlertConfig = field(default_factory=JsonAlertConfig)
    # False flushes every output after each alert (Falco's `buffered_outputs: false`); true after each batch.
    buffered: bool = True
    # Falco's `outputs_queue.capacity`: when above 0, the queue of every output that has one holds at most this
    # many alerts (0 keeps each output's own `max_queue`).
    queue_capacity: int = field(default=0, metadata=limits(ge=0))
    # Falco's `output_timeout`: an output that takes longer than this on one delivery is reported (and its
    # request abandoned where it has one: HTTP, NATS).
    timeout_ms: int = field(default=2000, metadata=limits(ge=1))


@dataclass(frozen=True, slots=True)
class WebserverConfig:
    """Falco's embedded web server: `/healthz` (at `k8s_healthz_endpoint`), `/versions`, and `/metrics` when
    `prometheus_metrics_enabled` and `metrics.enabled`. Falco listens on 0.0.0.0; the agent on loopback unless
    told otherwise."""

    enabled: bool = True
    listen_address: str = "127.0.0.1"
    listen_port: int = field(default=8765, metadata=limits(ge=0, le=65535))
    k8s_healthz_endpoint: str = "/healthz"
    prometheus_metrics_enabled: bool = True
    ssl_enabled: bool = False
    # One PEM file holding the certificate and its key, as Falco's `ssl_certificate`.
    ssl_certificate: str = ""
    # Falco's thread count (0 = one per core); the agent's server takes each request on its own thread.
    threadiness: int = field(default=0, metadata=limits(ge=0))


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """What `/metrics` on the web server serves: Falco's `falcosecurity_*` families and the agent's own
    `falco_agent_*` ones; with `output_rule` or `output_file`, a snapshot every `interval` as well."""

    enabled: bool = True
    # Falco's duration syntax: 1h, 15m, 30s, 500ms (at least 100ms).
    interval: str = "1h"
    # Every interval, an internal alert "Falco internal: metrics snapshot" carrying the metrics.
    output_rule: bool = False
    # Every interval, one JSON line of the metrics appended to this file.
    output_file: str = ""
    rules_counters_enabled: bool = True
    resource_utilization_enabled: bool = True
    state_counters_enabled: bool = True
    kernel_event_counters_enabled: bool = True
    convert_memory_to_mb: bool = True
    include_empty_values: bool = False
    stale_after_s: float = field(default=10.0, metadata=limits(gt=0))
    # A source's worker busy in one step (not back at its loop) for longer than this is reported stuck.
    stuck_after_s: float = field(default=120.0, metadata=limits(gt=0))


@dataclass(frozen=True, slots=True)
class GrpcConfig:
    """The alert API: a unix socket by default; TCP needs `tls` unless `allow_insecure_tcp`."""

    enabled: bool = True
    socket_path: str = "/run/falco-agent/grpc.sock"
    address: str = field(default="", metadata=LISTEN_ADDRESS)
    tls: TlsConfig | None = None
    allow_insecure_tcp: bool = False
    max_subscribers: int = field(default=64, metadata=limits(ge=1))
    subscriber_queue_size: int = field(default=10_000, metadata=limits(ge=1))
    spool_dir: str = "/var/lib/falco-agent/spool"
    # At least one spool segment (64 KiB).
    spool_max_bytes: int = field(default=256 * 1024 * 1024, metadata=limits(ge=64 * 1024))
    spool_max_age_s: float = field(default=7 * 86400.0, metadata=limits(gt=0))


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "text"] = "auto"
    # Falco's `log_stderr` and `log_syslog`: where the agent's own logs go (not alerts).
    stderr: bool = True
    syslog: bool = False


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """A token bucket: at most `alerts` per `per_s` seconds per rule, per distinct value of `fields` when given."""

    alerts: int = field(default=10, metadata=limits(ge=1))
    per_s: float = field(default=60.0, metadata=limits(gt=0))
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DedupConfig:
    """Repeats of a rule with the same values of `fields` within `window_s` of the first one are folded."""

    fields: tuple[str, ...] = ()
    window_s: float = field(default=60.0, metadata=limits(gt=0))


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
class AppendMatchConfig:
    """Which alerts an `append_output` entry applies to; every condition given must hold (none: every alert)."""

    source: str = ""
    # The rule must have all of these tags.
    tags: tuple[str, ...] = ()
    rule: str = ""


@dataclass(frozen=True, slots=True)
class ExtraFieldConfig:
    """One of `append_output[].extra_fields`: `name` in JSON `output_fields`, valued by the output format `format`.

    Written as Falco does: a field name (`- container.id`, format `%container.id`) or a one-key mapping
    (`- home: "${HOME}"`)."""

    name: str = ""
    format: str = ""


@dataclass(frozen=True, slots=True)
class AppendOutputConfig:
    """One entry of Falco's `append_output`: text appended to matching rules' outputs, extra JSON output fields,
    and with `suggested_output` the fields each source suggests (`container_id=%container.id` ...)."""

    match: AppendMatchConfig = field(default_factory=AppendMatchConfig)
    extra_output: str = ""
    extra_fields: tuple[ExtraFieldConfig, ...] = ()
    suggested_output: bool = False


@dataclass(frozen=True, slots=True)
class UnsupportedKey:
    """A key of Falco's configuration the agent reads but does not act on, named in one warning at start."""

    key: str
    where: str
    reason: str


@dataclass(frozen=True, slots=True)
class Unchecked:
    """A subtree kept as written, with where each value came from, to be checked later against a schema only a
    plugin knows (`plugins[].init_config`): see agent.config.load.check_section. `tree` is the loader's raw value."""

    key: str = ""
    tree: Any = None
    environ: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class PluginConfig:
    """One entry of `plugins`, Falco's keys: which plugin (`library_path`: a Python plugin's dotted path
    `package.module:OBJECT` or entry-point name, or a native `.so`), its `init_config` and `open_params`."""

    name: str = ""
    library_path: str = ""
    init_config: Unchecked = field(default_factory=Unchecked)
    open_params: str = ""


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
    queue_capacity_events: int = field(default=20_000, metadata=limits(ge=1))
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    grpc: GrpcConfig = field(default_factory=GrpcConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    webserver: WebserverConfig = field(default_factory=WebserverConfig)
    append_output: tuple[AppendOutputConfig, ...] = (AppendOutputConfig(suggested_output=True),)
    # Reload when the configuration files or the rules files change (SIGHUP always reloads).
    watch_config_files: bool = True
    plugins: tuple[PluginConfig, ...] = ()
    # As in Falco: absent (None) loads every `plugins` entry; a list loads only those named, in its order.
    load_plugins: tuple[str, ...] | None = None
    # Filled by the loader, never written: the Falco keys read but not acted on, and the configuration files read,
    # in order (the main one, then those of `config_files`).
    unsupported_keys: tuple[UnsupportedKey, ...] = field(default=(), metadata=INTERNAL)
    loaded_files: tuple[str, ...] = field(default=(), metadata=INTERNAL)


def builtin_settings() -> dict[str, Any]:
    """The keys, over the defaults above, that the agent runs with when it is given no configuration file.

    `make run` on a fresh machine then shows every source at work: besides the webhook, the rules, gRPC and stdout
    that the defaults give, the CloudTrail directory input reads the example logs of the checkout.
    """
    if not EXAMPLE_TRAIL_DIR.is_dir():
        return {}
    return {"sources": {"aws_cloudtrail": {"directory": {"paths": [str(EXAMPLE_TRAIL_DIR)]}}}}
