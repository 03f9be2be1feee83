"""What a /proc read adds for libsinsp's per-thread figures: memory, faults, the open-files limit, cgroups and the
start of the pid namespace."""

from __future__ import annotations

import os
import resource
from pathlib import Path

from sources.kernel.state.cgroup import controller_paths
from sources.kernel.state.procfs import ProcReader


def test_own_process_figures() -> None:
    """Our own process reads back with its soft open-files limit, its memory and faults, its cgroups as libscap
    lists them and the start of the host's init as its pid namespace start."""
    reader = ProcReader(Path("/proc"))
    snap = reader.snapshot(os.getpid(), with_fds=False)
    assert snap is not None
    assert snap.fd_limit == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert snap.vm_size_kb >= snap.vm_rss_kb > 1000 and snap.page_faults_minor > 0
    assert snap.cgroups == controller_paths(Path(f"/proc/{os.getpid()}/cgroup").read_text())
    init = reader.snapshot(1, with_fds=False)
    assert init is not None and snap.pidns_init_start_ns == init.start_ns > 0


def test_fake_tree_figures(tmp_path: Path) -> None:
    """The thread's own stat (task/<tid>) gives the faults; status the memory; limits the soft limit."""
    base = tmp_path / "42"
    (base / "task" / "42").mkdir(parents=True)
    (tmp_path / "stat").write_text("btime 1700000000\n")
    (base / "status").write_text("Name:\tw\nTgid:\t42\nPPid:\t1\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n"
                                 "VmSize:\t  12345 kB\nVmRSS:\t    678 kB\nVmSwap:\t      9 kB\n")
    whole = "42 (w) S 1 42 42 0 42 0 {minflt} 0 {majflt} 0 0 0 0 0 20 0 1 0 100 0 0\n"
    (base / "stat").write_text(whole.format(minflt=999, majflt=99))
    (base / "task" / "42" / "stat").write_text(whole.format(minflt=70, majflt=7))
    (base / "limits").write_text("Limit                     Soft Limit           Hard Limit           Units\n"
                                 "Max open files            4096                 524288               files\n")
    (base / "cgroup").write_text("12:cpu,cpuacct:/kubepods/pod1\n1:name=systemd:/kubepods/pod1\n0::/\n")
    snap = ProcReader(tmp_path).snapshot(42, with_fds=False)
    assert snap is not None
    assert (snap.vm_size_kb, snap.vm_rss_kb, snap.vm_swap_kb, snap.fd_limit) == (12345, 678, 9, 4096)
    assert (snap.page_faults_minor, snap.page_faults_major) == (70, 7)
    assert snap.cgroups == ["cpu=/kubepods/pod1", "cpuacct=/kubepods/pod1", "name=systemd=/kubepods/pod1"]
    assert snap.pidns_init_start_ns == 0


def test_unified_hierarchy_stands_for_the_unified_controllers() -> None:
    """On a cgroup v2 host the one `0::` line gives the cpu, memory and cpuset entries libscap assumes."""
    assert controller_paths("0::/system.slice/docker-ab.scope\n") == [
        "cpu=/system.slice/docker-ab.scope", "memory=/system.slice/docker-ab.scope",
        "cpuset=/system.slice/docker-ab.scope"]
    assert controller_paths("") == []
