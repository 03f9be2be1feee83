"""What a benchmark reads about an agent running as another process: CPU time, memory, and its /metrics.

CPU and memory come from /proc (Linux): user+system time from `/proc/<pid>/stat`, peak and current resident
memory (VmHWM, VmRSS) from `/proc/<pid>/status`. The Prometheus text of `/metrics` is read into a flat list of
samples, summed by name and labels, and compared between two scrapes.
"""

from __future__ import annotations

import os
import re
import urllib.request
from pathlib import Path

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def cpu_s(pid: int) -> float:
    """User plus system CPU seconds the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def bpf_run_ns(pid: int) -> int:
    """Nanoseconds the kernel spent in the BPF programs the process holds, since they loaded (the `run_time_ns` of
    their fdinfo; counted only while the sysctl kernel.bpf_stats_enabled is 1: see `BpfStats`)."""
    total_ns = 0
    folder = Path(f"/proc/{pid}/fd")
    for fd in folder.iterdir():
        try:
            if os.readlink(fd) != "anon_inode:bpf-prog":
                continue
            info = (Path(f"/proc/{pid}/fdinfo") / fd.name).read_text()
        except OSError:
            continue  # closed meanwhile
        match = re.search(r"^run_time_ns:\s+(\d+)$", info, re.MULTILINE)
        total_ns += int(match.group(1)) if match else 0
    return total_ns


class BpfStats:
    """Turns on the kernel's BPF run-time accounting (kernel.bpf_stats_enabled) while in use, then restores it."""

    _SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")

    def __enter__(self) -> BpfStats:
        self._before = self._SYSCTL.read_text().strip()
        self._SYSCTL.write_text("1")
        return self

    def __exit__(self, *_exc: object) -> None:
        self._SYSCTL.write_text(self._before)


def memory_mb(pid: int, field: str = "VmHWM") -> float:
    """A memory line of /proc/<pid>/status in MiB: VmHWM (peak resident) or VmRSS (resident now)."""
    match = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    return int(match.group(1)) / 1024 if match else 0.0


Samples = list[tuple[str, dict[str, str], float]]


def scrape(url: str, *, timeout_s: float = 5.0) -> Samples:
    """Every sample of a Prometheus text page as (name, labels, value)."""
    text = urllib.request.urlopen(url, timeout=timeout_s).read().decode()
    out: Samples = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or line.startswith("#"):
            continue
        name, labels, value = match.groups()
        out.append((name, dict(_LABEL.findall(labels or "")), float(value)))
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    return sum(value for sample, have, value in samples
               if sample == name and all(have.get(key) == wanted for key, wanted in labels.items()))


def growth(before: Samples, after: Samples, name: str, **labels: str) -> int:
    """How much a counter (the sum of the samples `total` picks) grew from one scrape to the next."""
    return int(total(after, name, **labels) - total(before, name, **labels))
