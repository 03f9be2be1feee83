"""Build state objects from /proc snapshots and from a parent at fork."""

from __future__ import annotations

import ipaddress
from dataclasses import fields, replace

from sources.kernel.state.fds import FdInfo, FdTable, FdType, Role, socket_name
from sources.kernel.state.host import FdSnapshot, ProcessImage, ProcessSnapshot
from sources.kernel.state.threads import FsInfo, ThreadInfo


def fd_from_snapshot(snap: FdSnapshot) -> FdInfo:
    fd_type = FdType.from_name(snap.kind)
    info = FdInfo(snap.fd, fd_type, name=snap.name, name_raw=snap.name, flags=snap.flags, ino=snap.ino,
                  l4proto=snap.l4proto)
    if fd_type.is_ip and snap.local is not None:
        local_ip, local_port = ipaddress.ip_address(snap.local[0]), snap.local[1]
        if snap.listening or snap.remote is None:
            info.sip, info.sport, info.is_listening, info.role = local_ip, local_port, snap.listening, Role.SERVER
        else:
            # /proc does not say who connected; like Falco's scan, the local end is the client.
            info.cip, info.cport = local_ip, local_port
            info.sip, info.sport = ipaddress.ip_address(snap.remote[0]), snap.remote[1]
            info.role, info.is_connected = Role.CLIENT, True
        info.name = socket_name(info)
    return info


def thread_from_snapshot(snap: ProcessSnapshot, *, fds: FdTable, fs: FsInfo) -> ThreadInfo:
    """A ThreadInfo for a snapshot, sharing the given fd table and fs (its process's)."""
    image = {f.name: getattr(snap, f.name) for f in fields(ProcessImage)}
    image["args"], image["env"] = list(snap.args), list(snap.env)
    return ThreadInfo(snap.tid, snap.pid, snap.comm, fds, fs, ptid=snap.ppid, **image)


def fd_table_from_snapshot(snap: ProcessSnapshot, max_fds: int) -> FdTable:
    table = FdTable(max_fds)
    for fd in snap.fds:
        table.add(fd_from_snapshot(fd))
    return table


def cloned_thread(parent_thread: ThreadInfo, *, tid: int, pid: int, start_ns: int, fds: FdTable,
                  fs: FsInfo) -> ThreadInfo:
    """The child of a clone: the caller's image and credentials under a new identity."""
    return replace(parent_thread, tid=tid, pid=pid, ptid=parent_thread.tid, fds=fds, fs=fs, start_ns=start_ns,
                   args=list(parent_thread.args), env=list(parent_thread.env), exited=False, is_subreaper=False)
