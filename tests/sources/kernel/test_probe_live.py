"""The BPF probe in the real kernel: real syscalls by a child process come back as joined records."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sources.kernel import bcc_setup
from sources.kernel import probe as probe_module
from sources.kernel.probe import KernelProbe
from sources.kernel.probe_program import EXIT_ARGS
from sources.kernel.record import SyscallRecord
from sources.kernel.syscalls import SYSCALLS
from sources.kernel.wire import RecordDecoder
from tests.support.kernel import require_probe

pytestmark = [pytest.mark.root, pytest.mark.bpf]

CHILD = r"""
import os, socket, sys
fd = os.open("/etc/hostname", os.O_RDONLY)
os.close(fd)
try:
    os.unlink("/tmp/falco-agent-probe-link")
except FileNotFoundError:
    pass
os.symlink("/etc/shadow", "/tmp/falco-agent-probe-link")
os.unlink("/tmp/falco-agent-probe-link")
s = socket.socket()
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
except OSError:
    pass
os.execv("/bin/true", ["true", "one", "two words"])
"""


@pytest.fixture(scope="module")
def probe() -> Iterator[KernelProbe]:
    require_probe()
    loaded = KernelProbe(["openat", "close", "execve", "symlinkat", "symlink", "unlink", "unlinkat", "connect",
                          "socket"], ring_buffer_pages=256)
    yield loaded
    loaded.close()


def _records_of(probe: KernelProbe, pid: int, *, until_type: str, timeout_s: float = 2.0) -> list[SyscallRecord]:
    decoder = RecordDecoder()
    found: list[SyscallRecord] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for raw in probe.poll(50):
            record = decoder.decode(raw)
            if record.pid == pid or record.args.get("child_pid") == pid:
                found.append(record)
        if any(r.type == until_type and r.pid == pid and r.args.get("group_dead") for r in found):
            break
    return found


def test_syscalls_of_a_child_arrive_with_arguments_and_results(probe: KernelProbe) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(port)])
        child.wait(timeout=10)
        _connection, (_peer_ip, child_port) = listener.accept()
        records = _records_of(probe, child.pid, until_type="procexit")
    by_type: dict[str, list[SyscallRecord]] = {}
    for record in records:
        by_type.setdefault(record.type, []).append(record)

    opened = [r for r in by_type["openat"] if r.args["name"] == "/etc/hostname"]
    assert opened and opened[0].res >= 0 and opened[0].args["fd"] == opened[0].res
    assert opened[0].args["dirfd"] == -100 and opened[0].args["flags"] & 0o3 == os.O_RDONLY
    # The file's device and inode come from the kernel's file table at offsets its BTF gave: as stat shows them.
    hostname = os.stat("/etc/hostname")
    assert (opened[0].args["dev"], opened[0].args["ino"]) == (hostname.st_dev, hostname.st_ino)
    assert any(r.args["fd"] == opened[0].res and r.ts_ns > opened[0].ts_ns for r in by_type["close"])
    link = by_type["symlinkat"][0] if "symlinkat" in by_type else by_type["symlink"][0]
    assert (link.args["target"], link.args["linkpath"]) == ("/etc/shadow", "/tmp/falco-agent-probe-link")
    connect = by_type["connect"][0]
    assert connect.res == 0 and int.from_bytes(connect.args["addr"][2:4], "big") == port
    assert connect.args["addr"][4:8] == bytes([127, 0, 0, 1])
    local = connect.args["local_addr"]  # the kernel's TCP state change gives the connecting end
    assert int.from_bytes(local[2:4], "big") == child_port and local[4:8] == bytes([127, 0, 0, 1])
    execs = by_type["execve"]
    assert execs[-1].res == 0 and execs[-1].args["filename"] == "/bin/true"
    assert execs[-1].args["argv"] == ["true", "one", "two words"] and execs[-1].comm == "true"
    assert by_type["procexit"][-1].args["group_dead"] is True
    assert abs(opened[0].ts_ns - time.time_ns()) < 60 * 10**9


def test_the_arguments_read_at_exit_are_in_the_kernels_order() -> None:
    """EXIT_ARGS reads each argument from the register of its position: tracefs lists a syscall's arguments in
    that order, after the syscall number (offset 8)."""
    require_probe()
    events = bcc_setup.tracefs() / "events" / "syscalls"
    for name, order in EXIT_ARGS.items():
        text = (events / f"sys_enter_{SYSCALLS[name].syscall}" / "format").read_text()
        fields = re.findall(r"field:[^;]*?(\w+);\s*offset:(\d+);", text)
        assert tuple(field for field, offset in fields if int(offset) > 8) == order, name


def test_clone_is_seen_from_the_parent(probe: KernelProbe) -> None:
    child = subprocess.Popen(["/bin/sh", "-c", "/bin/true; exit 0"])
    child.wait(timeout=10)
    records = _records_of(probe, child.pid, until_type="procexit")
    forks = [r for r in records if r.type in ("clone", "clone3", "fork", "vfork") and r.pid == child.pid]
    assert forks, "the shell's fork of /bin/true was not seen"
    grandchild = forks[0].args["child_pid"]
    assert forks[0].res == grandchild and forks[0].args["child_tid"] == grandchild


def test_a_record_names_the_cpu_it_ran_on(probe: KernelProbe) -> None:
    """evt.cpu: a child pinned to the last CPU has its syscalls written there (CPU 0 would pass by default)."""
    cpu = max(os.sched_getaffinity(0))
    script = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nos.close(os.open('/etc/hostname', os.O_RDONLY))"
    child = subprocess.Popen([sys.executable, "-c", script])
    child.wait(timeout=10)
    records = _records_of(probe, child.pid, until_type="procexit")
    opened = [r for r in records if r.type == "openat" and r.args["name"] == "/etc/hostname"]
    assert opened and {r.cpu for r in opened} == {cpu}
    assert cpu > 0, "needs two CPUs to tell a captured CPU number from the default"


def test_the_agent_process_itself_is_not_captured(probe: KernelProbe) -> None:
    for _ in range(50):
        os.close(os.open("/etc/hostname", os.O_RDONLY))
    decoder = RecordDecoder()
    time.sleep(0.1)
    mine = [r for raw in probe.poll(100) if (r := decoder.decode(raw)).pid == os.getpid()]
    assert mine == []
    assert probe.counters()["lost"] == 0


def test_a_flood_is_drained_in_bounded_batches_without_loss(probe: KernelProbe) -> None:
    """One poll hands over at most MAX_BATCH records, so the agent keeps its counters and memory in hand."""
    from sources.kernel.probe import MAX_BATCH

    while probe.poll(0):
        pass  # start from an empty ring buffer
    child = subprocess.Popen([sys.executable, "-c", "import os\nfor _ in range(3000): os.close(os.open('/', 0))"])
    child.wait(timeout=30)
    sizes = []
    while batch := probe.poll(100):
        sizes.append(len(batch))
    assert max(sizes) == MAX_BATCH and sum(sizes) >= 6000  # a 1 MiB ring buffer holds all of them
    assert probe.counters()["lost"] == 0


def test_a_ring_buffer_too_small_for_a_flood_gives_drop_notices() -> None:
    """Losses in the kernel are counted, and past the threshold they become notices for the drop alert."""
    from agent.builtin_sources import new_engine
    from agent.source import DropNotice
    from sources.kernel.source import KernelSettings, KernelSource
    from sources.kernel.state import live_state
    from tests.support.kernel import AlertLog

    require_probe()
    source = KernelSource(KernelSettings(ring_buffer_pages=1, drop_threshold=0.0, drop_alert_interval_s=0.0),
                          rule_types=lambda: frozenset({"openat"}), new_state=live_state)
    source.start(AlertLog(new_engine()))
    try:
        deadline = time.monotonic() + 20
        notices: list[DropNotice] = []
        while not notices and time.monotonic() < deadline:
            subprocess.run([sys.executable, "-c", "import os\nfor _ in range(20000): os.close(os.open('/', 0))"],
                           check=True, timeout=60)
            time.sleep(1.2)  # the meter closes one-second windows
            notices = source.drop_notices()
    finally:
        source.stop()
    assert notices, "no drop notice although a one-page ring buffer met a flood"
    assert notices[0].what == "syscall event drop" and notices[0].lost > 0
    assert source.metrics()["kernel_lost"] >= notices[0].lost



def test_a_kernel_refusing_the_register_reads_gets_the_enter_programs_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The verifier of a kernel without bpf_task_pt_regs refuses the exit-alone programs: the probe loads again
    with enter programs and keeps the file ids; refusing those too, it loads reading no kernel struct."""
    require_probe()
    real = probe_module.generate
    refused = "TRACEPOINT_PROBE(syscalls, sys_enter_getppid) { return *(volatile int *)0; }\n"

    def refusing(*names: str) -> Callable[..., str]:
        def generate(*args: Any, **kwargs: Any) -> str:
            offsets = kwargs.get("btf_offsets") or {}
            return real(*args, **kwargs) + (refused if any(name in offsets for name in names) else "")
        return generate

    monkeypatch.setattr(probe_module, "generate", refusing("OFF_REGS_DI"))
    loaded = KernelProbe(["openat", "close"], ring_buffer_pages=8)
    try:
        assert loaded.file_ids and b"syscalls:sys_enter_openat" in loaded._bpf.tracepoint_fds
    finally:
        loaded.close()
    monkeypatch.setattr(probe_module, "generate", refusing("OFF_REGS_DI", "OFF_INODE_INO"))
    loaded = KernelProbe(["openat", "close"], ring_buffer_pages=8)
    try:
        assert not loaded.file_ids and b"syscalls:sys_enter_openat" in loaded._bpf.tracepoint_fds
    finally:
        loaded.close()
