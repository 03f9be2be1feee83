"""What the agent's process and its host use, read from /proc as Falco's resource utilization metrics read it.

Each reading is taken when asked (a scrape, a metrics snapshot): a few small /proc files, no thread. A value this
host cannot give (no cgroup memory file, a /proc file missing in a sandbox) is None, so that it is left out
rather than reported as 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HostInfo", "ResourceUsage", "read_host_info", "read_resource_usage"]

_PROC = Path("/proc")
#: Falco's variable naming the file of the agent container's memory use, and its default (cgroup v1).
CGROUP_MEMORY_ENV = "FALCO_CGROUP_MEM_PATH"
_CGROUP_V1_MEMORY = Path("/sys/fs/cgroup/memory/memory.usage_in_bytes")
# Where cgroup v2 (every current distribution) keeps it; Falco reads only the v1 file.
_CGROUP_V2_MEMORY = Path("/sys/fs/cgroup/memory.current")
_NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class HostInfo:
    """What does not change while the agent runs: when it and the host started, the kernel, the CPUs."""

    start_ns: int
    boot_ns: int
    kernel_release: str
    num_cpus: int


@dataclass(frozen=True, slots=True)
class ResourceUsage:
    """One reading. CPU use is a percentage of one CPU over the process's lifetime (as `ps` and Falco compute it);
    memory sizes are in KiB as /proc gives them, except the container's, in bytes."""

    cpu_usage_perc: float
    memory_rss_kb: int
    memory_vsz_kb: int
    memory_pss_kb: int | None
    container_memory_used_bytes: int | None
    host_cpu_usage_perc: float | None
    host_memory_used_kb: int | None
    host_procs_running: int | None
    host_open_fds: int | None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _fields(text: str | None, names: tuple[str, ...]) -> dict[str, int]:
    """`Name: value ...` lines (/proc/self/status, /proc/meminfo, smaps_rollup): the first number of each name."""
    found: dict[str, int] = {}
    for line in (text or "").splitlines():
        name, _, rest = line.partition(":")
        if name in names and rest.split():
            found[name] = int(rest.split()[0])
    return found


def _boot_s() -> float:
    """The host's boot time, in seconds since the epoch (`btime` of /proc/stat)."""
    for line in (_read(_PROC / "stat") or "").splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def _process_start_ticks() -> int:
    """When this process started, in clock ticks since boot (field 22 of /proc/self/stat)."""
    stat = _read(_PROC / "self" / "stat") or ""
    # The command name (field 2) may hold spaces and parentheses: count fields after its closing one.
    return int(stat.rpartition(")")[2].split()[19])


def read_host_info() -> HostInfo:
    boot_s = _boot_s()
    start_s = boot_s + _process_start_ticks() / os.sysconf("SC_CLK_TCK")
    return HostInfo(start_ns=int(start_s * _NS_PER_S), boot_ns=int(boot_s * _NS_PER_S),
                    kernel_release=os.uname().release, num_cpus=os.sysconf("SC_NPROCESSORS_ONLN"))


def read_resource_usage() -> ResourceUsage:
    status = _fields(_read(_PROC / "self" / "status"), ("VmRSS", "VmSize"))
    pss = _fields(_read(_PROC / "self" / "smaps_rollup"), ("Pss",)).get("Pss")
    meminfo = _fields(_read(_PROC / "meminfo"), ("MemTotal", "MemFree", "Buffers", "Cached"))
    host_memory = (meminfo["MemTotal"] - meminfo["MemFree"] - meminfo["Buffers"] - meminfo["Cached"]
                   if len(meminfo) == 4 else None)
    host_cpu, procs_running = _host_cpu()
    file_nr = (_read(_PROC / "sys" / "fs" / "file-nr") or "").split()
    return ResourceUsage(cpu_usage_perc=_cpu_usage_perc(), memory_rss_kb=status.get("VmRSS", 0),
                         memory_vsz_kb=status.get("VmSize", 0), memory_pss_kb=pss,
                         container_memory_used_bytes=_container_memory(), host_cpu_usage_perc=host_cpu,
                         host_memory_used_kb=host_memory, host_procs_running=procs_running,
                         host_open_fds=int(file_nr[0]) if file_nr else None)


def _cpu_usage_perc() -> float:
    times = os.times()
    uptime = (_read(_PROC / "uptime") or "0").split()[0]
    elapsed_s = float(uptime) - _process_start_ticks() / os.sysconf("SC_CLK_TCK")
    if elapsed_s <= 0:
        return 0.0
    return round(100.0 * (times.user + times.system) / elapsed_s, 1)


def _host_cpu() -> tuple[float | None, int | None]:
    """Busy share of all CPUs since boot (from the `cpu` line of /proc/stat), and the processes running now."""
    busy: float | None = None
    running: int | None = None
    for line in (_read(_PROC / "stat") or "").splitlines():
        if line.startswith("cpu "):
            ticks = [int(value) for value in line.split()[1:8]]
            if sum(ticks):
                busy = round(100.0 - ticks[3] * 100.0 / sum(ticks), 1)
        elif line.startswith("procs_running "):
            running = int(line.split()[1])
    return busy, running


def _container_memory() -> int | None:
    configured = os.environ.get(CGROUP_MEMORY_ENV)
    for path in ([Path(configured)] if configured else [_CGROUP_V1_MEMORY, _CGROUP_V2_MEMORY]):
        text = _read(path)
        if text is not None and text.strip().isdigit():
            return int(text)
    return None
