"""Opens through a process's own links in procfs (/proc/self/fd/N, /dev/fd/N, /proc/self/cwd, /proc/self/root)
name the file they reach; a dirfd the state never saw opened is named by the live host while the process holds
it, and stays <UNKNOWN> on replay."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sources.kernel.state import LiveHostView
from sources.kernel.state.paths import PLAIN_PATHS, ProcLink, names_itself, path_through_proc, plain_path
from tests.sources.kernel.state_fixtures import FakeHost, Stream, default_host, extract

O_RDONLY, O_WRONLY, O_DIRECTORY, O_PATH = 0, 1, 0o200000, 0o10000000


#: Where the links of a made-up process lead: fd 3 is /etc/sudoers.d, its cwd /home/alice, process 4242's fd 3 /srv.
_LINKS = {ProcLink(None, 3): "/etc/sudoers.d", ProcLink(None, cwd=True): "/home/alice", ProcLink(None): "/",
          ProcLink(4242, 3): "/srv"}


@pytest.mark.parametrize(("path", "reached"), [
    ("/proc/self/fd/3", "/etc/sudoers.d"),
    ("/proc/thread-self/fd/3/admins", "/etc/sudoers.d/admins"),
    ("/proc/4242/task/4243/fd/3", "/srv"),
    ("/dev/fd/3", "/etc/sudoers.d"),
    ("//dev/./fd//3/", "/etc/sudoers.d"),
    # The kernel follows the link before the `..` after it; a `..` before it is folded as usual.
    ("/proc/self/fd/3/../shadow", "/etc/shadow"),
    ("/tmp/../proc/self/cwd/../../etc/shadow", "/etc/shadow"),
    ("/proc/self/root/etc/shadow", "/etc/shadow"),
    ("/proc/self/root/proc/self/fd/3", "/etc/sudoers.d"),
    # A link nobody knows stays a name, folded lexically.
    ("/proc/self/fd/9/../x", "/proc/self/fd/x"),
    ("/proc/4242/cwd/x", "/proc/4242/cwd/x"),
    ("/proc/self/fdinfo/3", "/proc/self/fdinfo/3"),
    ("/proc/self/exe", "/proc/self/exe"),
    ("/etc/proc/self/fd/3", "/etc/proc/self/fd/3"),
    ("/proc/self/task/x/fd/3", "/proc/self/task/x/fd/3"),
])
def test_a_path_through_procfs_links_reaches_where_they_lead(path: str, reached: str) -> None:
    assert path_through_proc("/", path, _LINKS.get) == reached


@pytest.mark.parametrize(("path", "plain"), [
    ("/etc/shadow", True), ("/usr/lib/x86_64-linux-gnu/libc.so.6", True), ("/etc/.hidden", False),
    ("/etc//shadow", False), ("/etc/", False), ("/etc/../etc/shadow", False), ("etc/shadow", False),
    ("/proc/self/fd/3", False), ("/dev/fd/3", False), ("/devices/x", True), ("/etc/proc/self/fd/3", False),
])
def test_only_a_path_nothing_can_rename_skips_resolving(path: str, plain: bool) -> None:
    # The open fast path returns such a path as passed: it must be what resolving it gives, from any base.
    assert names_itself(path) is plain
    if plain:
        assert path_through_proc("/home/alice", path, _LINKS.get) == path


def test_remembered_paths_answer_as_names_itself() -> None:
    """Asked again (remembered) or too long to remember, a path gets names_itself's answer; the empty path names
    nothing. Only paths that name themselves are remembered, and all are forgotten at the bound."""
    paths = ["/etc/shadow", "/etc/../etc/shadow", "/" + "a" * 300, "/" + "a" * 300 + "/", "etc/shadow"]
    for _ in range(2):
        assert [path in PLAIN_PATHS or plain_path(path) for path in paths] == [names_itself(path) for path in paths]
    assert plain_path("") is False
    assert "/etc/shadow" in PLAIN_PATHS and "etc/shadow" not in PLAIN_PATHS and "/" + "a" * 300 not in PLAIN_PATHS
    for number in range(5000):
        assert plain_path(f"/tmp/f{number}")
    assert len(PLAIN_PATHS) <= 4096


def test_a_relative_path_is_joined_to_its_base_first() -> None:
    assert path_through_proc("/proc/self", "fd/3/admins", _LINKS.get) == "/etc/sudoers.d/admins"
    assert path_through_proc("/home/alice", "docs/../notes", _LINKS.get) == "/home/alice/notes"
    assert path_through_proc("<UNKNOWN>", "fd/3", _LINKS.get) == "<UNKNOWN>/fd/3"


class TestReopenThroughProc:
    """bash (pid 200 on the host) holds /etc/shadow as an O_PATH descriptor 3, then reopens it through /proc."""

    @pytest.mark.parametrize("via", ["/proc/self/fd/3", "/proc/thread-self/fd/3", "/proc/200/fd/3", "/dev/fd/3",
                                     "/proc/self/fd/./3", "/dev//fd/3"])
    def test_the_reopen_names_the_file_and_keeps_the_raw_path(self, via: str) -> None:
        s = Stream()
        s.open(200, "/etc/shadow", res=3, flags=O_PATH)
        event = s.open(200, via, res=4, flags=O_RDONLY)
        # fd.nameraw is the path as passed, doubled slashes folded as Falco does.
        assert extract(event, "fd.name") == "/etc/shadow" and extract(event, "fd.nameraw") == via.replace("//", "/")
        assert extract(event, "fd.directory") == "/etc" and extract(event, "fd.filename") == "shadow"

    def test_a_path_below_a_directory_descriptor_is_that_directory_s_file(self) -> None:
        s = Stream()
        s.open(200, "/etc", res=5, flags=O_DIRECTORY)
        event = s.open(200, "/proc/self/fd/5/sudoers.d/../shadow", res=6, flags=O_RDONLY)
        assert extract(event, "fd.name") == "/etc/shadow"

    def test_a_relative_reopen_from_proc_is_resolved_too(self) -> None:
        s = Stream()
        s.open(200, "/etc/shadow", res=3, flags=O_PATH)
        s.record("chdir", 200, path="/proc/self")
        assert extract(s.open(200, "fd/3", res=4), "fd.name") == "/etc/shadow"

    @pytest.mark.parametrize("via", ["/proc/self/fd/9", "/proc/100/fd/3"])
    def test_a_descriptor_not_its_own_or_not_held_keeps_the_proc_path(self, via: str) -> None:
        """fd 9 is not open; /proc/100 is sshd's, whose descriptors are none of bash's: the path stays as passed."""
        s = Stream()
        s.open(200, "/etc/shadow", res=3, flags=O_PATH)
        s.open(100, "/etc/hostname", res=3)
        assert extract(s.open(200, via, res=4), "fd.name") == via

    def test_a_pipe_reopened_through_proc_keeps_the_proc_path(self) -> None:
        s = Stream()
        s.record("pipe2", 200, fds=(5, 6), flags=0)
        assert extract(s.open(200, "/dev/fd/6", res=7, flags=O_WRONLY), "fd.name") == "/dev/fd/6"

    @pytest.mark.parametrize(("via", "cwd"), [("/proc/self/root/etc/shadow", "/home/alice"),
                                              ("/proc/thread-self/cwd/shadow", "/etc"),
                                              ("/proc/self/cwd/../etc/shadow", "/root")])
    def test_the_root_and_the_working_directory_links_reach_the_file(self, via: str, cwd: str) -> None:
        s = Stream()
        s.record("chdir", 200, path=cwd)
        event = s.open(200, via, res=4)
        assert extract(event, "fd.name") == "/etc/shadow" and extract(event, "fd.nameraw") == via

    def test_a_container_process_names_its_own_pid_as_its_namespace_sees_it(self) -> None:
        """sh in the container is pid 300 on the host and 1 inside: /proc/1 is itself there, /proc/300 is not."""
        s = Stream()
        s.open(300, "/etc/shadow", res=3, flags=O_PATH)
        assert extract(s.open(300, "/proc/1/fd/3", res=4), "fd.name") == "/etc/shadow"
        assert extract(s.open(300, "/proc/300/fd/3", res=5), "fd.name") == "/proc/300/fd/3"


@dataclass
class LiveLikeHost(FakeHost):
    """A FakeHost that, like the live one, names a process's descriptors: `fd_paths[(pid, fd)]`."""

    fd_paths: dict[tuple[int, int], str] = field(default_factory=dict)

    def fd_path(self, pid: int, fd: int) -> str | None:
        self.asked.append(("fd_path", (pid, fd)))
        return self.fd_paths.get((pid, fd))


def _live_like_host(fd_paths: dict[tuple[int, int], str]) -> LiveLikeHost:
    base = default_host()
    return LiveLikeHost(snapshots=base.snapshots, users=base.users, containers=base.containers, fd_paths=fd_paths)


class TestUnseenDirfd:
    """bash opens `shadow` relative to descriptor 7, whose open the state never saw (kept in the kernel)."""

    def test_a_live_host_names_the_directory(self) -> None:
        s = Stream(_live_like_host({(200, 7): "/etc"}))
        event = s.open(200, "shadow", res=8, dirfd=7)
        assert extract(event, "fd.name") == "/etc/shadow" and extract(event, "fd.nameraw") == "shadow"
        assert s.state.counters["dirfds_from_host"] == 1

    def test_a_directory_gone_from_the_host_too_is_unknown(self) -> None:
        s = Stream(_live_like_host({}))
        assert extract(s.open(200, "shadow", res=8, dirfd=7), "fd.name") == "<UNKNOWN>/shadow"
        assert s.state.counters["dirfds_unknown"] == 1

    def test_a_host_that_cannot_name_descriptors_leaves_it_unknown(self) -> None:
        """A replay's host answers only what was recorded, and no descriptor names."""
        s = Stream()
        assert extract(s.open(200, "shadow", res=8, dirfd=7), "fd.name") == "<UNKNOWN>/shadow"
        assert s.state.counters["dirfds_unknown"] == 1

    def test_a_dirfd_the_state_holds_is_not_asked_of_the_host(self) -> None:
        host = _live_like_host({(200, 7): "/wrong"})
        s = Stream(host)
        s.open(200, "/etc", res=7, flags=O_DIRECTORY)
        assert extract(s.open(200, "shadow", res=8, dirfd=7), "fd.name") == "/etc/shadow"
        assert ("fd_path", (200, 7)) not in host.asked


class TestLiveFdPath:
    def test_names_a_directory_this_process_holds(self, tmp_path: Path) -> None:
        fd = os.open(tmp_path, os.O_RDONLY)
        try:
            assert LiveHostView().fd_path(os.getpid(), fd) == str(tmp_path)
        finally:
            os.close(fd)
        assert LiveHostView().fd_path(os.getpid(), fd) is None

    def test_a_socket_is_not_a_path(self) -> None:
        with socket.socket() as sock:
            assert LiveHostView().fd_path(os.getpid(), sock.fileno()) is None
