"""The syscalls a kernel scenario line may make (agent.rule_tests.kernel_scenario), as records of the kernel source.

Each key of a line that names a syscall becomes one or two records, in the fixed order of CALLS; the argument
values are written as people write them (`O_WRONLY|O_TRUNC`, `AF_PACKET`, `PTRACE_ATTACH`, `10.0.0.2:40000->IP:PORT`)
and turned into the raw values a probe reports, with the kernel source's own name tables.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sources.kernel.arg_format import PTRACE_REQUEST_NAMES, SOCKET_FAMILY_NAMES
from sources.kernel.state.sockaddr import AF_INET, AF_INET6, AF_UNIX, SockAddr, pack_sockaddr

AT_FDCWD = -100
SOCK_STREAM, SOCK_RAW = 1, 3
#: htons(ETH_P_ALL): the protocol a raw socket that sees every frame is opened with.
_ETH_P_ALL = 0x0300
#: Linux open(2) flags by name (access modes and the flags rules look at).
OPEN_FLAGS = {"O_RDONLY": 0, "O_WRONLY": 0o1, "O_RDWR": 0o2, "O_CREAT": 0o100, "O_EXCL": 0o200, "O_TRUNC": 0o1000,
              "O_APPEND": 0o2000, "O_NONBLOCK": 0o4000, "O_DIRECTORY": 0o200000, "O_CLOEXEC": 0o2000000}
#: The descriptor the line's own open, creat, socket or memfd_create returns (the first one a process gets).
LINE_FD = 3


class CallError(ValueError):
    """A syscall key whose value does not say what the call does; the message names the key."""


@dataclass(frozen=True, slots=True)
class Call:
    """One record to make: its event type, its arguments and its result when it succeeds."""

    type: str
    args: dict[str, Any]
    res: int = 0


Builder = Callable[[Any], list[Call]]


def _open(value: Any) -> list[Call]:
    if isinstance(value, str):
        path, flags = value, "O_RDONLY"
    elif isinstance(value, Mapping) and isinstance(value.get("path"), str) and set(value) <= {"path", "flags"}:
        path, flags = value["path"], str(value.get("flags", "O_RDONLY"))
    else:
        raise CallError("open: expected a path, or {path: ..., flags: O_WRONLY|O_CREAT}")
    return [Call("openat", {"dirfd": AT_FDCWD, "name": path, "flags": open_flags(flags), "mode": 0}, LINE_FD)]


def open_flags(text: str) -> int:
    """`O_WRONLY|O_TRUNC` as Linux open(2) flags."""
    value = 0
    for name in (part.strip() for part in text.split("|")):
        if name not in OPEN_FLAGS:
            raise CallError(f"open: unknown flag {name!r}; known: {', '.join(OPEN_FLAGS)}")
        value |= OPEN_FLAGS[name]
    return value


def _creat(value: Any) -> list[Call]:
    return [Call("creat", {"name": _text(value, "creat"), "mode": 0o644}, LINE_FD)]


def _finit_module(value: Any) -> list[Call]:
    path = _text(value, "finit_module")
    return [Call("openat", {"dirfd": AT_FDCWD, "name": path, "flags": 0, "mode": 0}, LINE_FD),
            Call("finit_module", {"fd": LINE_FD, "flags": 0})]


def _socket(value: Any) -> list[Call]:
    names = dict(SOCKET_FAMILY_NAMES)
    family = names.get(_text(value, "socket"))
    if family is None:
        raise CallError(f"socket: {value!r} is not an address family (AF_PACKET, AF_INET, ...)")
    return [Call("socket", {"domain": family, "type": SOCK_RAW, "proto": _ETH_P_ALL}, LINE_FD)]


def _connect(value: Any) -> list[Call]:
    text = _text(value, "connect")
    local_text, _, remote_text = text.rpartition("->")
    family, remote = _address(remote_text)
    args: dict[str, Any] = {"fd": LINE_FD, "addr": remote}
    if local_text:
        local_family, args["local_addr"] = _address(local_text)
        if local_family != family:
            raise CallError(f"connect: both ends of {text!r} must be of one address family")
    return [Call("socket", {"domain": family, "type": SOCK_STREAM, "proto": 0}, LINE_FD), Call("connect", args)]


def _address(text: str) -> tuple[int, bytes]:
    if text.startswith("/"):
        return AF_UNIX, pack_sockaddr(SockAddr(AF_UNIX, path=text))
    host, _, port = text.rpartition(":")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
        number = int(port)
    except ValueError:
        raise CallError(f"connect: expected IP:PORT, LOCAL_IP:PORT->IP:PORT or /unix/path, got {text!r}") from None
    family = AF_INET6 if ip.version == 6 else AF_INET
    return family, pack_sockaddr(SockAddr(family, ip, number))


def _dup2(value: Any) -> list[Call]:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CallError("dup2: expected the descriptor number to duplicate the line's descriptor onto")
    return [Call("dup2", {"oldfd": LINE_FD, "newfd": value}, value)]


def _mount(value: Any) -> list[Call]:
    if not isinstance(value, list) or len(value) != 2:
        raise CallError("'mount' must be [device, directory]")
    return [Call("mount", {"dev": str(value[0]), "dir": str(value[1]), "type": "ext4", "flags": 0})]


def _two_paths(key: str, shape: str, build: Callable[[str, str], dict[str, Any]]) -> Builder:
    def builder(value: Any) -> list[Call]:
        if not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, str) for v in value):
            raise CallError(f"'{key}' must be {shape}")
        return [Call(key, build(value[0], value[1]))]
    return builder


def _mkdir(value: Any) -> list[Call]:
    return [Call("mkdir", {"path": _text(value, "mkdir"), "mode": 0o755})]


def _ptrace(value: Any) -> list[Call]:
    request, pid = (value, 0) if isinstance(value, str) else (value if isinstance(value, list) else [None, None])
    numbers = dict(PTRACE_REQUEST_NAMES)
    if request not in numbers or not isinstance(pid, int):
        raise CallError("ptrace: expected PTRACE_REQUEST or [PTRACE_REQUEST, target pid]")
    return [Call("ptrace", {"request": numbers[request], "pid": pid, "addr": 0, "data": 0})]


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise CallError(f"'{key}' must be a non-empty string")
    return value


#: The syscall keys of a line, in the order their records are made (after the exec).
CALLS: dict[str, Builder] = {
    "open": _open,
    "creat": _creat,
    "finit_module": _finit_module,
    "socket": _socket,
    "connect": _connect,
    "dup2": _dup2,
    "mount": _mount,
    "renameat2": _two_paths("renameat2", "[oldpath, newpath]", lambda old, new: {
        "olddirfd": AT_FDCWD, "oldpath": old, "newdirfd": AT_FDCWD, "newpath": new, "flags": 0}),
    "symlinkat": _two_paths("symlinkat", "[target, linkpath]", lambda target, link: {
        "target": target, "linkdirfd": AT_FDCWD, "linkpath": link}),
    "link": _two_paths("link", "[oldpath, newpath]", lambda old, new: {"oldpath": old, "newpath": new}),
    "linkat": _two_paths("linkat", "[oldpath, newpath]", lambda old, new: {
        "olddir": AT_FDCWD, "oldpath": old, "newdir": AT_FDCWD, "newpath": new, "flags": 0}),
    "mkdir": _mkdir,
    "ptrace": _ptrace,
}


def memfd_create(value: Any) -> Call:
    """The memfd a process creates before it executes it through `/proc/self/fd/3`."""
    return Call("memfd_create", {"name": _text(value, "memfd_create"), "flags": 1}, LINE_FD)
