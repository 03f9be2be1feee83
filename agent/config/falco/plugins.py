"""Falco's `load_plugins` and `plugins`: entries named like the plugins the built-in sources stand in for
(k8saudit, cloudtrail, json, container) are read with those plugins' meaning of `init_config` and `open_params`
and not loaded; every other entry loads as the agent loads plugins.

As in Falco, `load_plugins` absent loads every entry and a list loads only those it names. A configuration that
writes either key turns the built-in k8s_audit and aws_cloudtrail inputs off unless a loaded entry names their
plugin or the agent's own `sources.k8s_audit` / `sources.aws_cloudtrail` section is written too: Falco's
`load_plugins: []` runs no webhook and reads no trail.
"""

from __future__ import annotations

import enum
import re
import urllib.parse
from datetime import UTC, date, datetime, timedelta

import yaml

from agent.config.falco.rules import Translation, expect, mapping_of
from agent.config.raw import RawTree, RawValue, describe, wrap
from agent.errors import ConfigError

K8S_AUDIT = "sources.k8s_audit"
CLOUDTRAIL = "sources.aws_cloudtrail"
#: The plugins the built-in sources serve, and the agent section each one's input is (None: fields only).
BUILTIN_PLUGINS: dict[str, str | None] = {"k8saudit": K8S_AUDIT, "cloudtrail": CLOUDTRAIL, "json": None,
                                          "container": None}
_ENTRY_KEYS = ("name", "library_path", "init_config", "open_params")
_ENTRY_RE = re.compile(r"^plugins\[(\d+)\]")


def read_plugin_keys(t: Translation, key: str, raw: RawValue) -> None:
    """`plugins` and `load_plugins` together (called for whichever comes; the other one then does nothing)."""
    if key == "load_plugins" and "plugins" in t.source:
        return
    entries_raw, load_raw = t.source.get("plugins"), t.source.get("load_plugins")
    entries = entries_raw.value if entries_raw is not None and isinstance(entries_raw.value, list) else []
    names = {_name(item): index for index, item in enumerate(entries) if isinstance(item.value, dict)}
    load = load_raw.value if load_raw is not None and isinstance(load_raw.value, list) else None
    selected = set(names) if load is None else {item.value for item in load}
    served: set[str] = set()
    kept = []
    for index, item in enumerate(entries):
        name = _name(item) if isinstance(item.value, dict) else None
        if name not in BUILTIN_PLUGINS:
            kept.append(item)
            continue
        if name in selected:
            served.add(name)
            _read_entry(t, f"plugins[{index}]", name, item)
    if entries_raw is not None:
        t.keep("plugins", RawValue(kept, entries_raw.where) if entries_raw.value is not None else entries_raw)
    if load_raw is not None:
        t.keep("load_plugins", load_raw if load is None else
               RawValue([item for item in load if item.value not in served], load_raw.where))
    said = load_raw if load_raw is not None else entries_raw
    assert said is not None  # this row is applied only when one of the two keys is written
    for name, section in BUILTIN_PLUGINS.items():
        if section is not None and name not in served and not t.is_written(section):
            t.set(f"{section}.enabled", RawValue(False, said.where), falco_key="load_plugins")


def _name(item: RawValue) -> object:
    name = item.value.get("name")
    return name.value if isinstance(name, RawValue) else None


def _read_entry(t: Translation, key: str, name: str, item: RawValue) -> None:
    entry = mapping_of(key, item)
    for field, value in entry.items():
        if field not in _ENTRY_KEYS:
            raise ConfigError(f"{key}.{field}: unknown key ({value.where}); known keys here: {', '.join(_ENTRY_KEYS)}")
    section = BUILTIN_PLUGINS[name]
    if section is not None:
        t.set(f"{section}.enabled", RawValue(True, item.where), falco_key=f"{key}.name")
    init = init_config(key, entry)
    for field, value in init.items():
        row = t.row(f"plugins[{name}].init_config.{field}")
        if row is None:
            raise ConfigError(f"{key}.init_config.{field}: not a key of the {name} plugin's init_config "
                              f"({value.where}); its keys: {t.known_under(f'plugins[{name}].init_config')}")
        t.apply(row, f"{key}.init_config.{field}", value)
    for field in ("init_config", "open_params", "library_path"):
        if field in entry:
            t.apply(f"plugins[{name}].{field}", f"{key}.{field}", entry[field])


def init_config(key: str, entry: RawTree) -> RawTree:
    """An entry's init_config as a mapping: Falco takes a mapping or a JSON string (empty: none)."""
    raw = entry.get("init_config")
    if raw is None or raw.value is None or raw.value == "":
        return {}
    if isinstance(raw.value, str):  # JSON, which YAML reads
        try:
            raw = wrap(yaml.safe_load(raw.value), raw.where)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{key}.init_config: not valid JSON: {exc} ({raw.where})") from None
    return mapping_of(f"{key}.init_config", raw)


def _entry_of(t: Translation, key: str) -> tuple[str, RawTree]:
    """The `plugins` entry a key of it (`plugins[2].open_params`) belongs to, as written, with its own key."""
    match = _ENTRY_RE.match(key)
    assert match is not None, key
    entries = t.source["plugins"].value
    return match.group(0), mapping_of(match.group(0), entries[int(match.group(1))])


def _open_params(t: Translation, key: str) -> str:
    raw = _entry_of(t, key)[1].get("open_params")
    return str(raw.value) if raw is not None and raw.value is not None else ""


def _init_value(t: Translation, key: str, field: str) -> RawValue | None:
    """A key of the entry's init_config, matched in any case as Go's JSON matches it."""
    init = init_config(*_entry_of(t, key))
    return next((value for name, value in init.items() if name.casefold() == field.casefold()), None)


def read_k8saudit_open_params(t: Translation, key: str, raw: RawValue) -> None:
    """`http://[host]:port/path` or `https://…`: the webhook (an empty host is every interface); a path: the audit
    log file, read once as the plugin reads it."""
    params = str(expect(key, raw, str, "a URL or a path"))
    if not params.startswith(("http://", "https://")):
        t.set(f"{K8S_AUDIT}.files.paths", RawValue([RawValue(params, raw.where)], raw.where), falco_key=key)
        t.set(f"{K8S_AUDIT}.files.follow", RawValue(False, raw.where), falco_key=key)
        t.set(f"{K8S_AUDIT}.webhook.enabled", RawValue(False, raw.where), falco_key=key)
        return
    url = urllib.parse.urlsplit(params)
    try:
        port = url.port if url.port is not None else (443 if url.scheme == "https" else 80)
    except ValueError:
        raise ConfigError(f"{key}: '{params}' has no valid port ({raw.where})") from None
    host = url.hostname or "0.0.0.0"
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    webhook = f"{K8S_AUDIT}.webhook"
    t.set(f"{webhook}.enabled", RawValue(True, raw.where), falco_key=key)
    t.set(f"{webhook}.listen", RawValue(listen, raw.where), falco_key=key)
    t.set(f"{webhook}.path", RawValue(url.path or "/", raw.where), falco_key=key)
    if url.scheme == "https":
        cert = _init_value(t, key, "sslCertificate")
        pem = RawValue(cert.value, cert.where) if cert is not None else RawValue("/etc/falco/falco.pem", raw.where)
        t.set(f"{webhook}.tls.cert_file", pem, falco_key=key)
        t.set(f"{webhook}.tls.key_file", pem, falco_key=key)


class TrailInput(enum.StrEnum):
    """What a cloudtrail entry's open_params read from (the agent's section under sources.aws_cloudtrail)."""

    S3 = "s3"
    SQS = "sqs"
    DIRECTORY = "directory"


def trail_input(params: str) -> TrailInput:
    if params.startswith("s3://"):
        return TrailInput.S3
    if params.startswith("sqs://"):
        return TrailInput.SQS
    return TrailInput.DIRECTORY


def read_cloudtrail_open_params(t: Translation, key: str, raw: RawValue) -> None:
    """`s3://bucket/prefix`, `sqs://queue` (a name or a URL) or a local file or folder read once."""
    params = str(expect(key, raw, str, "s3://bucket/prefix, sqs://queue or a path"))
    kind = trail_input(params)
    if not params:
        raise ConfigError(f"{key}: give s3://bucket/prefix, sqs://queue or a path ({raw.where})")
    if kind == TrailInput.S3:
        bucket, _, prefix = params.removeprefix("s3://").partition("/")
        trail_prefix, has_layout, layout = prefix.partition("AWSLogs/")
        t.set(f"{CLOUDTRAIL}.s3.bucket", RawValue(bucket, raw.where), falco_key=key)
        t.set(f"{CLOUDTRAIL}.s3.prefix", RawValue(trail_prefix.strip("/"), raw.where), falco_key=key)
        parts = layout.strip("/").split("/") if has_layout else []
        if "CloudTrail" in parts:  # AWSLogs/[org/]account/CloudTrail/region/...: one account, maybe one region
            at = parts.index("CloudTrail")
            if at >= 1:
                t.set(f"{CLOUDTRAIL}.s3.accounts", RawValue([RawValue(parts[at - 1], raw.where)], raw.where),
                      falco_key=key)
            if len(parts) > at + 1 and parts[at + 1]:
                t.set(f"{CLOUDTRAIL}.s3.regions", RawValue([RawValue(parts[at + 1], raw.where)], raw.where),
                      falco_key=key)
    elif kind == TrailInput.SQS:
        t.set(f"{CLOUDTRAIL}.sqs.queue_url", RawValue(params.removeprefix("sqs://"), raw.where), falco_key=key)
    else:
        t.set(f"{CLOUDTRAIL}.directory.paths", RawValue([RawValue(params, raw.where)], raw.where), falco_key=key)
        t.set(f"{CLOUDTRAIL}.directory.follow", RawValue(False, raw.where), falco_key=key)


def read_download_concurrency(t: Translation, key: str, raw: RawValue) -> None:
    """Downloads at once: the S3 poller's or the SQS consumer's workers, whichever open_params names."""
    kind = trail_input(_open_params(t, key))
    if kind != TrailInput.DIRECTORY:
        t.set(f"{CLOUDTRAIL}.{kind}.concurrency", raw, falco_key=key)


_GO_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _moment(text: str, now: datetime) -> datetime | None:
    """A point in time as s3Interval writes one: a Go duration before now (`48h`) or an RFC 3339 time."""
    if _GO_DURATION.match(text):
        return now - timedelta(seconds=sum(float(n) * _SECONDS[u] for n, u in _GO_PART.findall(text)))
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def s3_interval_start(text: str, now: datetime) -> tuple[date, bool] | None:
    """The first day of an s3Interval (`48h`, an RFC 3339 time, or a range `A-B` of them) and whether it has an
    end; None when it is neither."""
    single = _moment(text, now)
    if single is not None:
        return single.astimezone(UTC).date(), False
    for at in (i for i, char in enumerate(text) if char == "-"):
        start, end = _moment(text[:at], now), _moment(text[at + 1:], now)
        if start is not None and end is not None:
            return start.astimezone(UTC).date(), True
    return None


def read_s3_interval(t: Translation, key: str, raw: RawValue) -> None:
    """Where the S3 input starts: the day the interval starts (the agent reads whole days, then keeps polling)."""
    text = str(expect(key, raw, str, "a duration, an RFC 3339 time or a range of them"))
    if not text:
        return
    found = s3_interval_start(text, datetime.now(UTC))
    if found is None:
        raise ConfigError(f"{key}: expected a duration (48h), an RFC 3339 time or a range of them (48h-24h), "
                          f"got {describe(text)} ({raw.where})")
    start, has_end = found
    t.set(f"{CLOUDTRAIL}.s3.start_date", RawValue(start.isoformat(), raw.where), falco_key=key)
    if has_end:
        t.not_supported(key, raw, "the end of the range: the agent reads from the start day on and keeps polling")


def read_account_list(t: Translation, key: str, raw: RawValue) -> None:
    text = str(expect(key, raw, str, "comma-separated account IDs"))
    accounts = [RawValue(a.strip(), raw.where) for a in text.split(",") if a.strip()]
    t.set(f"{CLOUDTRAIL}.s3.accounts", RawValue(accounts, raw.where), falco_key=key)
