"""A process's resident memory as tests bound it, and the limits that keep a runaway one from taking the machine."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

#: What a guarded process may take at most: past it, it fails (and so does its test) instead of this shared machine.
GUARD_AS_BYTES = 4 * 1024**3
GUARD_CPU_S = 120


def memory_mib(pid: int | str = "self") -> dict[str, float]:
    """VmRSS and VmHWM (the peak resident size) of a process, in MiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found


def reset_peak(pid: int | str = "self") -> float:
    """Start measuring a process's peak resident size from now; its resident size now, in MiB."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError as err:
        pytest.skip(f"cannot reset the peak resident size of {pid}: {err.strerror}")
    return memory_mib(pid)["VmRSS"]


def guard(pid: int) -> None:
    """Cap the address space and CPU time of a process under test (GUARD_AS_BYTES, GUARD_CPU_S)."""
    resource.prlimit(pid, resource.RLIMIT_AS, (GUARD_AS_BYTES, GUARD_AS_BYTES))
    resource.prlimit(pid, resource.RLIMIT_CPU, (GUARD_CPU_S, GUARD_CPU_S))
