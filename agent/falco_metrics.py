"""Falco's own metrics, under Falco's names: `falcosecurity_*` Prometheus families and the `output_fields` of
Falco's "metrics snapshot" (`falco.*`, `scap.*`).

One reading (`FalcoReadings`) is taken from the scrape's `MetricsSnapshot` and what the runtime knows besides
(the rules and when they loaded, the configuration files, /proc); two renderers turn it into what Falco shows:
`prometheus_families` for `/metrics` and `SnapshotFields` for `metrics.output_rule` / `metrics.output_file`.

What the agent does not measure is absent, never 0: the state counters (`state_counters_enabled`: Falco's thread
table and fd counters, `n_containers`, `n_missing_container_images`), the per-reason and per-CPU kernel drop
families (`n_drops_buffer_total{dir,drop}`, `n_drops_scratch_map`, `n_drops_page_faults`, `n_drops_bug`,
`n_preemptions`, `*_cpu_total`), libbpf and jemalloc stats, `scap_engine_name_info`, plugin metrics, and the
container memory when no cgroup memory file is readable. The kernel source's counters map as: `n_evts` = records
the probe wrote plus those it lost for a full ring buffer, `n_drops` = those lost.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import socket
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

from agent import __version__
from agent.config.schema import MetricsConfig
from agent.metrics import NOT_NAME, MetricsSnapshot
from agent.priority import Priority
from agent.resource_usage import HostInfo, ResourceUsage, read_host_info, read_resource_usage

__all__ = ["FalcoMetricsReader", "FalcoReadings", "FileDigest", "KernelCounters", "RuleMatches", "RulesLoad",
           "SnapshotFields", "digest_files", "prometheus_families", "sanitize_name"]

log = structlog.get_logger(__name__)

#: Keys of the kernel source's `metrics()` the scap counters come from: records it handed on, records the kernel
#: lost because the ring buffer was full.
KERNEL_RECORDS_KEY = "records"
KERNEL_LOST_KEY = "kernel_lost"
#: The source of the agent's internal alerts, which no rule raises: not counted as rule matches.
INTERNAL_SOURCE = "internal"
_FALCO = "falcosecurity_falco_"
_SCAP = "falcosecurity_scap_"
_NOT_FIELD = re.compile(r"[^a-zA-Z0-9_:]")
_UNDERSCORES = re.compile(r"_+")
_NS_PER_S = 1_000_000_000
_BYTES_PER_KIB = 1024
_BYTES_PER_MIB = 1024 * 1024


def sanitize_name(name: str) -> str:
    """A rule or file name as Falco writes it into a metric field name (`falco.rules.<name>`)."""
    return _UNDERSCORES.sub("_", _NOT_FIELD.sub("_", name)).removesuffix("_")


@dataclass(frozen=True, slots=True)
class FileDigest:
    path: str
    sha256: str

    @property
    def file_name(self) -> str:
        return Path(self.path).name


def digest_files(paths: Iterable[str]) -> tuple[FileDigest, ...]:
    """The SHA-256 of each regular file; one that cannot be read now, or is not a regular file (a FIFO would block
    the read), is left out, and said."""
    digests = []
    for path in paths:
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            digests.append(FileDigest(path, hashlib.sha256(Path(path).read_bytes()).hexdigest()))
        except OSError as exc:
            log.warning("metrics_file_digest_failed", file=path, error=exc.strerror,
                        hint="its sha256 is left out of the metrics")
    return tuple(digests)


class RulesLoad:
    """The rules files in use and when they were (re)loaded. Made on the engine loop when a reload is swapped in,
    so the files are hashed later, by the first reading that needs them, never on that loop."""

    def __init__(self, files: Iterable[str | Path], *, at_ns: int | None = None) -> None:
        self.files = tuple(str(f) for f in files)
        self.at_ns = time.time_ns() if at_ns is None else at_ns
        self._digests: tuple[FileDigest, ...] | None = None

    @property
    def digests(self) -> tuple[FileDigest, ...]:
        if self._digests is None:  # two threads may both hash: the same result, no lock needed
            self._digests = digest_files(self.files)
        return self._digests


@dataclass(frozen=True, slots=True)
class RuleMatches:
    rule: str
    priority: Priority
    source: str
    tags: tuple[str, ...]
    count: int


@dataclass(frozen=True, slots=True)
class KernelCounters:
    n_evts: int
    n_drops: int


@dataclass(frozen=True, slots=True)
class FalcoReadings:
    """One reading of everything Falco's metrics show; a part its `metrics.*_enabled` key turns off is None."""

    at_ns: int
    hostname: str
    host: HostInfo
    reload_ns: int
    outputs_queue_drops: int
    num_evts: int
    rules_files: tuple[FileDigest, ...]
    config_files: tuple[FileDigest, ...]
    #: Every loaded rule (matched or not) and the rules an alert came from since, with their counts.
    rule_matches: tuple[RuleMatches, ...] | None
    usage: ResourceUsage | None
    kernel: KernelCounters | None
    #: The event source the snapshot is attributed to (`evt.source`): `syscall` when the kernel source runs.
    source: str

    @property
    def duration_s(self) -> int:
        return (self.at_ns - self.host.start_ns) // _NS_PER_S


class RuleLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def priority(self) -> Priority: ...

    @property
    def source(self) -> str: ...

    @property
    def tags(self) -> tuple[str, ...]: ...


class FalcoMetricsReader:
    """Takes `FalcoReadings` from a scrape's snapshot; `rules` and `rules_load` are read at each reading, so that a
    reload shows at once."""

    def __init__(self, settings: MetricsConfig, *, rules: Callable[[], Sequence[RuleLike]],
                 rules_load: Callable[[], RulesLoad], config_files: Iterable[str], hostname: str = "",
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.settings = settings
        self._rules = rules
        self._rules_load = rules_load
        self._config_files = digest_files(config_files)
        self._hostname = hostname or socket.gethostname()
        self._host = read_host_info()
        self._clock_ns = clock_ns

    def read(self, snap: MetricsSnapshot) -> FalcoReadings:
        settings = self.settings
        load = self._rules_load()
        kernel = _kernel_counters(snap)
        return FalcoReadings(
            at_ns=self._clock_ns(), hostname=self._hostname, host=self._host, reload_ns=load.at_ns,
            outputs_queue_drops=sum(counters.get("dropped", 0) for counters in snap.outputs.values()),
            num_evts=snap.events_total, rules_files=load.digests, config_files=self._config_files,
            rule_matches=self._rule_matches(snap) if settings.rules_counters_enabled else None,
            usage=read_resource_usage() if settings.resource_utilization_enabled else None,
            kernel=kernel if settings.kernel_event_counters_enabled else None,
            source="syscall" if kernel is not None else next(iter(sorted(snap.events_by_source)), ""))

    def _rule_matches(self, snap: MetricsSnapshot) -> tuple[RuleMatches, ...]:
        counts: dict[tuple[str, str], tuple[Priority, int]] = {}
        for (name, label, source), count in snap.alerts_by_rule.items():
            if source == INTERNAL_SOURCE:
                continue
            _, before = counts.get((name, source), (Priority.DEBUG, 0))
            counts[(name, source)] = (Priority.parse(label), before + count)
        matches = []
        for rule in self._rules():
            priority, count = counts.pop((rule.name, rule.source), (rule.priority, 0))
            matches.append(RuleMatches(rule.name, priority, rule.source, rule.tags, count))
        # Rules a reload removed since they matched: still counted, their tags no longer known.
        matches += [RuleMatches(name, priority, source, (), count) for (name, source), (priority, count)
                    in sorted(counts.items())]
        return tuple(matches)


def _kernel_counters(snap: MetricsSnapshot) -> KernelCounters | None:
    for entry in snap.sources:
        values = entry.values
        if KERNEL_LOST_KEY in values and KERNEL_RECORDS_KEY in values:
            lost = int(values[KERNEL_LOST_KEY])
            return KernelCounters(n_evts=int(values[KERNEL_RECORDS_KEY]) + lost, n_drops=lost)
    return None


# ----- Prometheus ---------------------------------------------------------------------------------------------

def _info(name: str, doc: str, labels: Mapping[str, str]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), 1)
    return family


def _file_infos(name: str, doc: str, digests: tuple[FileDigest, ...]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["file_name", "sha256"])
    for digest in digests:
        family.add_metric([digest.file_name, digest.sha256], 1)
    return family


def prometheus_families(readings: FalcoReadings) -> Iterator[Metric]:
    """Falco's families, names, types, labels and units (memory in bytes and CPU as a ratio, whatever
    `convert_memory_to_mb` says: that key is for the snapshot's fields)."""
    host = readings.host
    yield _info(_FALCO + "version_info", "The agent's version.", {"version": __version__})
    yield _file_infos(_FALCO + "sha256_rules_files_info", "Rules files loaded, by name and SHA-256.",
                      readings.rules_files)
    yield _file_infos(_FALCO + "sha256_config_files_info", "Configuration files loaded, by name and SHA-256.",
                      readings.config_files)
    yield CounterMetricFamily(_FALCO + "outputs_queue_num_drops", "Alerts the outputs dropped.",
                              readings.outputs_queue_drops)
    yield GaugeMetricFamily(_FALCO + "reload_timestamp_nanoseconds", "When the rules were last (re)loaded.",
                            readings.reload_ns)
    if readings.rule_matches is not None:
        yield _rules_matches(readings.rule_matches)
    yield from _usage_families(readings.usage)
    if readings.kernel is not None:
        yield CounterMetricFamily(_SCAP + "n_evts", "Syscall records the kernel probe produced, delivered or lost.",
                                  readings.kernel.n_evts)
        yield CounterMetricFamily(_SCAP + "n_drops", "Syscall records lost in the kernel (ring buffer full).",
                                  readings.kernel.n_drops)
    yield _info(_FALCO + "kernel_release_info", "The host's kernel release.", {"kernel_release": host.kernel_release})
    yield GaugeMetricFamily(_FALCO + "start_timestamp_nanoseconds", "When the agent started.", host.start_ns)
    yield CounterMetricFamily(_FALCO + "duration_seconds", "Seconds since the agent started.", readings.duration_s)
    yield _info("falcosecurity_evt_hostname_info", "The host name alerts carry.", {"hostname": readings.hostname})
    yield GaugeMetricFamily(_FALCO + "host_boot_timestamp_nanoseconds", "When the host booted.", host.boot_ns)
    yield GaugeMetricFamily(_FALCO + "host_num_cpus_total", "Online CPUs.", host.num_cpus)


def _rules_matches(matches: tuple[RuleMatches, ...]) -> CounterMetricFamily:
    """One sample per rule that matched, as Falco: priority as its number, each tag a `tag_<tag>="true"` label."""
    family = CounterMetricFamily(_FALCO + "rules_matches", "Alerts raised, by rule.")
    for match in matches:
        if match.count:
            labels = {"priority": str(int(match.priority)), "rule_name": match.rule, "source": match.source,
                      **{"tag_" + NOT_NAME.sub("_", tag): "true" for tag in match.tags}}
            family.samples.append(Sample(family.name + "_total", labels, match.count))
    return family


def _usage_families(usage: ResourceUsage | None) -> Iterator[Metric]:
    if usage is None:
        return
    gauges: tuple[tuple[str, str, float | None], ...] = (
        ("cpu_usage_ratio", "The agent's CPU use over its lifetime, in CPUs.", usage.cpu_usage_perc / 100),
        ("memory_rss_bytes", "The agent's resident memory.", usage.memory_rss_kb * _BYTES_PER_KIB),
        ("memory_vsz_bytes", "The agent's virtual memory.", usage.memory_vsz_kb * _BYTES_PER_KIB),
        ("memory_pss_bytes", "The agent's proportional set size.", _times(usage.memory_pss_kb, _BYTES_PER_KIB)),
        ("container_memory_used_bytes", "Memory use of the agent's cgroup.", usage.container_memory_used_bytes),
        ("host_cpu_usage_ratio", "The host's CPU use since boot.", _times(usage.host_cpu_usage_perc, 0.01)),
        ("host_memory_used_bytes", "The host's memory use.", _times(usage.host_memory_used_kb, _BYTES_PER_KIB)),
        ("host_procs_running_total", "Processes running on the host now.", usage.host_procs_running),
        ("host_open_fds_total", "File descriptors the host has allocated.", usage.host_open_fds),
    )
    for name, doc, value in gauges:
        if value is not None:
            yield GaugeMetricFamily(_FALCO + name, doc, value)


def _times(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


# ----- snapshot fields ----------------------------------------------------------------------------------------

class SnapshotFields:
    """The `output_fields` of Falco's metrics snapshot, one reading after another: rates and `*_prev` values come
    from the previous reading. Zero values are left out unless `include_empty_values` (event and drop totals and
    the drop percentage always stay, as in Falco); memory is in MiB (`*_mb`) with `convert_memory_to_mb`, else
    as read (`*_kb`, `container_memory_used_bytes`)."""

    def __init__(self, settings: MetricsConfig) -> None:
        self.settings = settings
        self._last_at_ns = 0
        self._last_num_evts = 0
        self._last_n_evts = 0
        self._last_n_drops = 0

    def fields(self, readings: FalcoReadings) -> dict[str, Any]:
        elapsed_s = (readings.at_ns - self._last_at_ns) / _NS_PER_S if self._last_at_ns else 0.0
        self._last_at_ns = readings.at_ns
        host = readings.host
        out: dict[str, Any] = {
            "evt.time": readings.at_ns, "falco.reload_ts": readings.reload_ns, "falco.version": __version__,
            "falco.start_ts": host.start_ns, "falco.duration_sec": readings.duration_s,
            "falco.kernel_release": host.kernel_release, "evt.hostname": readings.hostname,
            "falco.host_boot_ts": host.boot_ns, "falco.host_num_cpus": host.num_cpus,
            "falco.outputs_queue_num_drops": readings.outputs_queue_drops, "evt.source": readings.source,
        }
        for digest in readings.rules_files:
            out["falco.sha256_rules_file." + sanitize_name(digest.file_name)] = digest.sha256
        for digest in readings.config_files:
            out["falco.sha256_config_file." + sanitize_name(digest.file_name)] = digest.sha256
        if self._last_num_evts and elapsed_s > 0:
            out["falco.evts_rate_sec"] = _rate(readings.num_evts - self._last_num_evts, elapsed_s)
        out["falco.num_evts"] = readings.num_evts
        out["falco.num_evts_prev"] = self._last_num_evts
        self._last_num_evts = readings.num_evts
        if readings.rule_matches is not None:
            out["falco.rules.matches_total"] = sum(match.count for match in readings.rule_matches)
            for match in readings.rule_matches:
                self._put(out, "falco.rules." + sanitize_name(match.rule), match.count)
        if readings.usage is not None:
            self._usage(out, readings.usage)
        if readings.kernel is not None:
            self._kernel(out, readings.kernel, elapsed_s)
        return out

    def _put(self, out: dict[str, Any], name: str, value: float | None) -> None:
        if value is not None and (value or self.settings.include_empty_values):
            out[name] = value

    def _usage(self, out: dict[str, Any], usage: ResourceUsage) -> None:
        self._put(out, "falco.cpu_usage_perc", usage.cpu_usage_perc)
        for name, kib in (("memory_rss", usage.memory_rss_kb), ("memory_vsz", usage.memory_vsz_kb),
                          ("memory_pss", usage.memory_pss_kb), ("host_memory_used", usage.host_memory_used_kb)):
            self._memory(out, "falco." + name, "_kb", _times(kib, _BYTES_PER_KIB), kib)
        container = usage.container_memory_used_bytes
        self._memory(out, "falco.container_memory_used", "_bytes", container, container)
        self._put(out, "falco.host_cpu_usage_perc", usage.host_cpu_usage_perc)
        self._put(out, "falco.host_procs_running", usage.host_procs_running)
        self._put(out, "falco.host_open_fds", usage.host_open_fds)

    def _memory(self, out: dict[str, Any], stem: str, raw_suffix: str, in_bytes: float | None,
                raw: float | None) -> None:
        if self.settings.convert_memory_to_mb:
            self._put(out, stem + "_mb", None if in_bytes is None else round(in_bytes / _BYTES_PER_MIB, 1))
        else:
            self._put(out, stem + raw_suffix, raw)

    def _kernel(self, out: dict[str, Any], kernel: KernelCounters, elapsed_s: float) -> None:
        evts_delta = kernel.n_evts - self._last_n_evts
        drops_delta = kernel.n_drops - self._last_n_drops
        out.update({
            "scap.n_evts": kernel.n_evts, "scap.n_evts_prev": self._last_n_evts,
            "scap.evts_rate_sec": _rate(evts_delta, elapsed_s) if evts_delta and elapsed_s > 0 else 0.0,
            "scap.n_drops": kernel.n_drops, "scap.n_drops_prev": self._last_n_drops,
            "scap.evts_drop_rate_sec": _rate(drops_delta, elapsed_s) if drops_delta and elapsed_s > 0 else 0.0,
            "scap.n_drops_perc": 100.0 * drops_delta / evts_delta if evts_delta > 0 else 0.0,
        })
        self._last_n_evts, self._last_n_drops = kernel.n_evts, kernel.n_drops


def _rate(delta: int, elapsed_s: float) -> float:
    return round(delta / elapsed_s, 1)
