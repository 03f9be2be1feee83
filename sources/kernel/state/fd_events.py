"""How records that create, change or close descriptors change a process's fd table."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

from sources.kernel.record import SyscallRecord
from sources.kernel.state.context import StateContext
from sources.kernel.state.fds import DIRECTORY, FILE, O_CLOEXEC, FdInfo, FdType, IpAddress, Role, socket_name
from sources.kernel.state.host import FdPaths
from sources.kernel.state.paths import AT_FDCWD, PLAIN_PATHS, ProcLink, path_through_proc, plain_path
from sources.kernel.state.payload import SyscallEvent
from sources.kernel.state.sockaddr import AF_INET, AF_INET6, AF_NETLINK, AF_UNIX, SockAddr, parse_sockaddr
from sources.kernel.state.threads import ThreadInfo

O_WRONLY, O_CREAT, O_TRUNC, O_DIRECTORY = 0o1, 0o100, 0o1000, 0o200000
EINPROGRESS = 115
SOCK_TYPE_MASK = 0xF
_L4_BY_SOCK_TYPE = {1: "tcp", 2: "udp", 3: "raw", 5: "tcp"}
_FD_TYPE_BY_FAMILY = {AF_INET: FdType.IPV4, AF_INET6: FdType.IPV6, AF_UNIX: FdType.UNIX, AF_NETLINK: FdType.NETLINK}
_IPPROTO_ICMP = (1, 58)
OPEN_TYPES = frozenset({"open", "openat", "openat2", "creat"})
#: The state counter of opens of a watched file named by its inode rather than the path passed.
NAMED_BY_INODE = "opens_named_by_inode"


def _created(ctx: StateContext, rec: SyscallRecord, thread: ThreadInfo, info: FdInfo | None) -> SyscallEvent:
    # Positional (fd, has_fd, fd_num) on the per-record path: keywords make the construction twice as slow.
    return SyscallEvent(rec, thread, ctx.lookups, info, True, rec.res if rec.res >= 0 else -1)


def uses_fd(ctx: StateContext, rec: SyscallRecord, thread: ThreadInfo) -> SyscallEvent:
    """Any record with an `fd` parameter: the event refers to that descriptor."""
    num = rec.args.get("fd", -1)
    return SyscallEvent(rec, thread, ctx.lookups, thread.fds.get(num), True, num)


def open_flags(rec: SyscallRecord) -> int:
    """Linux open flags of an open-family record (creat implies O_CREAT|O_WRONLY|O_TRUNC)."""
    if rec.type == "creat":
        return O_CREAT | O_WRONLY | O_TRUNC
    if "flags" in rec.args:
        return int(rec.args["flags"])
    how = rec.args.get("how")
    # openat2's struct open_how starts with the u64 flags.
    return struct.unpack_from("=Q", how)[0] if isinstance(how, bytes) and len(how) >= 8 else 0


def resolve_at(ctx: StateContext, thread: ThreadInfo, dirfd: int, path: str) -> str:
    """A path relative to a dirfd (AT_FDCWD: the working directory), as an absolute path ("<UNKNOWN>" stands
    for a dirfd nobody can name), the opener's own links in procfs followed (`own_proc_link`)."""
    if path.startswith("/") or dirfd == AT_FDCWD:
        base = thread.cwd
    else:
        base = directory_name(ctx, thread, dirfd) or "<UNKNOWN>"
    return path_through_proc(base, path, lambda link: own_proc_link(thread, link))


def directory_name(ctx: StateContext, thread: ThreadInfo, fd: int) -> str | None:
    """The name of a descriptor used as a directory (a dirfd, fchdir's fd); None when nobody can tell.

    One the state does not hold (its open was kept in the kernel) is asked of a live host, which can answer
    only while the process still holds it; a replay cannot.
    """
    info = thread.fds.get(fd)
    if info is not None:
        return info.name
    name = ctx.host.fd_path(thread.pid, fd) if isinstance(ctx.host, FdPaths) else None
    ctx.counters["dirfds_from_host" if name is not None else "dirfds_unknown"] += 1
    return name


def own_proc_link(thread: ThreadInfo, link: ProcLink) -> str | None:
    """Where one of the thread's own links in procfs leads (/proc/self/fd/3, /dev/fd/3, /proc/self/cwd,
    /proc/self/root), so that a file reopened through /proc is named as that file; None for another process's.

    A descriptor counts when it names a file or directory; the root is taken to be `/`, as every path is named
    from the process's root anyway.
    """
    if link.pid is not None and link.pid != thread.vpid:
        return None
    if link.fd < 0:
        to = thread.cwd if link.cwd else "/"
    else:
        info = thread.fds.get(link.fd)
        to = info.name if info is not None and info.type in (FdType.FILE, FdType.DIRECTORY) else ""
    return to if to.startswith("/") else None


def on_open(ctx: StateContext, rec: SyscallRecord, thread: ThreadInfo) -> SyscallEvent:
    args = rec.args
    raw = args.get("name", "") or ""
    # Most opens pass an absolute path with nothing to resolve, of a path opened before: one lookup tells.
    path = raw if raw in PLAIN_PATHS or plain_path(raw) else resolve_at(ctx, thread, args.get("dirfd", AT_FDCWD), raw)
    if rec.res < 0:
        event = _created(ctx, rec, thread, None)
        event.path, event.path_raw = path, raw
        return event
    flags = args.get("flags")
    if flags.__class__ is not int:  # creat, a replayed openat2's open_how: the call is spared the usual open
        flags = open_flags(rec)
    ino, dev = args.get("ino", 0), args.get("dev", 0)
    if ino:
        # A file the rules name, or one made in a directory they name, opened through a link or another mount:
        # named as the rules name it. Its inode alone decides for most opens.
        watched = ctx.watched_files
        named = watched.by_inode[ino].get(dev) if ino in watched.by_inode else None
        if named is None and args.get("dir_ino"):
            named = watched.made_in(dev, args["dir_ino"], args.get("dirent", ""))
        if named is not None and named != path and not watched.covers(path):
            path = named
            ctx.counters[NAMED_BY_INODE] += 1
    # Positional (name, name_raw, flags, ino, dev): see _created.
    info = FdInfo(rec.res, DIRECTORY if flags & O_DIRECTORY else FILE, path, raw, flags, ino, dev)
    thread.fds.add(info)
    return SyscallEvent(rec, thread, ctx.lookups, info, True, rec.res)  # _created, its call spared


def on_close(ctx: StateContext, rec: SyscallRecord, thread: ThreadInfo) -> SyscallEvent:
    num = rec.args.get("fd", -1)
    return SyscallEvent(rec, thread, ctx.lookups, close_fd(thread, num, rec.res), True, num)


def close_fd(thread: ThreadInfo, num: int, res: int) -> FdInfo | None:
    """The descriptor a close names, removed from the table when the close succeeded."""
    return thread.fds.remove(num) if res == 0 else thread.fds.get(num)


def on_dup(ctx: StateContext, rec: SyscallRecord, thread: ThreadInfo) -> SyscallEvent:
    old = thread.fds.get(rec.args.get("oldfd", -1))
    if rec.res < 0 or old is None:
        return _created(ctx, rec, thread, None)
    cloexec = O_CLOEXEC if rec.type == "dup3" and rec.args.get("flags", 0) & O_CLOEXEC else 0
    info = old.renumbered(rec.res, flags=(old.flags & ~O_CLOEXEC) | cloexec)
    thread.fds.add(info)
    return _created(ctx, rec, thread, info)


def _pair(ctx: StateContext, rec: SyscallRecord, thread: ThreadInfo, make: FdInfo) -> SyscallEvent:
    fds: Sequence[int] = rec.args.get("fds") or ()
    if rec.res < 0 or len(fds) != 2:
        return SyscallEvent(rec, thread, ctx.lookups, has_fd=True, fd_num=-1)
    first = replace(make, num=fds[0])
    thread.fds.add(first)
    thread.fds.add(replace(make, num=fds[1]))
    return SyscallEvent(rec, thread, ctx.lookups, fd=first, has_fd=True, fd_num=fds[0])


def on_pipe(ctx: StateContext, rec: SyscallRecord, thread: ThreadInfo) -> SyscallEvent:
    return _pair(ctx, rec, thread, FdInfo(-1, FdType.PIPE, flags=rec.args.get("flags", 0) & O_CLOEXEC))


def on_socketpair(ctx: StateContext, rec: SyscallRecord, thread: ThreadInfo) -> SyscallEvent:
    fd_type = _FD_TYPE_BY_FAMILY.get(rec.args.get("domain", AF_UNIX), FdType.UNKNOWN)
    return _pair(ctx, rec, thread, FdInfo(-1, fd_type, flags=rec.args.get("type", 0) & O_CLOEXEC))


def on_socket(ctx: StateContext, rec: SyscallRecord, thread: ThreadInfo) -> SyscallEvent:
    if rec.res < 0:
        return _created(ctx, rec, thread, None)
    sock_type = rec.args.get("type", 0)
    fd_type = _FD_TYPE_BY_FAMILY.get(rec.args.get("domain", 0), FdType.UNKNOWN)
    l4proto = ""
    if fd_type.is_ip:
        l4proto = _L4_BY_SOCK_TYPE.get(sock_type & SOCK_TYPE_MASK, "")
        if l4proto == "raw" and rec.args.get("proto") in _IPPROTO_ICMP:
            l4proto = "icmp"
    info = FdInfo(rec.res, fd_type, flags=sock_type & O_CLOEXEC, l4proto=l4proto)
    thread.fds.add(info)
    return _created(ctx, rec, thread, info)


def _with_peer(info: FdInfo, peer: SockAddr, local: SockAddr | None, *, role: Role) -> FdInfo:
    """A socket's FdInfo after connect (role CLIENT: peer is the server) or accept (SERVER: peer is the client)."""
    if info.type is FdType.UNIX or peer.family == AF_UNIX:
        return replace(info, type=FdType.UNIX, name=peer.path or info.name, role=role, is_connected=True)
    if peer.ip is None:
        return info
    local_ip = local.ip if local is not None and local.ip is not None else None
    local_port = local.port if local is not None else 0
    new = replace(info, type=FdType.IPV6 if peer.family == AF_INET6 else FdType.IPV4, role=role, is_connected=True,
                  is_listening=False)
    if role is Role.CLIENT:
        new.cip, new.cport, new.sip, new.sport = local_ip or _unspecified(peer), local_port, peer.ip, peer.port
    else:
        new.cip, new.cport = peer.ip, peer.port
        new.sip = local_ip or info.sip or _unspecified(peer)
        new.sport = local_port or info.sport
    new.name = socket_name(new)
    return new


def _unspecified(addr: SockAddr) -> IpAddress:
    return IPv6Address(0) if addr.family == AF_INET6 else IPv4Address(0)


def on_connect(ctx: StateContext, rec: SyscallRecord, thread: ThreadInfo) -> SyscallEvent:
    num = rec.args.get("fd", -1)
    info = thread.fds.get(num)
    peer = parse_sockaddr(rec.args.get("addr") or b"")
    event = SyscallEvent(rec, thread, ctx.lookups, fd=info, has_fd=True, fd_num=num)
    if info is None or peer is None or (rec.res < 0 and rec.res != -EINPROGRESS):
        return event
    local = parse_sockaddr(rec.args.get("local_addr") or b"")
    new = _with_peer(info, peer, local, role=Role.CLIENT)
    new.is_connected = rec.res == 0
    thread.fds.add(new)
    event.fd, event.name_changed = new, new.name != info.name
    return event


def on_tcp_local(ctx: StateContext, rec: SyscallRecord, thread: ThreadInfo) -> SyscallEvent:
    """The local port a non-blocking connect got after it returned (the probe's own `tcp_local` record)."""
    num = rec.args.get("fd", -1)
    info = thread.fds.get(num)
    if info is not None and info.type.is_ip and info.role is Role.CLIENT and not info.cport:
        info = replace(info, cport=int(rec.args.get("local_port", 0)), is_connected=True)
        info.name = socket_name(info)
        thread.fds.add(info)
    return SyscallEvent(rec, thread, ctx.lookups, fd=info, has_fd=True, fd_num=num)


def on_bind(ctx: StateContext, rec: SyscallRecord, thread: ThreadInfo) -> SyscallEvent:
    num = rec.args.get("fd", -1)
    info = thread.fds.get(num)
    addr = parse_sockaddr(rec.args.get("addr") or b"")
    event = SyscallEvent(rec, thread, ctx.lookups, fd=info, has_fd=True, fd_num=num)
    if rec.res != 0 or info is None or addr is None:
        return event
    if addr.ip is not None:
        new = replace(info, sip=addr.ip, sport=addr.port, role=Role.SERVER, is_listening=True)
        new.name = socket_name(new)
    else:
        new = replace(info, name=addr.path or info.name)
    thread.fds.add(new)
    event.fd = new
    return event


def on_accept(ctx: StateContext, rec: SyscallRecord, thread: ThreadInfo) -> SyscallEvent:
    listener = thread.fds.get(rec.args.get("listen_fd", -1))
    if rec.res < 0:
        return _created(ctx, rec, thread, None)
    base = listener if listener is not None else FdInfo(rec.res, FdType.UNKNOWN)
    base = replace(base, num=rec.res, flags=rec.args.get("flags", 0) & O_CLOEXEC)
    peer = parse_sockaddr(rec.args.get("addr") or b"")
    info = _with_peer(base, peer, parse_sockaddr(rec.args.get("local_addr") or b""), role=Role.SERVER) \
        if peer is not None else replace(base, role=Role.SERVER, is_connected=True, is_listening=False)
    thread.fds.add(info)
    return _created(ctx, rec, thread, info)


def on_memfd_create(ctx: StateContext, rec: SyscallRecord, thread: ThreadInfo) -> SyscallEvent:
    if rec.res < 0:
        return _created(ctx, rec, thread, None)
    # MFD_CLOEXEC is bit 0 of memfd_create's flags.
    flags = O_CLOEXEC if rec.args.get("flags", 0) & 1 else 0
    name = "memfd:" + (rec.args.get("name", "") or "")
    info = FdInfo(rec.res, FdType.MEMFD, name=name, name_raw=name, flags=flags)
    thread.fds.add(info)
    return _created(ctx, rec, thread, info)


def on_sendto(ctx: StateContext, rec: SyscallRecord, thread: ThreadInfo) -> SyscallEvent:
    """An unconnected datagram socket takes the destination of each send as its peer (Falco's tuple change)."""
    event = uses_fd(ctx, rec, thread)
    info = event.fd
    peer = parse_sockaddr(rec.args.get("addr") or b"")
    if info is None or peer is None or peer.ip is None or info.is_connected or not info.type.is_ip or rec.res < 0:
        return event
    new = _with_peer(info, peer, None, role=Role.CLIENT)
    new.is_connected = False
    thread.fds.add(new)
    event.fd, event.name_changed = new, new.name != info.name
    return event
