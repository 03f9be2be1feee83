"""Decode the raw `struct sockaddr` bytes a record carries."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from sources.kernel.state.fds import IpAddress

AF_UNIX = 1
AF_INET = 2
AF_INET6 = 10
AF_NETLINK = 16
AF_PACKET = 17


@dataclass(frozen=True, slots=True)
class SockAddr:
    """A decoded address: `ip`/`port` for AF_INET(6), `path` for AF_UNIX (abstract names start with @)."""

    family: int
    ip: IpAddress | None = None
    port: int = 0
    path: str = ""


def parse_sockaddr(raw: bytes) -> SockAddr | None:
    """None for empty or truncated input; unknown families keep only the family."""
    if len(raw) < 2:
        return None
    (family,) = struct.unpack_from("=H", raw)
    if family == AF_INET:
        if len(raw) < 8:
            return None
        port = struct.unpack_from("!H", raw, 2)[0]
        return SockAddr(family, ipaddress.IPv4Address(raw[4:8]), port)
    if family == AF_INET6:
        if len(raw) < 24:
            return None
        port = struct.unpack_from("!H", raw, 2)[0]
        return SockAddr(family, ipaddress.IPv6Address(raw[8:24]), port)
    if family == AF_UNIX:
        body = raw[2:]
        if body[:1] == b"\0":
            return SockAddr(family, path="@" + body[1:].split(b"\0", 1)[0].decode(errors="replace"))
        return SockAddr(family, path=body.split(b"\0", 1)[0].decode(errors="replace"))
    return SockAddr(family)


def pack_sockaddr(addr: SockAddr) -> bytes:
    """The raw bytes for an address (tests and captures build records with it)."""
    if addr.family == AF_INET and addr.ip is not None:
        return struct.pack("=H", AF_INET) + struct.pack("!H", addr.port) + addr.ip.packed + bytes(8)
    if addr.family == AF_INET6 and addr.ip is not None:
        return struct.pack("=H", AF_INET6) + struct.pack("!HI", addr.port, 0) + addr.ip.packed + bytes(4)
    if addr.family == AF_UNIX:
        name = addr.path.encode()
        body = b"\0" + name[1:] if name.startswith(b"@") else name + b"\0"
        return struct.pack("=H", AF_UNIX) + body
    return struct.pack("=H", addr.family)
