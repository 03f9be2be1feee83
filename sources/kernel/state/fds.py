"""Open file descriptors as the state tracks them: what each one is and, for sockets, who talks to whom."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from enum import Enum

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Linux O_CLOEXEC: such descriptors are closed by a successful exec.
O_CLOEXEC = 0o2000000


class FdType(Enum):
    """Falco's fd types: the value is `fd.type`, `char` is `fd.typechar`."""

    FILE = ("file", "f")
    DIRECTORY = ("directory", "d")
    IPV4 = ("ipv4", "4")
    IPV6 = ("ipv6", "6")
    UNIX = ("unix", "u")
    PIPE = ("pipe", "p")
    EVENT = ("event", "e")
    SIGNALFD = ("signalfd", "s")
    EVENTPOLL = ("eventpoll", "l")
    INOTIFY = ("inotify", "i")
    TIMERFD = ("timerfd", "t")
    NETLINK = ("netlink", "n")
    BPF = ("bpf", "b")
    USERFAULTFD = ("userfaultfd", "u")
    IO_URING = ("io_uring", "r")
    MEMFD = ("memfd", "m")
    PIDFD = ("pidfd", "P")
    UNKNOWN = ("unknown", "o")

    def __init__(self, type_name: str, char: str) -> None:
        self.type_name = type_name
        self.char = char

    @classmethod
    def from_name(cls, name: str) -> FdType:
        return _BY_NAME.get(name, cls.UNKNOWN)

    @property
    def is_ip(self) -> bool:
        return self is FdType.IPV4 or self is FdType.IPV6


_BY_NAME = {t.type_name: t for t in FdType}
#: Members read once: reading one through its enum class costs about 0.1 µs (Python 3.11), which every open and
#: every fd.directory or fd.filename read would pay.
FILE, DIRECTORY = FdType.FILE, FdType.DIRECTORY


class Role(Enum):
    """Which end of a connection this process holds; NONE until connect, accept or bind says."""

    NONE = "none"
    CLIENT = "client"
    SERVER = "server"


@dataclass(slots=True)
class FdInfo:
    """One descriptor. For IP sockets the client is (`cip`, `cport`) and the server (`sip`, `sport`),
    whichever side this process is on; `role` says which side that is.

    An FdInfo is never mutated after an event that refers to it was emitted, except for a socket's
    endpoints on connect/bind/accept (as Falco does): events already queued keep the object they got.
    """

    num: int
    type: FdType
    name: str = ""
    name_raw: str = ""
    flags: int = 0
    ino: int = 0
    dev: int = 0  # of the file's filesystem, as stat shows it
    l4proto: str = ""
    cip: IpAddress | None = None
    cport: int = 0
    sip: IpAddress | None = None
    sport: int = 0
    role: Role = Role.NONE
    is_listening: bool = False
    is_connected: bool = False

    @property
    def is_cloexec(self) -> bool:
        return bool(self.flags & O_CLOEXEC)

    def renumbered(self, num: int, *, flags: int | None = None) -> FdInfo:
        """A copy under another number (dup): same open file, own close-on-exec flag."""
        return replace(self, num=num, flags=self.flags if flags is None else flags)


def socket_name(fd: FdInfo) -> str:
    """Falco's name of an IP socket: `cip:cport->sip:sport`, or `ip:port` for a listening one."""
    if fd.is_listening and fd.sip is not None:
        return f"{fd.sip}:{fd.sport}"
    if fd.cip is None or fd.sip is None:
        return ""
    return f"{fd.cip}:{fd.cport}->{fd.sip}:{fd.sport}"


class FdTable:
    """The descriptors of one process (shared by its threads), bounded to `max_fds` entries."""

    __slots__ = ("_fds", "dropped", "max_fds")

    def __init__(self, max_fds: int, fds: dict[int, FdInfo] | None = None) -> None:
        self._fds: dict[int, FdInfo] = fds or {}
        self.max_fds = max_fds
        self.dropped = 0

    def get(self, num: int) -> FdInfo | None:
        return self._fds.get(num)

    def add(self, info: FdInfo) -> None:
        """Insert or replace; a new number past the cap is counted in `dropped` and not kept."""
        if info.num not in self._fds and len(self._fds) >= self.max_fds:
            self.dropped += 1
            return
        self._fds[info.num] = info

    def remove(self, num: int) -> FdInfo | None:
        return self._fds.pop(num, None)

    def items(self) -> list[tuple[int, FdInfo]]:
        return sorted(self._fds.items())

    def __len__(self) -> int:
        return len(self._fds)

    def copy(self) -> FdTable:
        """A process's own table after fork: the same open files, later changes not shared."""
        return FdTable(self.max_fds, dict(self._fds))

    def without_cloexec(self) -> FdTable:
        """The table after a successful exec: descriptors opened with O_CLOEXEC are gone."""
        return FdTable(self.max_fds, {n: f for n, f in self._fds.items() if not f.is_cloexec})
