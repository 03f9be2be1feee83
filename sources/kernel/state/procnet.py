"""What an open descriptor is, from its /proc/<pid>/fd link and the kernel's socket tables."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from sources.kernel.state.host import FdSnapshot

_TCP_LISTEN = "0A"
_UDP_UNCONNECTED = "07"
_SOCKET_RE = re.compile(r"socket:\[(\d+)\]")
_ANON_KINDS = {
    "[eventfd]": "event", "[signalfd]": "signalfd", "[eventpoll]": "eventpoll", "inotify": "inotify",
    "[timerfd]": "timerfd", "[userfaultfd]": "userfaultfd", "[io_uring]": "io_uring", "[pidfd]": "pidfd",
}


@dataclass(frozen=True, slots=True)
class SocketEntry:
    """One socket of a network namespace's tables, by inode."""

    kind: str
    l4proto: str = ""
    local: tuple[str, int] | None = None
    remote: tuple[str, int] | None = None
    listening: bool = False
    path: str = ""


def _hex_ip(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # /proc prints an IPv6 address as four host-order 32-bit words.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def _endpoint(text: str) -> tuple[str, int]:
    host, port = text.split(":")
    return _hex_ip(host), int(port, 16)


def parse_inet_table(text: str, *, kind: str, l4proto: str) -> dict[int, SocketEntry]:
    """Sockets of /proc/net/{tcp,tcp6,udp,udp6,raw,raw6} by inode."""
    out: dict[int, SocketEntry] = {}
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 10 or not cols[9].isdigit():
            continue
        local, remote = _endpoint(cols[1]), _endpoint(cols[2])
        listening = cols[3] == _TCP_LISTEN if l4proto == "tcp" else (cols[3] == _UDP_UNCONNECTED and remote[1] == 0)
        out[int(cols[9])] = SocketEntry(kind, l4proto, local, None if listening else remote, listening)
    return out


def parse_unix_table(text: str) -> dict[int, SocketEntry]:
    """Sockets of /proc/net/unix by inode, with their bound path when they have one."""
    out: dict[int, SocketEntry] = {}
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 7 or not cols[6].isdigit():
            continue
        out[int(cols[6])] = SocketEntry("unix", path=cols[7] if len(cols) > 7 else "")
    return out


def parse_netlink_table(text: str) -> dict[int, SocketEntry]:
    out: dict[int, SocketEntry] = {}
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 10 and cols[9].isdigit():
            out[int(cols[9])] = SocketEntry("netlink")
    return out


def describe_fd(fd: int, link: str, *, flags: int, sockets: dict[int, SocketEntry],
                is_directory: bool) -> FdSnapshot:
    """An fd's snapshot from its link text (`/etc/passwd`, `socket:[123]`, `pipe:[9]`, ...)."""
    match = _SOCKET_RE.fullmatch(link)
    if match is not None:
        return _socket_fd(fd, int(match.group(1)), sockets, flags)
    if link.startswith("pipe:["):
        return FdSnapshot(fd, "pipe", "", flags, ino=int(link[6:-1]))
    if link.startswith("anon_inode:"):
        what = link[len("anon_inode:"):]
        kind = "bpf" if what.startswith("bpf") else _ANON_KINDS.get(what, "unknown")
        return FdSnapshot(fd, kind, link, flags)
    if link.startswith("/memfd:"):
        return FdSnapshot(fd, "memfd", link[1:].removesuffix(" (deleted)"), flags)
    return FdSnapshot(fd, "directory" if is_directory else "file", link, flags)


def _socket_fd(fd: int, ino: int, sockets: dict[int, SocketEntry], flags: int) -> FdSnapshot:
    entry = sockets.get(ino)
    if entry is None:
        return FdSnapshot(fd, "unknown", "", flags, ino=ino)
    if entry.kind == "unix":
        return FdSnapshot(fd, "unix", entry.path, flags, ino=ino)
    return FdSnapshot(fd, entry.kind, "", flags, ino=ino, l4proto=entry.l4proto, local=entry.local,
                      remote=entry.remote, listening=entry.listening)

