"""The fd table through open, dup, close, pipes, memfds and sockets, and the fd fields Falco shows."""

from __future__ import annotations

import os

from sources.kernel.state.sockaddr import AF_UNIX, SockAddr, pack_sockaddr
from sources.kernel.watched_files import WatchedFiles, file_key
from tests.sources.kernel.state_fixtures import Stream, extract, inet, open_fd

AF_INET, AF_INET6, SOCK_STREAM, SOCK_DGRAM = 2, 10, 1, 2
O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_DIRECTORY, O_CLOEXEC = 0, 1, 2, 0o100, 0o200000, 0o2000000


class TestFiles:
    def test_open_resolves_relative_paths_against_cwd_and_dirfd(self) -> None:
        """fd.name is absolute and normalised; fd.nameraw is what the process passed."""
        s = Stream()
        event = s.open(200, "./docs/../notes.txt", res=3)
        assert extract(event, "fd.name") == "/home/alice/notes.txt"
        assert extract(event, "fd.nameraw") == "./docs/../notes.txt"
        assert extract(event, "fd.directory") == "/home/alice" and extract(event, "fd.filename") == "notes.txt"
        s.open(200, "/etc", res=4, flags=O_DIRECTORY)
        at = s.open(200, "passwd", res=5, dirfd=4)
        assert extract(at, "fd.name") == "/etc/passwd" and extract(at, "fd.typechar") == "f"
        assert extract(at, "fd.num") == 5 and extract(at, "evt.arg.dirfd") == "<d>/etc"

    def test_failed_open_still_names_the_file(self) -> None:
        """A failed open has fd.num -1, typechar f and the path it asked for, but no fd.type."""
        s = Stream()
        event = s.open(200, "secret", res=-13)
        assert extract(event, "fd.num") == -1 and extract(event, "fd.typechar") == "f"
        assert extract(event, "fd.name") == "/home/alice/secret" and extract(event, "fd.type") is None
        assert extract(event, "evt.res") == "EACCES" and extract(event, "evt.rawres") == -13

    def test_open_flags_and_kinds(self) -> None:
        """Open flags show with Falco's names; is_open_read/write follow the access mode."""
        s = Stream()
        event = s.open(200, "/tmp/f", res=3, flags=O_RDWR | O_CREAT | O_CLOEXEC)
        assert extract(event, "evt.arg.flags") == "O_CREAT|O_RDWR|O_CLOEXEC"
        assert extract(event, "evt.rawarg.flags") == (1 << 2) | 3 | (1 << 12)
        assert extract(event, "evt.is_open_read") is True and extract(event, "evt.is_open_write") is True
        assert extract(event, "evt.arg.fd") == "<f>/tmp/f" and extract(event, "evt.dir") == "<"
        assert extract(event, "evt.args") == (
            "fd=3(<f>/tmp/f) dirfd=-100(AT_FDCWD) name=/tmp/f flags=4103(O_CREAT|O_RDWR|O_CLOEXEC) mode=0")
        read_only = s.open(200, "/tmp/g", res=4, flags=O_RDONLY)
        assert extract(read_only, "evt.is_open_write") is False and extract(read_only, "evt.arg.flags") == "O_RDONLY"

    def test_dup_close_and_fd_types(self) -> None:
        """dup2 copies an fd under a new number; close removes it; fd.types lists what is open."""
        s = Stream()
        s.open(200, "/tmp/log", res=3, flags=O_WRONLY)
        dup = s.record("dup2", 200, res=1, oldfd=3, newfd=1)
        assert extract(dup, "fd.name") == "/tmp/log" and extract(dup, "fd.num") == 1
        close = s.record("close", 200, fd=3)
        assert extract(close, "fd.name") == "/tmp/log"
        fds = s.thread(200).fds
        assert fds.get(3) is None and fds.get(1) is not None
        s.record("pipe2", 200, fds=(5, 6), flags=O_CLOEXEC)
        event = s.open(200, "/x", res=7)
        assert set(extract(event, "fd.types")) == {"file", "pipe"} and extract(event, "fd.types[5]") == ("pipe",)

    def test_memfd(self) -> None:
        """memfd_create makes a memfd named `memfd:<name>`."""
        s = Stream()
        event = s.record("memfd_create", 200, res=4, name="jit", flags=1)
        assert extract(event, "fd.type") == "memfd" and extract(event, "fd.name") == "memfd:jit"
        assert extract(event, "evt.arg.flags") == "MFD_CLOEXEC"

    def test_a_type_no_rule_uses_updates_the_state_without_an_event(self) -> None:
        """With `forwarded` set (the live source sets what the rules can use), a close makes no event but still
        frees its descriptor, and evt.num still counts it, as Falco numbers every captured event."""
        s = Stream()
        s.state.forwarded = frozenset({"openat"})
        first = s.open(200, "/tmp/a", res=3)
        s.update("close", 200, fd=3)
        assert s.thread(200).fds.get(3) is None
        second = s.open(200, "/tmp/b", res=3)
        assert extract(second, "evt.num") == extract(first, "evt.num") + 2


    def test_a_close_no_rule_reads_is_applied_from_its_fields(self) -> None:
        """apply_close frees the descriptor and counts the event as apply would; it leaves to apply what needs the
        record: a close some rule reads, a thread to learn."""
        s = Stream()
        s.state.forwarded = frozenset({"openat"})
        first = s.open(200, "/tmp/a", res=3)
        pid = s.thread(200).pid
        assert s.state.apply_close(200, pid, -9, 3) and s.thread(200).fds.get(3) is not None, "a failed close"
        assert s.state.apply_close(200, pid, 0, 3) and s.thread(200).fds.get(3) is None
        second = s.open(200, "/tmp/b", res=4)
        assert extract(second, "evt.num") == extract(first, "evt.num") + 3
        assert not s.state.apply_close(999, 999, 0, 4), "an unknown thread takes the whole record"
        s.state.forwarded = frozenset({"openat", "close"})
        assert not s.state.apply_close(200, pid, 0, 4) and s.thread(200).fds.get(4) is not None

    def test_a_file_the_rules_name_keeps_its_name_through_any_link(self) -> None:
        """An open of a watched file (by device and inode) is named as the rules name it; fd.nameraw keeps the
        link, and fd.dev/fd.ino say which file it is."""
        s = Stream()
        dev, ino = os.makedev(254, 1), 739
        s.state.watched_files = WatchedFiles({file_key(dev, ino): "/etc/shadow"}, frozenset({"/etc/shadow"}),
                                             ("/usr/bin/",))
        event = s.record("openat", 200, res=3, dirfd=-100, name="../../tmp/link", flags=0, mode=0, dev=dev, ino=ino)
        assert extract(event, "fd.name") == "/etc/shadow" and extract(event, "fd.directory") == "/etc"
        assert extract(event, "fd.nameraw") == "../../tmp/link"
        assert (extract(event, "fd.ino"), extract(event, "fd.dev")) == (739, dev)
        assert (extract(event, "fd.dev.major"), extract(event, "fd.dev.minor")) == (254, 1)
        assert extract(event, "evt.arg.dev") == f"{dev:X}" and extract(event, "evt.arg.ino") == "739"
        assert extract(s.record("read", 200, res=1, fd=3, size=1), "fd.name") == "/etc/shadow"
        other = s.record("openat", 200, res=4, dirfd=-100, name="/tmp/x", flags=0, mode=0, dev=dev, ino=740)
        assert extract(other, "fd.name") == "/tmp/x", "another file of that device keeps its path"
        elsewhere = s.record("openat", 200, res=4, dirfd=-100, name="/mnt/y", flags=0, mode=0, dev=dev + 1, ino=ino)
        assert extract(elsewhere, "fd.name") == "/mnt/y", "that inode on another device is another file"
        assert s.state.opens_named_by_inode == 1
        # A path the rules name themselves keeps its name: a rule on it must still see it.
        again = s.record("openat", 200, res=5, dirfd=-100, name="/usr/bin/shadow-copy", flags=0, mode=0, dev=dev,
                         ino=ino)
        assert extract(again, "fd.name") == "/usr/bin/shadow-copy"
        # A file made in a watched directory (no scan has found it): named where it was made, under its own name.
        s.state.watched_files = WatchedFiles({file_key(dev, 12): "/etc/cron.d"}, frozenset({"/etc/cron.d"}))
        made = s.record("openat", 200, res=6, dirfd=-100, name="/tmp/link", flags=O_WRONLY | O_CREAT, mode=0,
                        dev=dev, ino=741, dir_ino=12, dirent="evil")
        assert extract(made, "fd.name") == "/etc/cron.d/evil" and extract(made, "fd.nameraw") == "/tmp/link"
        assert "dirent" not in str(extract(made, "evt.args")), "what only the state reads is not a parameter"


class TestSockets:
    def test_tcp_client(self) -> None:
        """connect gives a socket its client->server name, ports, l4 proto and a changed name."""
        s = Stream()
        sock = s.record("socket", 200, res=3, domain=AF_INET, type=SOCK_STREAM, proto=0)
        assert extract(sock, "fd.type") == "ipv4" and extract(sock, "fd.name") == ""
        assert extract(sock, "evt.arg.domain") == "AF_INET" and extract(sock, "fd.sip") is None
        event = s.record("connect", 200, fd=3, addr=inet("93.184.216.34", 443), local_addr=inet("10.0.0.5", 51000))
        assert extract(event, "fd.name") == "10.0.0.5:51000->93.184.216.34:443"
        assert str(extract(event, "fd.sip")) == "93.184.216.34" and extract(event, "fd.sport") == 443
        assert str(extract(event, "fd.lip")) == "10.0.0.5" and extract(event, "fd.rport") == 443
        assert extract(event, "fd.l4proto") == "tcp" and extract(event, "fd.connected") is True
        assert extract(event, "fd.name_changed") is True and extract(event, "fd.sockfamily") == "ip"
        assert extract(event, "fd.typechar") == "4"

    def test_a_non_blocking_connect_learns_its_port_after_it_returned(self) -> None:
        """The probe's late tcp_local record gives the port to the fd: later events on it show both ends."""
        s = Stream()
        s.record("socket", 200, res=3, domain=AF_INET, type=SOCK_STREAM, proto=0)
        connect = s.record("connect", 200, res=-115, fd=3, addr=inet("93.184.216.34", 443),
                           local_addr=inet("10.0.0.5", 0))
        assert extract(connect, "fd.name") == "10.0.0.5:0->93.184.216.34:443"
        s.update("tcp_local", 200, fd=3, local_port=51000)
        later = s.record("dup2", 200, res=1, oldfd=3, newfd=1)
        assert extract(later, "fd.name") == "10.0.0.5:51000->93.184.216.34:443" and extract(later, "fd.lport") == 51000
        assert extract(connect, "fd.name") == "10.0.0.5:0->93.184.216.34:443"  # what was emitted stays as it was

    def test_tcp_server(self) -> None:
        """bind makes a listening socket; accept makes a connection whose client is the peer."""
        s = Stream()
        s.record("socket", 200, res=3, domain=AF_INET6, type=SOCK_STREAM, proto=0)
        bind = s.record("bind", 200, fd=3, addr=inet("::", 8080))
        assert extract(bind, "fd.name") == ":::8080" and extract(bind, "fd.is_server") is True
        event = s.record("accept4", 200, res=4, listen_fd=3, addr=inet("2001:db8::7", 40100), flags=0)
        assert extract(event, "fd.name") == "2001:db8::7:40100->:::8080"
        assert str(extract(event, "fd.cip")) == "2001:db8::7" and extract(event, "fd.lport") == 8080
        assert extract(event, "fd.type") == "ipv6"

    def test_udp_sendto_changes_the_tuple(self) -> None:
        """An unconnected UDP socket takes each destination as its peer and reports the name change."""
        s = Stream()
        s.record("socket", 200, res=3, domain=AF_INET, type=SOCK_DGRAM, proto=0)
        first = s.record("sendto", 200, res=10, fd=3, size=10, addr=inet("8.8.8.8", 53))
        again = s.record("sendto", 200, res=10, fd=3, size=10, addr=inet("8.8.8.8", 53))
        assert extract(first, "fd.name_changed") is True and extract(again, "fd.name_changed") is False
        assert extract(first, "fd.l4proto") == "udp" and extract(first, "fd.connected") is False

    def test_unix_socket(self) -> None:
        """A unix socket connected to a path is named by that path."""
        s = Stream()
        s.record("socket", 200, res=3, domain=AF_UNIX, type=SOCK_STREAM, proto=0)
        path = pack_sockaddr(SockAddr(AF_UNIX, path="/var/run/docker.sock"))
        event = s.record("connect", 200, fd=3, addr=path)
        assert extract(event, "fd.name") == "/var/run/docker.sock" and extract(event, "fd.type") == "unix"
        assert extract(event, "fd.l4proto") == "<NA>" and extract(event, "fd.sockfamily") == "unix"

    def test_failed_connect_shows_the_address_asked_for(self) -> None:
        """A refused connect leaves the socket unchanged; fd.name is the address it tried."""
        s = Stream()
        s.record("socket", 200, res=3, domain=AF_INET, type=SOCK_STREAM, proto=0)
        event = s.record("connect", 200, res=-111, fd=3, addr=inet("10.1.1.1", 22))
        assert extract(event, "fd.name") == "10.1.1.1:22" and extract(event, "evt.res") == "ECONNREFUSED"
        assert open_fd(s.thread(200), 3).name == ""

    def test_events_without_fd_have_no_fd_fields(self) -> None:
        """An exec is no fd event: fd.name and fd.num are not available."""
        s = Stream()
        event = s.spawn(200, 210, "/usr/bin/id")
        assert extract(event, "fd.name") is None and extract(event, "fd.num") is None
