"""Every key of Falco 0.44's `falco.yaml` and how the agent reads it: the one table that translates a configuration,
writes the README's table (`markdown_table`) and is checked against Falco's file by the tests.

A row either maps the key onto the agent's own keys (agent/config/schema.py) with Falco's meaning, or says why
the agent does not act on it; such keys, when written, are listed in one warning at start, never fatal. A key of
neither Falco nor the agent is refused inside a section; at the top level of a configuration that writes Falco's
own keys it is warned about instead (with the closest known key), as Falco does, and refused elsewhere (an
agent.yaml keeps its strictness against typos).
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Collection
from typing import Any

from agent.config.falco.plugins import (
    read_account_list,
    read_cloudtrail_open_params,
    read_download_concurrency,
    read_k8saudit_open_params,
    read_plugin_keys,
    read_s3_interval,
)
from agent.config.falco.rules import (
    Custom,
    FalcoKey,
    MapTo,
    Nothing,
    Same,
    Section,
    Status,
    Translation,
    Unsupported,
    expect,
)
from agent.config.raw import RawTree, RawValue
from agent.errors import ConfigError

KERNEL = "sources.kernel"
_LOG_LEVELS = {"emergency": "error", "alert": "error", "critical": "error", "error": "error", "warning": "warning",
               "notice": "info", "info": "info", "debug": "debug"}
_PRIORITIES = ("emergency", "alert", "critical", "error", "warning", "notice", "informational", "info", "debug")


class EngineKind(enum.StrEnum):
    """engine.kind: the kernel drivers all mean the agent's kernel source."""

    KMOD = "kmod"
    EBPF = "ebpf"
    MODERN_EBPF = "modern_ebpf"
    NODRIVER = "nodriver"
    REPLAY = "replay"
    GVISOR = "gvisor"


_DRIVERS = (EngineKind.KMOD, EngineKind.EBPF, EngineKind.MODERN_EBPF)
_NOT_LIVE = {EngineKind.REPLAY: "replaying a capture file is `falco-agent replay`, not a live source",
             EngineKind.GVISOR: "the agent has no gVisor source; the kernel source stays as sources.kernel.enabled "
                                "says"}


def _lowercase_choice(choices: Collection[str]) -> Any:
    def convert(key: str, raw: RawValue) -> str:
        text = str(expect(key, raw, str, "one of " + ", ".join(choices))).lower()
        if text not in choices:
            raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {text!r} ({raw.where})")
        return text
    return convert


def _log_level(key: str, raw: RawValue) -> str:
    return _LOG_LEVELS[_lowercase_choice(list(_LOG_LEVELS))(key, raw)]


def _not(key: str, raw: RawValue) -> bool:
    return not expect(key, raw, bool, "true or false")


def _as_list(key: str, raw: RawValue) -> list[RawValue]:
    return raw.value if isinstance(raw.value, list) else [raw]


def _read_json_output(t: Translation, key: str, raw: RawValue) -> None:
    fmt = RawValue("json" if expect(key, raw, bool, "true or false") else "text", raw.where)
    for output in ("stdout", "file", "program", "syslog"):  # HTTP and NATS always send JSON
        t.set(f"outputs.{output}.format", fmt, falco_key=key)


def _engine_kind(t: Translation) -> str:
    engine = t.source.get("engine")
    kind = engine.value.get("kind") if engine is not None and isinstance(engine.value, dict) else None
    return str(kind.value) if kind is not None else EngineKind.KMOD  # Falco's default driver


def _read_engine_kind(t: Translation, key: str, raw: RawValue) -> None:
    text = expect(key, raw, str, "a driver name")
    try:
        kind = EngineKind(text)
    except ValueError:
        raise ConfigError(f"{key}: expected one of {', '.join(EngineKind)}, got {text!r} ({raw.where})") from None
    if kind in _NOT_LIVE:
        t.not_supported(key, raw, _NOT_LIVE[kind])
    else:
        t.set(f"{KERNEL}.enabled", RawValue(kind in _DRIVERS, raw.where), falco_key=key)


def _read_buf_size_preset(t: Translation, key: str, raw: RawValue) -> None:
    """Falco's preset n is a buffer of 2**(n-1) MiB (1 to 10); only the preset of the driver in use counts."""
    if key.split(".")[1] != _engine_kind(t):
        return
    preset = expect(key, raw, int, "a whole number from 1 to 10")
    if not 1 <= preset <= 10:
        raise ConfigError(f"{key}: must be 1 to 10 (1 MiB to 512 MiB), got {preset} ({raw.where})")
    pages = (1 << (preset - 1)) * 256  # pages of 4 KiB per MiB
    t.set(f"{KERNEL}.ring_buffer_pages", RawValue(pages, raw.where), falco_key=key)


def _http_option(t: Translation, key: str) -> Any:
    section = t.source["http_output"].value
    found = section.get(key.rpartition(".")[2])
    return found.value if found is not None else None


def _read_ca_bundle(t: Translation, key: str, raw: RawValue) -> None:
    """As Falco: ca_cert, else ca_bundle, is the CA file."""
    if raw.value and not _http_option(t, "http_output.ca_cert"):
        t.set("outputs.http.ca_file", raw, falco_key=key)


def _read_ca_path(t: Translation, key: str, raw: RawValue) -> None:
    """As Falco: the CA folder is used only when neither ca_cert nor ca_bundle names a file."""
    if not _http_option(t, "http_output.ca_cert") and not _http_option(t, "http_output.ca_bundle"):
        t.set("outputs.http.ca_path", raw, falco_key=key)


def _read_ca_cert(t: Translation, key: str, raw: RawValue) -> None:
    if raw.value:
        t.set("outputs.http.ca_file", raw, falco_key=key)


def _read_client_file(t: Translation, key: str, raw: RawValue) -> None:
    """client_cert and client_key count only with `mtls: true`, as in Falco."""
    if _http_option(t, "http_output.mtls") is True:
        t.set(f"outputs.http.{key.rpartition('.')[2]}", raw, falco_key=key)


def _drop_actions(t: Translation) -> list[str]:
    section = t.source["syscall_event_drops"].value
    actions = section.get("actions")
    if actions is None:
        return ["log", "alert"]  # Falco's default
    return [str(item.value) for item in _as_list("syscall_event_drops.actions", actions)]


def _read_drop_threshold(t: Translation, key: str, raw: RawValue) -> None:
    if set(_drop_actions(t)) - {"ignore"}:
        t.set(f"{KERNEL}.drops.threshold", raw, falco_key=key)


def _read_drop_actions(t: Translation, key: str, raw: RawValue) -> None:
    """The agent logs and alerts on drops: `[log, alert]` is honoured; `ignore` (or none) never reports them."""
    actions = set(_drop_actions(t))
    unknown = actions - {"ignore", "log", "alert", "exit"}
    if unknown:
        raise ConfigError(f"{key}: unknown action {', '.join(sorted(unknown))}, expected ignore, log, alert or exit "
                          f"({raw.where})")
    if not actions - {"ignore"}:
        # A ratio of lost events is never above 1: no drop is ever reported.
        t.set(f"{KERNEL}.drops.threshold", RawValue(1.0, raw.where), falco_key=key)
    elif actions != {"log", "alert"}:
        t.not_supported(key, raw, "the agent both logs and alerts on drops (log and alert together), and never "
                                  "exits on them")


def _read_drop_rate(t: Translation, key: str, raw: RawValue) -> None:
    rate = expect(key, raw, (int, float), "a number of messages per second")
    if rate <= 0:
        raise ConfigError(f"{key}: must be > 0, got {rate} ({raw.where})")
    t.set(f"{KERNEL}.drops.alert_interval_s", RawValue(1 / rate, raw.where), falco_key=key)


def _append_output(key: str, raw: RawValue) -> Any:
    """Falco's `extra_fields` items (a field name, or a one-key mapping name: format) as the agent's name/format."""
    entries = raw.value if isinstance(raw.value, list) else None
    if entries is None:
        return raw.value  # the schema refuses it with its line
    for index, entry in enumerate(entries):
        if not isinstance(entry.value, dict) or "extra_fields" not in entry.value:
            continue
        fields = entry.value["extra_fields"]
        items = fields.value if isinstance(fields.value, list) else []
        fields.value = [_extra_field(f"{key}[{index}].extra_fields[{n}]", item) for n, item in enumerate(items)]
    return entries


def _extra_field(key: str, item: RawValue) -> RawValue:
    value = item.value
    if isinstance(value, str):
        return RawValue({"name": RawValue(value, item.where), "format": RawValue(f"%{value}", item.where)},
                        item.where)
    if isinstance(value, dict) and len(value) == 1:
        [(name, fmt)] = value.items()
        return RawValue({"name": RawValue(name, item.where), "format": fmt}, item.where)
    if isinstance(value, dict) and set(value) == {"name", "format"}:
        return item
    raise ConfigError(f"{key}: expected a field name or a one-key mapping name: format ({item.where})")


def _only_false(reason: str) -> Unsupported:
    return Unsupported(reason, unless=lambda v: v is False, accepted="false")


def _only_true(reason: str) -> Unsupported:
    return Unsupported(reason, unless=lambda v: v is True, accepted="true")


def _only_empty(reason: str) -> Unsupported:
    return Unsupported(reason, unless=lambda v: not v, accepted="empty")


_DRIVER_BUFFER = "buffer of the driver in use, 2^(n-1) MiB, as `sources.kernel.ring_buffer_pages` (the agent has " \
                 "one ring shared by all CPUs)"
_NO_DRIVER_KNOB = "the agent's eBPF capture has no such setting"
_SAME_WEBSERVER = ("enabled", "listen_port", "listen_address", "k8s_healthz_endpoint", "prometheus_metrics_enabled",
                   "ssl_enabled", "ssl_certificate", "threadiness")
_SAME_METRICS = ("enabled", "interval", "output_rule", "output_file", "rules_counters_enabled",
                 "resource_utilization_enabled", "state_counters_enabled", "kernel_event_counters_enabled",
                 "convert_memory_to_mb", "include_empty_values")
_CT = "plugins[cloudtrail]"
_KA = "plugins[k8saudit]"

#: The table. Paths of list items: `append_output[]`, or `plugins[NAME]` for the entry named NAME.
ROWS: tuple[FalcoKey, ...] = (
    FalcoKey("config_files", Nothing("merged after the main file in order, as Falco does: a file, or a folder's "
                                    "`.yaml`/`.yml` files in name order; strategies `append` (default), `override`, "
                                    "`add-only`; a missing path is skipped; no nested includes")),
    FalcoKey("watch_config_files", Same("false: no polling, SIGHUP still reloads")),
    FalcoKey("rules_files", Same("folders take their `.yaml` and `.yml` files")),
    FalcoKey("rules_file", MapTo("rules_files", "the old name", convert=_as_list)),
    FalcoKey("rules", Same()),
    FalcoKey("engine", Section()),
    FalcoKey("engine.kind", Custom("kmod, ebpf, modern_ebpf: `sources.kernel.enabled: true`; nodriver: false; "
                                   "replay and gvisor not supported", _read_engine_kind)),
    FalcoKey("engine.kmod", Section()),
    FalcoKey("engine.kmod.buf_size_preset", Custom(_DRIVER_BUFFER, _read_buf_size_preset)),
    FalcoKey("engine.kmod.drop_failed_exit", _only_false(_NO_DRIVER_KNOB)),
    FalcoKey("engine.ebpf", Section()),
    FalcoKey("engine.ebpf.buf_size_preset", Custom(_DRIVER_BUFFER, _read_buf_size_preset)),
    FalcoKey("engine.ebpf.probe", Unsupported("the agent compiles its own eBPF program")),
    FalcoKey("engine.ebpf.drop_failed_exit", _only_false(_NO_DRIVER_KNOB)),
    FalcoKey("engine.modern_ebpf", Section()),
    FalcoKey("engine.modern_ebpf.buf_size_preset", Custom(_DRIVER_BUFFER, _read_buf_size_preset)),
    FalcoKey("engine.modern_ebpf.cpus_for_each_buffer", Unsupported("the agent has one ring buffer for all CPUs")),
    FalcoKey("engine.modern_ebpf.drop_failed_exit", _only_false(_NO_DRIVER_KNOB)),
    FalcoKey("engine.modern_ebpf.disable_iterators", _only_true("the agent reads /proc for its initial process "
                                                                 "table, never BPF iterators")),
    FalcoKey("engine.replay", Unsupported("replaying a capture file is `falco-agent replay`",
                                          unless=lambda v: not (v or {}).get("capture_file"),
                                          accepted="an empty `capture_file`")),
    FalcoKey("engine.gvisor", Unsupported("the agent has no gVisor source")),
    FalcoKey("capture", Unsupported("no capture files of the events around an alert; `falco-agent capture` "
                                    "records live syscalls on demand", unless=lambda v: not (v or {}).get("enabled"),
                                    accepted="`enabled: false`")),
    FalcoKey("load_plugins", Custom("as Falco (absent: every entry); names of built-in plugins turn their source "
                                    "on (see `plugins`); written without naming k8saudit or cloudtrail, it turns "
                                    "`sources.k8s_audit` and `sources.aws_cloudtrail` off unless those are written",
                                    read_plugin_keys)),
    FalcoKey("plugins", Custom("entries named k8saudit, cloudtrail, json or container are served by the built-in "
                               "sources (rows below); any other entry loads its plugin", read_plugin_keys)),
    FalcoKey("plugins[].name", Same("the entry's name; load_plugins names entries")),
    FalcoKey("plugins[].library_path", Same("a Python plugin (`package.module:OBJECT` or an entry point) or a "
                                            "native `.so`")),
    FalcoKey("plugins[].init_config", Same("checked by the plugin's own schema")),
    FalcoKey("plugins[].open_params", Same()),
    FalcoKey(f"{_KA}.library_path", Nothing("nothing is loaded: the built-in k8s_audit source serves it")),
    FalcoKey(f"{_KA}.init_config", Nothing("read key by key (rows below)")),
    FalcoKey(f"{_KA}.open_params", Custom("`http://HOST:PORT/PATH` or `https://…`: `sources.k8s_audit.webhook` "
                                          "`listen` (no host: 0.0.0.0), `path`, with https `tls` from "
                                          "sslCertificate; a path: `sources.k8s_audit.files.paths`, read once "
                                          "(`follow: false`), webhook off", read_k8saudit_open_params)),
    FalcoKey(f"{_KA}.init_config.maxEventSize", MapTo("sources.k8s_audit.webhook.max_event_bytes")),
    FalcoKey(f"{_KA}.init_config.webhookMaxBatchSize", MapTo("sources.k8s_audit.webhook.max_body_bytes")),
    FalcoKey(f"{_KA}.init_config.sslCertificate", Nothing("with an https open_params, the webhook's "
                                                          "`tls.cert_file` and `tls.key_file` (one PEM holds both)")),
    FalcoKey(f"{_KA}.init_config.useAsync", Nothing("the agent's inputs always run on threads of their own")),
    FalcoKey(f"{_CT}.library_path", Nothing("nothing is loaded: the built-in aws_cloudtrail source serves it")),
    FalcoKey(f"{_CT}.init_config", Nothing("read key by key (rows below)")),
    FalcoKey(f"{_CT}.open_params", Custom("`s3://BUCKET/PREFIX`: `sources.aws_cloudtrail.s3` `bucket` and `prefix` "
                                          "(an `AWSLogs/ACCOUNT/CloudTrail/REGION` part sets `accounts` and "
                                          "`regions`), polled where the plugin reads once; `sqs://QUEUE` (its name, "
                                          "resolved at start): `sqs.queue_url`; a path: `directory.paths`, read once",
                                          read_cloudtrail_open_params)),
    FalcoKey(f"{_CT}.init_config.s3DownloadConcurrency", Custom("`s3.concurrency` or `sqs.concurrency`, for the "
                                                                "input open_params names",
                                                                read_download_concurrency)),
    FalcoKey(f"{_CT}.init_config.sqsDelete", _only_true("the agent deletes each message once its files are "
                                                         "evaluated")),
    FalcoKey(f"{_CT}.init_config.useS3SNS", Nothing("S3 notifications relayed by SNS are recognised per message")),
    FalcoKey(f"{_CT}.init_config.s3Interval", Custom("`s3.start_date`: the day the interval starts (`48h`, an RFC "
                                                     "3339 time); the end of a range is not supported",
                                                     read_s3_interval)),
    FalcoKey(f"{_CT}.init_config.s3AccountList", Custom("`s3.accounts`", read_account_list)),
    FalcoKey(f"{_CT}.init_config.useAsync", Nothing("the agent's inputs always run on threads of their own")),
    FalcoKey(f"{_CT}.init_config.aws", Section()),
    FalcoKey(f"{_CT}.init_config.aws.profile", MapTo("sources.aws_cloudtrail.aws.profile")),
    FalcoKey(f"{_CT}.init_config.aws.region", MapTo("sources.aws_cloudtrail.aws.region")),
    FalcoKey(f"{_CT}.init_config.aws.config", _only_empty("set AWS_CONFIG_FILE in the agent's environment")),
    FalcoKey(f"{_CT}.init_config.aws.credentials", _only_empty("set AWS_SHARED_CREDENTIALS_FILE in the agent's "
                                                               "environment")),
    FalcoKey("plugins[json].library_path", Nothing("nothing to load: `json.*` fields are built in")),
    FalcoKey("plugins[json].init_config", Nothing("the json plugin takes none")),
    FalcoKey("plugins[json].open_params", Nothing("the json plugin takes none")),
    FalcoKey("plugins[container].library_path", Nothing("nothing to load: `container.*` and `k8s.*` fields are "
                                                        "built into the kernel source")),
    FalcoKey("plugins[container].init_config", _only_empty("the kernel source asks the runtimes at "
                                                           "`sources.kernel.container_runtime_sockets`")),
    FalcoKey("plugins[container].open_params", Nothing("the container plugin takes none")),
    FalcoKey("plugins_hostinfo", _only_true("the agent's plugin API has no host info to turn off")),
    FalcoKey("time_format_iso_8601", Same()),
    FalcoKey("buffer_format_base64", _only_false("data buffers are shown as printable text")),
    FalcoKey("priority", Same("any case", convert=_lowercase_choice(_PRIORITIES))),
    FalcoKey("json_output", Custom("`format: json` (or `text`) of outputs stdout, file, program and syslog "
                                   "(HTTP and NATS always send JSON)", _read_json_output)),
    FalcoKey("json_include_output_property", MapTo("outputs.json.include_output")),
    FalcoKey("json_include_message_property", MapTo("outputs.json.include_message")),
    FalcoKey("json_include_output_fields_property", MapTo("outputs.json.include_output_fields")),
    FalcoKey("json_include_tags_property", MapTo("outputs.json.include_tags")),
    FalcoKey("buffered_outputs", MapTo("outputs.buffered")),
    FalcoKey("rule_matching", Same()),
    FalcoKey("outputs_queue", Section()),
    FalcoKey("outputs_queue.capacity", MapTo("outputs.queue_capacity", "0: each output's own `max_queue`")),
    FalcoKey("append_output", Same("`extra_fields` items: a field name or a one-key mapping `name: format`",
                                   convert=_append_output)),
    FalcoKey("static_fields", Unsupported("the agent has no `static.*` fields")),
    FalcoKey("stdout_output", Section()),
    FalcoKey("stdout_output.enabled", MapTo("outputs.stdout.enabled")),
    FalcoKey("syslog_output", Section()),
    FalcoKey("syslog_output.enabled", MapTo("outputs.syslog.enabled")),
    FalcoKey("file_output", Section()),
    FalcoKey("file_output.enabled", MapTo("outputs.file.enabled")),
    FalcoKey("file_output.keep_alive", MapTo("outputs.file.keep_alive")),
    FalcoKey("file_output.filename", MapTo("outputs.file.path")),
    FalcoKey("http_output", Section()),
    FalcoKey("http_output.enabled", MapTo("outputs.http.enabled")),
    FalcoKey("http_output.url", MapTo("outputs.http.url")),
    FalcoKey("http_output.user_agent", MapTo("outputs.http.user_agent")),
    FalcoKey("http_output.insecure", MapTo("outputs.http.verify_tls", "negated", convert=_not)),
    FalcoKey("http_output.ca_cert", Custom("`outputs.http.ca_file`", _read_ca_cert)),
    FalcoKey("http_output.ca_bundle", Custom("`outputs.http.ca_file` when ca_cert is empty", _read_ca_bundle)),
    FalcoKey("http_output.ca_path", Custom("`outputs.http.ca_path` when ca_cert and ca_bundle are empty",
                                           _read_ca_path)),
    FalcoKey("http_output.mtls", Nothing("true: client_cert and client_key are used")),
    FalcoKey("http_output.client_cert", Custom("`outputs.http.client_cert` when mtls is true", _read_client_file)),
    FalcoKey("http_output.client_key", Custom("`outputs.http.client_key` when mtls is true", _read_client_file)),
    FalcoKey("http_output.echo", MapTo("outputs.http.echo")),
    FalcoKey("http_output.compress_uploads", MapTo("outputs.http.compress_uploads")),
    FalcoKey("http_output.keep_alive", MapTo("outputs.http.keep_alive")),
    FalcoKey("http_output.max_consecutive_timeouts", Unsupported("the agent retries each POST with backoff and "
                                                                 "counts what it drops")),
    FalcoKey("program_output", Section()),
    FalcoKey("program_output.enabled", MapTo("outputs.program.enabled")),
    FalcoKey("program_output.keep_alive", MapTo("outputs.program.keep_alive")),
    FalcoKey("program_output.program", MapTo("outputs.program.command")),
    FalcoKey("webserver", Section(is_agent_section=True)),
    *(FalcoKey(f"webserver.{name}", Same()) for name in _SAME_WEBSERVER),
    FalcoKey("log_stderr", MapTo("logging.stderr")),
    FalcoKey("log_syslog", MapTo("logging.syslog")),
    FalcoKey("log_level", MapTo("logging.level", "emergency, alert, critical: error; notice: info",
                                convert=_log_level)),
    FalcoKey("libs_logger", Unsupported("there are no libs: the agent's own logs follow log_level")),
    FalcoKey("output_timeout", MapTo("outputs.timeout_ms")),
    FalcoKey("syscall_event_timeouts", Unsupported("the agent waits on its ring buffer: no timeouts to count")),
    FalcoKey("syscall_event_drops", Section()),
    FalcoKey("syscall_event_drops.threshold", Custom("`sources.kernel.drops.threshold`", _read_drop_threshold)),
    FalcoKey("syscall_event_drops.actions", Custom("[log, alert]: as the agent does; [] or [ignore]: never "
                                                   "reported; log or alert alone and exit not supported",
                                                   _read_drop_actions)),
    FalcoKey("syscall_event_drops.rate", Custom("`sources.kernel.drops.alert_interval_s` = 1 / rate",
                                                _read_drop_rate)),
    FalcoKey("syscall_event_drops.max_burst", Unsupported("one report per interval at most",
                                                          unless=lambda v: v == 1, accepted="1")),
    FalcoKey("syscall_event_drops.simulate_drops", _only_false("no simulated drops")),
    FalcoKey("metrics", Section(is_agent_section=True)),
    *(FalcoKey(f"metrics.{name}", Same()) for name in _SAME_METRICS),
    FalcoKey("metrics.kernel_event_counters_per_cpu_enabled", _only_false("the kernel source counts for all CPUs "
                                                                          "together")),
    FalcoKey("metrics.libbpf_stats_enabled", Unsupported("no libbpf program statistics")),
    FalcoKey("metrics.plugins_metrics_enabled", Unsupported("plugins report no metrics of their own")),
    FalcoKey("metrics.kernel_iter_event_counters_enabled", Unsupported("no BPF iterators")),
    FalcoKey("metrics.jemalloc_stats_enabled", _only_false("no jemalloc")),
    FalcoKey("base_syscalls", Unsupported("the agent captures the syscalls its rules and its process state need, "
                                          "plus `sources.kernel.extra_syscalls`; `!name` exclusions, repair and "
                                          "all have no counterpart")),
    FalcoKey("falco_libs", Unsupported("the agent's process table has no such limits")),
)
TABLE: dict[str, FalcoKey] = {row.path: row for row in ROWS}


def translate(tree: RawTree, agent_keys: Collection[str]) -> Translation:
    """The agent's tree for a configuration as written; see the module docstring for keys of neither."""
    t = Translation(TABLE, tree)
    reads_as_falco = any(key in TABLE and key not in agent_keys for key in tree)
    for key, raw in tree.items():
        if key in TABLE:
            t.apply(key, key, raw)
        elif key in agent_keys or not reads_as_falco:
            t.keep(key, raw)  # an unknown one is refused by the schema check, with its line
        else:
            t.not_supported(key, raw, _unknown(key, [*TABLE, *agent_keys]))
    return t


def _unknown(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, [k for k in known if "." not in k and "[" not in k], n=1)
    return "not a key of Falco or of the agent" + (f"; did you mean {close[0]}?" if close else "")


def covering_row(path: str) -> FalcoKey | None:
    """The row that says how `path` (a key of a falco.yaml, list items as `key[]`) is read: its own, or that of
    the closest key above it whose rule reads the whole value."""
    parts = path.replace("[]", "").split(".")
    for end in range(len(parts), 0, -1):
        row = TABLE.get(".".join(parts[:end]))
        if row is not None and (end == len(parts) or not isinstance(row.rule, Section)):
            return row
    return None


def markdown_table() -> str:
    """The README's table of Falco's keys."""
    lines = ["| Falco key | honoured? | how (agent key) or why not |", "|---|---|---|"]
    for row in ROWS:
        if isinstance(row.rule, Section) and not row.rule.note:
            continue
        status = "yes" if row.rule.status is Status.HONOURED else "**no**"
        if isinstance(row.rule, Unsupported) and row.rule.accepted:
            status = "partly"
        lines.append(f"| `{row.path}` | {status} | {row.rule.meaning.replace('|', '/')} |")
    return "\n".join(lines) + "\n"

