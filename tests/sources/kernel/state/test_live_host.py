"""Seeding from this machine's real /proc: our own process, its cwd, exe, fds and a socket we open."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sources.kernel.state import LiveHostView, live_state
from sources.kernel.state.procfs import ProcReader


@pytest.fixture
def listening_socket() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        yield sock
    finally:
        sock.close()


class TestLiveHostView:
    def test_own_process_snapshot(self, listening_socket: socket.socket) -> None:
        """Our own process reads back with its exe, cwd, args, ids, a file we opened and a listening socket."""
        with tempfile.NamedTemporaryFile() as handle:
            snap = LiveHostView().process(os.getpid())
            assert snap is not None
            assert snap.pid == os.getpid() and snap.ppid == os.getppid()
            assert os.path.realpath(snap.exepath) == os.path.realpath(sys.executable)
            assert snap.cwd == os.getcwd() and snap.uid == os.getuid() and snap.euid == os.geteuid()
            assert snap.start_ns > 0 and snap.exe_ino == os.stat(sys.executable).st_ino
            by_fd = {fd.fd: fd for fd in snap.fds}
            assert by_fd[handle.fileno()].kind == "file" and by_fd[handle.fileno()].name == handle.name
            sock = by_fd[listening_socket.fileno()]
            port = listening_socket.getsockname()[1]
            assert (sock.kind, sock.l4proto, sock.local, sock.listening) == ("ipv4", "tcp", ("127.0.0.1", port), True)

    def test_seed_builds_the_tree(self, listening_socket: socket.socket) -> None:
        """After seeding, our process has its parent linked, its fds and a readable user name."""
        state = live_state()
        try:
            me = state.ctx.table.get(os.getpid())
            assert me is not None and me.ppid == os.getppid() and me.cwd == os.getcwd()
            info = me.fds.get(listening_socket.fileno())
            assert info is not None and info.type.type_name == "ipv4" and info.is_listening
            assert info.name == f"127.0.0.1:{listening_socket.getsockname()[1]}"
            assert state.ctx.accounts.user("", os.geteuid()) is not None
        finally:
            state.close()

    def test_vanished_process_is_none(self) -> None:
        """Asking for a pid that does not exist answers None, not an error."""
        assert LiveHostView().process(2**22 + 12345) is None

    def test_accounts_of_the_host(self, tmp_path: Path) -> None:
        """Accounts come from <root>/etc/passwd and /etc/group."""
        (tmp_path / "etc").mkdir()
        (tmp_path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nbad line\n")
        (tmp_path / "etc" / "group").write_text("wheel:x:10:\n")
        accounts = LiveHostView(root=str(tmp_path)).accounts("", 1)
        assert accounts.users[0].name == "root" and accounts.users[0].shell == "/bin/bash"
        assert accounts.groups == {10: "wheel"}


def test_proc_reader_parses_a_fake_tree(tmp_path: Path) -> None:
    """A comm with spaces and parentheses does not confuse the stat parser; an unset loginuid is -1."""
    base = tmp_path / "42"
    base.mkdir()
    (tmp_path / "stat").write_text("cpu 1\nbtime 1700000000\n")
    (base / "status").write_text("Name:\tmy (odd) proc\nTgid:\t42\nPPid:\t1\nUid:\t5\t5\t5\t5\nGid:\t6\t6\t6\t6\n"
                                 "CapEff:\t0000000000200000\nNSpid:\t42\t7\n")
    (base / "stat").write_text("42 (my (odd) proc) S 1 42 42 34817 42 0 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0\n")
    (base / "cmdline").write_bytes(b"odd\0--flag\0")
    (base / "loginuid").write_text("4294967295")
    snap = ProcReader(tmp_path).snapshot(42, with_fds=True)
    assert snap is not None
    assert (snap.comm, snap.args, snap.tty, snap.sid, snap.pgid, snap.vpid) == ("my (odd) proc", ["--flag"], 34817,
                                                                                42, 42, 7)
    assert snap.loginuid == -1 and snap.cap_effective == 1 << 21
    assert snap.start_ns == 1_700_000_000 * 10**9 + 100 * 10**9 // os.sysconf("SC_CLK_TCK")
