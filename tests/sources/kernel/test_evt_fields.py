"""The `evt.*` fields of event classes, buffer lengths, counters, absolute paths and times, as libsinsp gives them."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.event import Event
from agent.generic_fields import format_time
from sources.kernel.event_category import CATEGORY_OF
from sources.kernel.fields import load_syscall_field_specs
from sources.kernel.record import SyscallRecord
from sources.kernel.state.sockaddr import AF_INET, AF_UNIX, SockAddr, pack_sockaddr
from sources.kernel.syscalls import SCHED_TYPES, STATE_ONLY_TYPES, SYSCALLS
from tests.sources.kernel.state_fixtures import Stream, extract, inet
from tests.support.rules_harness import loaded_engine

_SOCK_STREAM, _SOCK_DGRAM = 1, 2
_O_DIRECTORY, _O_CREAT = 0o200000, 0o100
_EAGAIN, _ENOENT, _ECONNREFUSED, _EMFILE = -11, -2, -111, -24


def _tcp_client(s: Stream, fd: int = 3) -> None:
    s.record("socket", 200, res=fd, domain=AF_INET, type=_SOCK_STREAM, proto=0)
    s.record("connect", 200, fd=fd, addr=inet("93.184.216.34", 443), local_addr=inet("10.0.0.5", 51000))


def test_every_event_type_the_rules_can_see_has_libsinsp_category() -> None:
    visible = (set(SYSCALLS) | set(SCHED_TYPES)) - STATE_ONLY_TYPES
    assert sorted(visible - set(CATEGORY_OF)) == []


class TestCategory:
    def test_non_io_events_show_their_class(self) -> None:
        s = Stream()
        assert extract(s.open(200, "/etc/passwd"), "evt.category") == "file"
        assert extract(s.record("chdir", 200, path="/tmp"), "evt.category") == "file"
        assert extract(s.record("setuid", 200, uid=0), "evt.category") == "user"
        assert extract(s.record("pipe", 200, fds=(5, 6)), "evt.category") == "IPC"
        assert extract(s.record("memfd_create", 200, res=7, name="x", flags=0), "evt.category") == "memory"
        assert extract(s.record("socket", 200, res=8, domain=AF_INET, type=_SOCK_DGRAM, proto=0),
                       "evt.category") == "net"
        assert extract(s.exec(200, "/bin/ls"), "evt.category") == "process"
        assert extract(s.record("init_module", 200, length=10), "evt.category") == "other"

    def test_io_events_take_the_class_of_their_descriptor(self) -> None:
        """libsinsp names an I/O event's class by its fd: file, net, ipc (lower case), else unknown."""
        s = Stream()
        s.open(200, "/etc/passwd", res=3)
        assert extract(s.record("read", 200, res=12, fd=3, size=100), "evt.category") == "file"
        _tcp_client(s, fd=4)
        assert extract(s.record("sendto", 200, res=5, fd=4, size=5, addr=b""), "evt.category") == "net"
        s.record("pipe", 200, fds=(5, 6))
        assert extract(s.record("write", 200, res=1, fd=6, size=1), "evt.category") == "ipc"
        assert extract(s.record("close", 200, fd=42), "evt.category") == "unknown"


class TestIoClass:
    def test_reads_and_writes_are_told_apart(self) -> None:
        s = Stream()
        s.open(200, "/etc/passwd", res=3)
        read = s.record("read", 200, res=12, fd=3, size=100)
        assert (extract(read, "evt.is_io"), extract(read, "evt.is_io_read"), extract(read, "evt.is_io_write")) \
            == (True, True, False)
        assert extract(read, "evt.io_dir") == "read"
        _tcp_client(s, fd=4)
        sent = s.record("sendmsg", 200, res=20, fd=4, flags=0)
        assert extract(sent, "evt.io_dir") == "write" and extract(sent, "evt.is_io_write") is True

    def test_other_fd_events_are_not_io(self) -> None:
        """close and dup are I/O-class events to libsinsp, but neither read nor write: not evt.is_io."""
        s = Stream()
        opened = s.open(200, "/etc/passwd", res=3)
        closed = s.record("close", 200, fd=3)
        for event in (opened, closed):
            assert extract(event, "evt.is_io") is False and extract(event, "evt.io_dir") is None
            assert extract(event, "evt.is_wait") is False

    def test_a_write_to_the_syslog_socket_is_syslog(self) -> None:
        s = Stream()
        s.record("socket", 200, res=3, domain=AF_UNIX, type=_SOCK_DGRAM, proto=0)
        s.record("connect", 200, fd=3, addr=pack_sockaddr(SockAddr(AF_UNIX, path="/dev/log")))
        assert extract(s.record("write", 200, res=30, fd=3, size=30), "evt.is_syslog") is True
        s.open(200, "/var/log/messages", res=4, flags=1)
        assert extract(s.record("write", 200, res=30, fd=4, size=30), "evt.is_syslog") is False
        assert extract(s.record("read", 200, res=30, fd=3, size=30), "evt.is_syslog") is False


class TestBufferLength:
    def test_a_file_read_counts_as_file_and_input(self) -> None:
        s = Stream()
        s.open(200, "/etc/passwd", res=3)
        read = s.record("read", 200, res=12, fd=3, size=100)
        values = {f: extract(read, f) for f in ("evt.buflen", "evt.buflen.in", "evt.buflen.out", "evt.buflen.file",
                                                "evt.buflen.file.in", "evt.buflen.file.out", "evt.buflen.net")}
        assert values == {"evt.buflen": 12, "evt.buflen.in": 12, "evt.buflen.out": None, "evt.buflen.file": 12,
                          "evt.buflen.file.in": 12, "evt.buflen.file.out": None, "evt.buflen.net": None}

    def test_a_socket_write_counts_as_network_output(self) -> None:
        s = Stream()
        _tcp_client(s)
        sent = s.record("sendto", 200, res=40, fd=3, size=64, addr=b"")
        assert extract(sent, "evt.buflen.net") == 40 and extract(sent, "evt.buflen.net.out") == 40
        assert extract(sent, "evt.buflen.net.in") is None and extract(sent, "evt.buflen.file") is None

    def test_no_length_for_a_failed_call_an_unknown_fd_or_a_non_io_event(self) -> None:
        s = Stream()
        opened = s.open(200, "/etc/passwd", res=3)
        assert extract(s.record("read", 200, res=_EAGAIN, fd=3, size=100), "evt.buflen") is None
        assert extract(s.record("read", 200, res=5, fd=99, size=100), "evt.buflen") is None
        assert extract(opened, "evt.buflen") is None


class TestCounters:
    def test_every_event_counts_one_and_failures_count_as_errors(self) -> None:
        s = Stream()
        ok = s.open(200, "/etc/passwd", res=3)
        failed = s.open(200, "/nope", res=_ENOENT)
        assert extract(ok, "evt.count") == 1 and extract(ok, "evt.count.error") == 0
        assert extract(failed, "evt.count.error") == 1 and extract(failed, "evt.count.error.file") == 1
        assert extract(failed, "evt.count.error.net") is None and extract(failed, "evt.count.error.other") is None
        assert extract(ok, "evt.count.exit") == 1 and extract(ok, "evt.count.procinfo") == 0
        assert extract(ok, "evt.count.threadinfo") == 0

    def test_errors_are_classed_by_descriptor_or_by_syscall(self) -> None:
        s = Stream()
        s.record("socket", 200, res=3, domain=AF_INET, type=_SOCK_STREAM, proto=0)
        refused = s.record("connect", 200, res=_ECONNREFUSED, fd=3, addr=inet("10.1.1.1", 22))
        assert extract(refused, "evt.count.error.net") == 1 and extract(refused, "evt.count.error.file") is None
        no_memfd = s.record("memfd_create", 200, res=_EMFILE, name="x", flags=0)
        assert extract(no_memfd, "evt.count.error.memory") == 1 and extract(no_memfd, "evt.count.error.other") is None
        bad_uid = s.record("setuid", 200, res=-1, uid=0)
        assert extract(bad_uid, "evt.count.error.other") == 1 and extract(bad_uid, "evt.count.error.memory") is None

    def test_procexit_is_an_enter_event_without_a_result(self) -> None:
        s = Stream()
        s.spawn(200, 201, "/bin/true")
        gone = s.exit(201)
        assert extract(gone, "evt.dir") == ">" and extract(gone, "evt.count.exit") is None
        assert extract(gone, "evt.count.error") is None and extract(gone, "evt.count") == 1


class TestAbsolutePath:
    def test_a_path_relative_to_a_directory_fd_is_joined_to_it(self) -> None:
        s = Stream()
        s.open(200, "/etc", res=3, flags=_O_DIRECTORY)
        opened = s.open(200, "ssh/../passwd", res=4, dirfd=3)
        assert extract(opened, "evt.abspath") == "/etc/passwd"
        removed = s.record("unlinkat", 200, dirfd=-100, name="notes.txt", flags=0)
        assert extract(removed, "evt.abspath") == "/home/alice/notes.txt"  # AT_FDCWD: bash's cwd
        made = s.record("mkdirat", 200, dirfd=3, path="/srv/x", mode=0o755)
        assert extract(made, "evt.abspath") == "/srv/x"  # an absolute path ignores the dirfd

    def test_src_and_dst_pick_the_two_paths_of_a_rename(self) -> None:
        s = Stream()
        s.open(200, "/etc", res=3, flags=_O_DIRECTORY)
        moved = s.record("renameat2", 200, olddirfd=3, oldpath="shadow", newdirfd=-100, newpath="loot", flags=0)
        assert extract(moved, "evt.abspath") == "/etc/shadow" and extract(moved, "evt.abspath.src") == "/etc/shadow"
        assert extract(moved, "evt.abspath.dst") == "/home/alice/loot"

    def test_an_unknown_dirfd_and_a_syscall_without_dirfd(self) -> None:
        s = Stream()
        linked = s.record("symlinkat", 200, target="/etc/shadow", linkdirfd=77, linkpath="l")
        assert extract(linked, "evt.abspath") == "<UNKNOWN>/l"
        assert extract(s.record("unlink", 200, path="rel"), "evt.abspath") is None

    def test_any_other_suffix_is_refused(self) -> None:
        [spec] = [spec for spec in load_syscall_field_specs() if spec.name == "evt.abspath"]
        with pytest.raises(ValueError, match=r"takes \.src or \.dst, not '\.old'"):
            spec.bind("old")


class TestTimes:
    def test_deltatime_is_the_time_since_the_previous_event_it_was_read_from(self) -> None:
        s = Stream()
        first = s.open(200, "/a")
        s.ts_ns += 2_499_000_000
        skipped = s.open(200, "/b")
        third = s.open(200, "/c")  # 2.501 s after the first, 1 ms after the second (which nobody asked about)
        extract(first, "evt.deltatime")
        assert extract(third, "evt.deltatime") == 2_501_000_000
        assert extract(skipped, "evt.deltatime") == 0  # earlier than the one before: never negative
        extract(first, "evt.deltatime.s"), extract(first, "evt.deltatime.ns")
        assert (extract(third, "evt.deltatime.s"), extract(third, "evt.deltatime.ns")) == (2, 501_000_000)

    def test_outputtime_is_the_event_time_text(self) -> None:
        event = Stream().open(200, "/a")
        assert extract(event, "evt.outputtime") == format_time(event.ts_ns) == extract(event, "evt.time")

    def test_latencies_are_zero_as_libsinsp_reports_them(self) -> None:
        event = Stream().open(200, "/a")
        for name in ("evt.latency", "evt.latency.s", "evt.latency.ns", "evt.latency.quantized", "evt.wait_latency"):
            assert extract(event, name) == 0
        assert extract(event, "evt.latency.human") == "0ns"


def test_cpu_comes_from_the_record() -> None:
    s = Stream()
    event = s.state.apply(SyscallRecord("close", s.ts_ns, 200, 200, 0, 0, "bash", 0, {"fd": 9}, cpu=1))
    assert isinstance(event, Event) and extract(event, "evt.cpu") == 1


def test_a_rule_on_these_fields_loads_fires_and_shows_them(tmp_path: Path) -> None:
    """A chisel-like rule: big file reads; its output shows the class, the byte count and the absolute path."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "- rule: big file read\n"
        "  desc: d\n"
        "  condition: evt.type = read and evt.category = file and evt.is_io_read = true and evt.buflen > 100\n"
        "  output: '%evt.io_dir %evt.buflen.file.in bytes count=%evt.count err=%evt.count.error.file'\n"
        "  priority: NOTICE\n"
        "- rule: relative open\n"
        "  desc: d\n"
        "  condition: evt.type = openat and evt.abspath startswith /etc/\n"
        "  output: 'open %evt.abspath'\n"
        "  priority: NOTICE\n")
    engine = loaded_engine(rules, clean=True)
    s = Stream()
    s.open(200, "/etc", res=3, flags=_O_DIRECTORY)
    events = [s.open(200, "shadow", res=4, dirfd=3), s.record("read", 200, res=100, fd=4, size=4096),
              s.record("read", 200, res=4096, fd=4, size=4096)]
    outputs = [alert.output for event in events for alert in engine.process(event)]
    assert outputs == ["open /etc/shadow", "read 4096 bytes count=1 err=0"]
