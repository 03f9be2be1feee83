"""How process lifecycle, working directory, credential and session records change the state."""

from __future__ import annotations

from dataclasses import replace

from sources.kernel.record import SyscallRecord
from sources.kernel.state.builders import cloned_thread
from sources.kernel.state.context import StateContext
from sources.kernel.state.fd_events import directory_name
from sources.kernel.state.fds import FdType
from sources.kernel.state.paths import AT_FDCWD, absolute_path
from sources.kernel.state.payload import SyscallEvent
from sources.kernel.state.threads import FsInfo, ThreadInfo

CLONE_FS = 0x200
CLONE_FILES = 0x400
CLONE_PARENT = 0x8000
CLONE_THREAD = 0x10000
CLONE_NEWPID = 0x20000000
AT_EMPTY_PATH = 0x1000
_FD_PATH_PREFIXES = ("/proc/self/fd/", "/dev/fd/")


def _event(ctx: StateContext, rec: SyscallRecord, thread: ThreadInfo) -> SyscallEvent:
    return SyscallEvent(rec, thread, ctx.lookups)


def on_clone(ctx: StateContext, rec: SyscallRecord, caller: ThreadInfo) -> SyscallEvent:
    """A new thread or process, from the scheduler's fork record in the caller's context."""
    child_tid, child_pid = rec.args.get("child_tid", rec.res), rec.args.get("child_pid", rec.res)
    if rec.res < 0 or child_tid <= 0:
        return _event(ctx, rec, caller)
    flags = rec.args.get("flags", 0)
    is_thread = bool(flags & CLONE_THREAD)
    fds = caller.fds if is_thread or flags & CLONE_FILES else caller.fds.copy()
    fs = caller.fs if is_thread or flags & CLONE_FS else FsInfo(caller.fs.cwd)
    child = cloned_thread(caller, tid=child_tid, pid=child_pid, start_ns=rec.ts_ns, fds=fds, fs=fs)
    if is_thread or flags & CLONE_PARENT:
        child.parent = caller.parent
    else:
        child.parent = ctx.table.main(caller.pid) or caller
    if flags & CLONE_NEWPID:
        child.vpid = 1
    elif not is_thread:
        # In the host's pid namespace the virtual pid is the pid; elsewhere it is unknown until exec.
        child.vpid = child_pid if caller.vpid == caller.pid else 0
    ctx.table.add(child)
    return _event(ctx, rec, caller)


def on_exec(ctx: StateContext, rec: SyscallRecord, old: ThreadInfo) -> SyscallEvent:
    """A successful exec replaces the process image with a new ThreadInfo; a failed one changes nothing."""
    if rec.res != 0:
        return _event(ctx, rec, old)
    argv: list[str] = list(rec.args.get("argv") or [])
    raw_path = rec.args.get("filename", rec.args.get("pathname", "")) or ""
    fds = old.fds.without_cloexec()
    new = replace(old, tid=rec.pid, pid=rec.pid, comm=rec.comm, fds=fds, exe=argv[0] if argv else raw_path,
                  args=argv[1:], uid=rec.uid, gid=rec.gid, exited=False)
    memfd_name = _memfd_exe(old, rec, raw_path)
    new.exe_from_memfd = memfd_name is not None
    new.exepath = memfd_name if memfd_name is not None else _exe_path(old, rec, raw_path)
    new.exe_upper_layer = new.exe_lower_layer = new.exe_writable = False
    new.exe_ino = new.exe_ctime_ns = new.exe_mtime_ns = 0
    snap = ctx.host.process(rec.pid)
    if snap is not None and snap.pid == rec.pid:
        new.exepath = snap.exepath or new.exepath
        new.exe_from_memfd = snap.exe_from_memfd or new.exe_from_memfd
        new.env, new.euid, new.egid, new.suid, new.sgid = list(snap.env), snap.euid, snap.egid, snap.suid, snap.sgid
        new.cap_permitted, new.cap_effective = snap.cap_permitted, snap.cap_effective
        new.cap_inheritable, new.loginuid = snap.cap_inheritable, snap.loginuid
        # libsinsp takes the tty from every exec; a session leader may have acquired it after the fork
        # (setsid then TIOCSCTTY, as `docker exec -t` and sshd do), which no record tells the state.
        new.tty = snap.tty
        new.exe_ino, new.exe_ctime_ns, new.exe_mtime_ns = snap.exe_ino, snap.exe_ctime_ns, snap.exe_mtime_ns
        new.exe_writable, new.exe_upper_layer = snap.exe_writable, snap.exe_upper_layer
        new.exe_lower_layer, new.vpid = snap.exe_lower_layer, snap.vpid or new.vpid
        new.container_id = snap.container_id or new.container_id
        # libsinsp refreshes these from every exec; a clone copies the caller's.
        new.fd_limit, new.vm_size_kb, new.vm_rss_kb, new.vm_swap_kb = (snap.fd_limit, snap.vm_size_kb,
                                                                       snap.vm_rss_kb, snap.vm_swap_kb)
        new.page_faults_major, new.page_faults_minor = snap.page_faults_major, snap.page_faults_minor
        new.cgroups, new.pidns_init_start_ns = list(snap.cgroups), snap.pidns_init_start_ns
    else:
        ctx.counters["exec_without_snapshot"] += 1
    # The record's cgroup cannot be outrun by a short-lived process, unlike /proc.
    container_id = ctx.host.container_of_cgroup(rec.cgroup_id) if rec.cgroup_id else None
    if container_id is not None:
        new.container_id = container_id
    # The kernel ends every other thread of the process; the exec'ing thread takes the pid.
    for thread in ctx.table.threads_of(rec.pid):
        if thread.tid != rec.pid:
            ctx.table.remove(thread.tid)
    ctx.table.add(new)
    ctx.track_identity(new)
    return _event(ctx, rec, new)


def _exe_path(old: ThreadInfo, rec: SyscallRecord, raw_path: str) -> str:
    dirfd = rec.args.get("dirfd", AT_FDCWD)
    base = old.cwd
    if dirfd != AT_FDCWD:
        dir_info = old.fds.get(dirfd)
        if dir_info is not None:
            if not raw_path and rec.args.get("flags", 0) & AT_EMPTY_PATH:
                return dir_info.name
            base = dir_info.name
    return absolute_path(base, raw_path)


def _memfd_exe(old: ThreadInfo, rec: SyscallRecord, raw_path: str) -> str | None:
    """The memfd name when the exec ran a memfd (fexecve: `/proc/self/fd/N`, or execveat(fd, "", AT_EMPTY_PATH))."""
    num: int | None = None
    if rec.type == "execveat" and not raw_path and rec.args.get("flags", 0) & AT_EMPTY_PATH:
        num = rec.args.get("dirfd")
    else:
        for prefix in _FD_PATH_PREFIXES:
            if raw_path.startswith(prefix) and raw_path[len(prefix):].isdigit():
                num = int(raw_path[len(prefix):])
    info = old.fds.get(num) if num is not None else None
    return info.name if info is not None and info.type is FdType.MEMFD else None


def on_procexit(ctx: StateContext, rec: SyscallRecord, thread: ThreadInfo) -> SyscallEvent:
    """A thread ended; when its whole process did, its children go to the reaper, as the kernel does."""
    thread.exited = True
    group_dead = bool(rec.args.get("group_dead", thread.is_main))
    if not group_dead and thread.is_main:
        # The leader of a still-running process stays as a zombie, standing for the process.
        return _event(ctx, rec, thread)
    ctx.table.remove(thread.tid)
    if group_dead:
        for leftover in ctx.table.threads_of(thread.pid):
            ctx.table.remove(leftover.tid)
        reaper_tid = rec.args.get("reaper_tid")
        reaper = ctx.table.get(reaper_tid) if reaper_tid else ctx.table.reaper_for(thread)
        for child_pid in ctx.table.child_pids(thread.pid):
            ctx.table.reparent(child_pid, reaper)
    return _event(ctx, rec, thread)


def on_chdir(ctx: StateContext, rec: SyscallRecord, thread: ThreadInfo) -> SyscallEvent:
    if rec.res == 0:
        thread.fs.cwd = absolute_path(thread.cwd, rec.args.get("path", ""))
    return _event(ctx, rec, thread)


def on_fchdir(ctx: StateContext, rec: SyscallRecord, thread: ThreadInfo) -> SyscallEvent:
    num = rec.args.get("fd", -1)
    info = thread.fds.get(num)
    # A directory whose open the prefilter kept in the kernel is named by the live host while still held.
    name = directory_name(ctx, thread, num) if rec.res == 0 else None
    if name is not None:
        thread.fs.cwd = name
    return SyscallEvent(rec, thread, ctx.lookups, fd=info, has_fd=True, fd_num=num)


def on_setuid(ctx: StateContext, rec: SyscallRecord, thread: ThreadInfo) -> SyscallEvent:
    if rec.res != 0:
        return _event(ctx, rec, thread)
    args = rec.args
    if rec.type in ("setuid", "setgid"):
        is_uid = rec.type == "setuid"
        value = args.get("uid" if is_uid else "gid", -1)
        if value in (-1, 0xFFFFFFFF):
            return _event(ctx, rec, thread)
        # Only a privileged caller changes its real and saved ids too.
        if thread.euid == 0:
            setattr(thread, "uid" if is_uid else "gid", value)
            setattr(thread, "suid" if is_uid else "sgid", value)
        setattr(thread, "euid" if is_uid else "egid", value)
    else:
        prefix = "u" if rec.type in ("setreuid", "setresuid") else "g"
        real, effective, saved = (args.get(f"r{prefix}id", -1), args.get(f"e{prefix}id", -1),
                                  args.get(f"s{prefix}id", -1))
        names = ("uid", "euid", "suid") if prefix == "u" else ("gid", "egid", "sgid")
        for name, value in zip(names, (real, effective, saved), strict=True):
            # -1 (as a 32-bit id or a signed int) leaves the id unchanged.
            if value not in (-1, 0xFFFFFFFF):
                setattr(thread, name, value)
    return _event(ctx, rec, thread)


def on_setsid(ctx: StateContext, rec: SyscallRecord, thread: ThreadInfo) -> SyscallEvent:
    if rec.res >= 0:
        for member in ctx.table.threads_of(thread.pid):
            member.sid = member.pgid = rec.res
    return _event(ctx, rec, thread)


def on_setpgid(ctx: StateContext, rec: SyscallRecord, thread: ThreadInfo) -> SyscallEvent:
    if rec.res == 0:
        target = rec.args.get("pid", 0) or thread.pid
        pgid = rec.args.get("pgid", 0) or target
        for member in ctx.table.threads_of(target):
            member.pgid = pgid
    return _event(ctx, rec, thread)


def on_capset(ctx: StateContext, rec: SyscallRecord, thread: ThreadInfo) -> SyscallEvent:
    """The record has no capability values: read them back from the host."""
    if rec.res == 0:
        snap = ctx.host.process(rec.tid)
        if snap is not None and snap.pid == thread.pid:
            thread.cap_permitted, thread.cap_effective = snap.cap_permitted, snap.cap_effective
            thread.cap_inheritable = snap.cap_inheritable
    return _event(ctx, rec, thread)
