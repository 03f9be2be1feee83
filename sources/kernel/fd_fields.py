"""Extractors of `fd.*`: the descriptor an event refers to, or for a failed open the path it asked for."""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from agent.event import Event
from agent.fields import AnyOf, ConstantComparator, Extractor, ExtractorFactory, Value
from sources.kernel.arg_render import sockaddr_text
from sources.kernel.dns_names import DOMAIN_NAMES
from sources.kernel.evt_fields import payload_of, read_inline, simple
from sources.kernel.state.cgroup import short_id
from sources.kernel.state.fd_events import OPEN_TYPES
from sources.kernel.state.fds import DIRECTORY, FILE, FdInfo, FdType, Role
from sources.kernel.state.paths import directory_of, filename_of
from sources.kernel.state.payload import SyscallEvent

_SLASHES = re.compile(r"/{2,}")
# What fd.typechar says for a failed call that would have created an fd (libsinsp's guess by type).
_CREATOR_CHARS = {**dict.fromkeys(OPEN_TYPES, "f"), "socket": "4", "accept": "4", "accept4": "4",
                  "pipe": "p", "pipe2": "p"}
_FILE_TYPES = (FdType.FILE, FdType.DIRECTORY)


def _on_fd(fn: Callable[[FdInfo], Value]) -> ExtractorFactory:
    def get(ev: SyscallEvent) -> Value:
        info = ev.fd
        return fn(info) if info is not None else None

    return simple(get)


def _creator_name(ev: SyscallEvent, *, raw: bool = False) -> str | None:
    """The name a failed fd-creating call was about (libsinsp's fallback when the event has no fd)."""
    if not ev.has_fd:
        return None
    if ev.path is not None:
        return (ev.path_raw or "") if raw else ev.path
    if ev.record.type == "connect":
        return sockaddr_text(ev.record.args.get("addr") or b"")
    return ""


def _name(ev: SyscallEvent) -> Value:
    info = ev.fd
    if info is None or (ev.record.type == "connect" and ev.record.res < 0 and ev.record.res != -115):
        return _creator_name(ev)
    return info.name


def _nameraw(ev: SyscallEvent) -> Value:
    text = ev.fd.name_raw if ev.fd is not None else _creator_name(ev, raw=True)
    if text is None or "//" not in text:  # the usual path: no regular expression to run
        return text
    return _SLASHES.sub("/", text)


def _typechar(ev: SyscallEvent) -> Value:
    if ev.fd is not None:
        return ev.fd.type.char
    return _CREATOR_CHARS.get(ev.record.type, "o") if ev.has_fd else None


def _directory(ev: SyscallEvent) -> Value:
    info = ev.fd
    if info is None:
        name = _creator_name(ev)
        return directory_of(name) if name is not None else None
    if info.type is DIRECTORY:
        return info.name
    return directory_of(info.name) if info.type is FILE else None


def _filename(ev: SyscallEvent) -> Value:
    info = ev.fd
    return filename_of(info.name) if info is not None and info.type is FILE else None


def _connected_ip(fn: Callable[[FdInfo], Value]) -> Callable[[FdInfo], Value]:
    """Client-side fields need a socket with a role (libsinsp's is_role_none check)."""
    return lambda f: fn(f) if f.type.is_ip and f.role is not Role.NONE and not f.is_listening else None


def _server(fn: Callable[[FdInfo], Value]) -> Callable[[FdInfo], Value]:
    return lambda f: fn(f) if f.type.is_ip and (f.role is not Role.NONE or f.is_listening) else None


def _is_local_client(f: FdInfo) -> bool:
    return f.role is Role.CLIENT


_cip = _connected_ip(lambda f: f.cip)
_cport = _connected_ip(lambda f: f.cport)
_sip = _server(lambda f: f.sip)
_sport = _server(lambda f: f.sport)
_lip = _connected_ip(lambda f: f.cip if _is_local_client(f) else f.sip)
_rip = _connected_ip(lambda f: f.sip if _is_local_client(f) else f.cip)
_lport = _connected_ip(lambda f: f.cport if _is_local_client(f) else f.sport)
_rport = _connected_ip(lambda f: f.sport if _is_local_client(f) else f.cport)


def _either_end(server: Callable[[FdInfo], Value], client: Callable[[FdInfo], Value]) -> Callable[[FdInfo], Value]:
    """`fd.ip`, `fd.net`, `fd.port`: libsinsp matches the server or the client end."""
    def get(f: FdInfo) -> Value:
        values = tuple(v for v in (server(f), client(f)) if v is not None)
        return AnyOf(values) if values else None

    return get


#: The operators whose `fd.*ip.name` checks compare the address with what the names resolve to (True: negated);
#: any other operator compares the name outputs show, as libsinsp falls back to for them.
_NAME_OPS = {"=": False, "==": False, "in": False, "intersects": False, "!=": True}


def _domain_name(address: Callable[[FdInfo], Value]) -> tuple[ExtractorFactory, ConstantComparator]:
    """`fd.sip.name` and kin: the extractor shows a watched name the address resolves from (outputs), the
    comparator checks the address against the names a condition writes (DOMAIN_NAMES resolves them)."""
    address_of = _on_fd(address)(None)

    def extractor(_arg: str | None) -> Extractor:
        def extract(event: Event) -> Value:
            ip = address_of(event)
            return DOMAIN_NAMES.name_of(ip) if ip is not None else None

        return extract

    def comparator(_arg: str | None, op: str, names: tuple[str, ...]) -> Callable[[Event], bool] | None:
        negate = _NAME_OPS.get(op)
        if negate is None:
            return None
        check_address = DOMAIN_NAMES.matcher(names, negate=negate)

        def check(event: Event) -> bool:
            ip = address_of(event)
            return ip is not None and check_address(ip)

        return check

    return extractor, comparator


def _port_text(port: Value) -> Value:
    """A port's protocol name as Falco shows it: Falco turns libsinsp's port resolution off, so the number as text."""
    return str(port) if port is not None else None


def _is_connected_ip(f: FdInfo) -> bool:
    return f.type.is_ip and not f.is_listening


def _cproto(f: FdInfo) -> Value:
    """Any socket with a role has one: a connected IP socket its client port's, any other the empty text."""
    if f.role is Role.NONE:
        return None
    return _port_text(f.cport) if _is_connected_ip(f) else ""


def _sproto(f: FdInfo) -> Value:
    """IP sockets only; a listening one gives the empty text, as libsinsp names only connected ports."""
    if not f.type.is_ip:
        return None
    if f.is_listening:
        return ""
    return _port_text(f.sport) if f.role is not Role.NONE else None


def _local_or_remote_proto(port: Callable[[FdInfo], Value]) -> Callable[[FdInfo], Value]:
    return lambda f: _port_text(port(f)) if _is_connected_ip(f) and f.role is not Role.NONE else None


def _l4proto(f: FdInfo) -> Value:
    return f.l4proto if f.type.is_ip and f.l4proto else "<NA>"


def _sockfamily(f: FdInfo) -> Value:
    if f.type.is_ip:
        return "ip"
    return "unix" if f.type is FdType.UNIX else None


def _types_factory(arg: str | None) -> Extractor:
    def extract(event: Event) -> Value:
        ev = payload_of(event)
        if ev is None:
            return None
        if arg is not None:
            info = ev.thread.fds.get(int(arg))
            return (info.type.type_name,) if info is not None else None
        names = dict.fromkeys(info.type.type_name for _, info in ev.thread.fds.items())
        return tuple(names) or None

    return extract


def _gated(fn: Callable[[SyscallEvent], Value]) -> ExtractorFactory:
    """Only events about a descriptor have fd fields."""

    def factory(_arg: str | None) -> Extractor:
        def extract(event: Event) -> Value:
            payload = event.payload
            return fn(payload) if payload.__class__ is SyscallEvent and payload.has_fd else None

        return extract

    return factory


def _own_fd(value: str, fd: str, more: str) -> str:
    """The inline read (evt_fields.read_inline) of a field of the event's own descriptor: `value`, when `fd` (how the
    descriptor is read) is one and `more` holds; else the extractor."""
    return f"({value} if {{payload}}.__class__ is {{SE}} and {{payload}}.has_fd and {fd} is not None and {more} " \
           "else {fallback})"


_NAME_FIELDS = {"fd.cip.name": _domain_name(_cip), "fd.sip.name": _domain_name(_sip),
                "fd.lip.name": _domain_name(_lip), "fd.rip.name": _domain_name(_rip)}

FD_EXTRACTORS: dict[str, ExtractorFactory] = {
    "fd.num": _gated(lambda ev: ev.fd_num),
    "fd.type": _on_fd(lambda f: f.type.type_name),
    "fd.typechar": _gated(_typechar),
    # Read inline for a descriptor's own name (not a failed connect's, nor a name with `//` to fold).
    "fd.name": read_inline(_gated(_name), _own_fd("{tmp}.name", "({tmp} := {payload}.fd)",
                                                  "{payload}.record.type != 'connect'")),
    "fd.nameraw": read_inline(_gated(_nameraw), _own_fd("{tmp}", "{payload}.fd",
                                                        "'//' not in ({tmp} := {payload}.fd.name_raw)")),
    "fd.directory": _gated(_directory),
    "fd.filename": _gated(_filename),
    "fd.containername": _gated(lambda ev: f"{short_id(ev.thread.container_id)}:{_name(ev) or ''}"),
    "fd.containerdirectory": _gated(lambda ev: f"{short_id(ev.thread.container_id)}:{_directory(ev) or ''}"),
    "fd.ip": _on_fd(_either_end(_sip, _cip)),
    "fd.cip": _on_fd(_cip),
    "fd.sip": _on_fd(_sip),
    "fd.lip": _on_fd(_lip),
    "fd.rip": _on_fd(_rip),
    "fd.net": _on_fd(_either_end(_sip, _cip)),
    "fd.cnet": _on_fd(_cip),
    "fd.snet": _on_fd(_sip),
    "fd.lnet": _on_fd(_lip),
    "fd.rnet": _on_fd(_rip),
    "fd.port": _on_fd(_either_end(_sport, _cport)),
    "fd.cport": _on_fd(_cport),
    "fd.sport": _on_fd(_sport),
    "fd.lport": _on_fd(_lport),
    "fd.rport": _on_fd(_rport),
    "fd.proto": _on_fd(_either_end(_sport, _cport)),
    "fd.cproto": _on_fd(_cproto),
    "fd.sproto": _on_fd(_sproto),
    "fd.lproto": _on_fd(_local_or_remote_proto(_lport)),
    "fd.rproto": _on_fd(_local_or_remote_proto(_rport)),
    "fd.l4proto": _on_fd(_l4proto),
    "fd.sockfamily": _on_fd(_sockfamily),
    "fd.is_server": _on_fd(lambda f: f.is_listening or f.role is Role.SERVER),
    "fd.connected": _on_fd(lambda f: f.is_connected),
    "fd.name_changed": _gated(lambda ev: ev.name_changed if ev.fd is not None else None),
    "fd.ino": _on_fd(lambda f: f.ino or None),
    "fd.dev": _on_fd(lambda f: f.dev or None),
    "fd.dev.major": _on_fd(lambda f: os.major(f.dev) if f.dev else None),
    "fd.dev.minor": _on_fd(lambda f: os.minor(f.dev) if f.dev else None),
    "fd.uid": _gated(lambda ev: f"{ev.thread.tid}{ev.fd_num}"),
    "fd.types": _types_factory,
    **{name: extractor for name, (extractor, _) in _NAME_FIELDS.items()},
}

#: The fields whose checks compare through their constants (FieldSpec.comparator).
FD_COMPARATORS: dict[str, ConstantComparator] = {name: comparator for name, (_, comparator) in _NAME_FIELDS.items()}
