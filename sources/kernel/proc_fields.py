"""Extractors of `proc.*` and `thread.*`: the event's thread, its ancestors, session and image."""

from __future__ import annotations

from collections.abc import Callable

from agent.event import Event
from agent.fields import AnyOf, Extractor, ExtractorFactory, Value
from sources.kernel.arg_format import capabilities_text
from sources.kernel.evt_fields import payload_of, read_inline, simple
from sources.kernel.state.payload import SyscallEvent
from sources.kernel.state.threads import ThreadInfo

Attr = Callable[[ThreadInfo], Value]


def cmdline(t: ThreadInfo) -> str:
    return " ".join([t.comm, *t.args])


def _exeline(t: ThreadInfo) -> str:
    return " ".join([t.exe, *t.args])


def _on_thread(attr: Attr) -> ExtractorFactory:
    return simple(lambda ev: attr(ev.thread))


def _on_parent(attr: Attr) -> ExtractorFactory:
    def get(ev: SyscallEvent) -> Value:
        parent = ev.thread.parent
        return attr(parent) if parent is not None else None

    return simple(get)


def _ancestor(attr: Attr) -> ExtractorFactory:
    """`proc.aX[N]` (0 = the thread itself, 1 = parent, ...); without N any ancestor matches."""

    def factory(arg: str | None) -> Extractor:
        if arg is not None:
            depth = int(arg)

            def nth(event: Event) -> Value:
                ev = payload_of(event)
                if ev is None:
                    return None
                thread = ev.thread
                if depth == 0:
                    return attr(thread)
                chain = thread.ancestors(depth)
                return attr(chain[depth - 1]) if len(chain) >= depth else None

            return nth

        def any_of(event: Event) -> Value:
            ev = payload_of(event)
            chain = ev.thread.ancestors() if ev is not None else None
            if not chain:
                return None
            return AnyOf(tuple(attr(a) for a in chain))

        return any_of

    return factory


def _words(attr: Callable[[ThreadInfo], list[str]], *, by_name: bool = False) -> ExtractorFactory:
    """`proc.args` / `proc.env`: all words joined, `[N]` the Nth, and for the environment `[NAME]` a value."""

    def factory(arg: str | None) -> Extractor:
        def extract(event: Event) -> Value:
            ev = payload_of(event)
            if ev is None:
                return None
            words = attr(ev.thread)
            if arg is None:
                return " ".join(words)
            if arg.isdigit():
                return words[int(arg)] if int(arg) < len(words) else None
            if by_name:
                prefix = arg + "="
                return next((w[len(prefix):] for w in words if w.startswith(prefix)), None)
            return None

        return extract

    return factory


def _leader_by(leader_id: Callable[[ThreadInfo], int]) -> Callable[[SyscallEvent], ThreadInfo | None]:
    """The leader of the thread's session (`sid`) or process group (`pgid`): the thread whose pid is that id,
    else the last ancestor still sharing it."""

    def find(ev: SyscallEvent) -> ThreadInfo | None:
        thread = ev.thread
        wanted = leader_id(thread)
        leader = ev.lookups.threads.main(wanted)
        if leader is not None:
            return leader
        found = thread
        for ancestor in thread.ancestors():
            if leader_id(ancestor) != wanted:
                break
            found = ancestor
        return found

    return find


_session_leader = _leader_by(lambda t: t.sid)
_group_leader = _leader_by(lambda t: t.pgid)


def _of_leader(find: Callable[[SyscallEvent], ThreadInfo | None], attr: Attr) -> ExtractorFactory:
    def get(ev: SyscallEvent) -> Value:
        leader = find(ev)
        return attr(leader) if leader is not None else None

    return simple(get)


def _duration(ev: SyscallEvent) -> Value:
    start = ev.thread.start_ns
    return max(ev.record.ts_ns - start, 0) if start else None


def _ppid_duration(ev: SyscallEvent) -> Value:
    parent = ev.thread.parent
    return max(ev.record.ts_ns - parent.start_ns, 0) if parent is not None and parent.start_ns else None


def _ctime_to_start(ev: SyscallEvent) -> Value:
    thread = ev.thread
    if not thread.exe_ctime_ns or not thread.start_ns:
        return None
    return thread.start_ns - thread.exe_ctime_ns


def _ctime_after_pidns_start(ev: SyscallEvent) -> Value:
    """How long after its pid namespace started the executable last changed; none when it changed before."""
    thread = ev.thread
    start, ctime = thread.pidns_init_start_ns, thread.exe_ctime_ns
    return ctime - start if start and ctime > start else None


def _std_fd(num: int, what: str) -> ExtractorFactory:
    def get(ev: SyscallEvent) -> Value:
        info = ev.thread.fds.get(num)
        if info is None:
            return None
        return info.type.type_name if what == "type" else info.name

    return simple(get)


def _nonzero(value: int) -> Value:
    return value or None


def _main_thread(ev: SyscallEvent) -> ThreadInfo:
    """The process's main thread, whose figures libsinsp reads for process-wide fields."""
    return ev.lookups.threads.main(ev.thread.pid) or ev.thread


def _fd_usage(ev: SyscallEvent) -> Value:
    """Open descriptors as a percentage of the soft limit (100 past it, 0 when the limit is unknown)."""
    main = _main_thread(ev)
    if main.fd_limit <= 0:
        return 0.0
    return min(len(main.fds) / main.fd_limit * 100, 100.0)


def _main_only(attr: Callable[[ThreadInfo], int], scale: int = 1) -> ExtractorFactory:
    """`thread.vmsize` and kin: the process's figure on its main thread, 0 on the others."""
    return _on_thread(lambda t: attr(t) * scale if t.is_main else 0)


def _login_shell_id(ev: SyscallEvent) -> Value:
    """The pid of the eldest process, from the main thread up, whose name ends in `sh`."""
    main = _main_thread(ev)
    found = None
    for process in (main, *main.ancestors()):
        if process.comm.endswith("sh"):
            found = process.pid
    return found


def _cgroup_of(arg: str | None) -> Extractor:
    prefix = f"{arg}="

    def extract(event: Event) -> Value:
        ev = payload_of(event)
        if ev is None:
            return None
        return next((entry[len(prefix):] for entry in ev.thread.cgroups if entry.startswith(prefix)), None)

    return extract


def _env_value(t: ThreadInfo, name: str) -> str:
    prefix = f"{name}="
    return next((entry[len(prefix):] for entry in t.env if entry.startswith(prefix)), "")


def _env_text(t: ThreadInfo) -> str:
    return " ".join(t.env)


#: How far up proc.aenv[NAME] looks for the variable, as libsinsp.
_AENV_MAX_LEVELS = 20


def _ancestor_env(arg: str | None) -> Extractor:
    """`proc.aenv`: bare, the environment of any ancestor (ANY_OF; conditions only in libsinsp); `[N]` the
    environment N levels up (0 the process); `[NAME]` the first non-empty value of NAME among the ancestors."""

    def extract(event: Event) -> Value:
        ev = payload_of(event)
        if ev is None:
            return None
        main = _main_thread(ev)
        if arg is None:
            chain = main.ancestors()
            return AnyOf(tuple(_env_text(a) for a in chain)) if chain else None
        if arg.isdigit():
            depth = int(arg)
            if depth == 0:
                return _env_text(main)
            chain = main.ancestors(depth)
            return _env_text(chain[depth - 1]) if len(chain) >= depth else None
        values = (_env_value(a, arg) for a in main.ancestors(_AENV_MAX_LEVELS))
        return next((value for value in values if value), "")

    return extract


PROC_EXTRACTORS: dict[str, ExtractorFactory] = {
    "proc.exe": _on_thread(lambda t: t.exe),
    "proc.pexe": _on_parent(lambda t: t.exe),
    "proc.aexe": _ancestor(lambda t: t.exe),
    "proc.exepath": _on_thread(lambda t: t.exepath),
    "proc.pexepath": _on_parent(lambda t: t.exepath),
    "proc.aexepath": _ancestor(lambda t: t.exepath),
    "proc.name": read_inline(_on_thread(lambda t: t.comm),
                             "({payload}.thread.comm if {payload}.__class__ is {SE} else None)"),
    "proc.pname": _on_parent(lambda t: t.comm),
    "proc.aname": _ancestor(lambda t: t.comm),
    "proc.args": _words(lambda t: t.args),
    "proc.cmdline": _on_thread(cmdline),
    "proc.pcmdline": _on_parent(cmdline),
    "proc.acmdline": _ancestor(cmdline),
    "proc.cmdnargs": _on_thread(lambda t: len(t.args)),
    "proc.cmdlenargs": _on_thread(lambda t: sum(len(a) for a in t.args) + max(len(t.args) - 1, 0)),
    "proc.exeline": _on_thread(_exeline),
    "proc.env": _words(lambda t: t.env, by_name=True),
    "proc.cwd": _on_thread(lambda t: (t.cwd.rstrip("/") + "/") if t.cwd else None),
    "proc.tty": _on_thread(lambda t: t.tty),
    "proc.pid": _on_thread(lambda t: t.pid),
    "proc.ppid": _on_thread(lambda t: t.ppid),
    "proc.apid": _ancestor(lambda t: t.pid),
    "proc.vpid": _on_thread(lambda t: t.vpid or t.pid),
    "proc.pvpid": _on_parent(lambda t: t.vpid or t.pid),
    "proc.sid": _on_thread(lambda t: t.sid),
    "proc.sname": _of_leader(_session_leader, lambda t: t.comm),
    "proc.sid.exe": _of_leader(_session_leader, lambda t: t.exe),
    "proc.sid.exepath": _of_leader(_session_leader, lambda t: t.exepath),
    "proc.vpgid": _on_thread(lambda t: t.pgid),
    "proc.pgid": _on_thread(lambda t: t.pgid),
    "proc.vpgid.name": _of_leader(_group_leader, lambda t: t.comm),
    "proc.vpgid.exe": _of_leader(_group_leader, lambda t: t.exe),
    "proc.vpgid.exepath": _of_leader(_group_leader, lambda t: t.exepath),
    "proc.pgid.name": _of_leader(_group_leader, lambda t: t.comm),
    "proc.pgid.exe": _of_leader(_group_leader, lambda t: t.exe),
    "proc.pgid.exepath": _of_leader(_group_leader, lambda t: t.exepath),
    "proc.is_sid_leader": _on_thread(lambda t: t.sid == t.pid),
    "proc.is_vpgid_leader": _on_thread(lambda t: t.pgid == t.pid),
    "proc.is_pgid_leader": _on_thread(lambda t: t.pgid == t.pid),
    "proc.duration": simple(_duration),
    "proc.ppid.duration": simple(_ppid_duration),
    "proc.pid.ts": _on_thread(lambda t: _nonzero(t.start_ns)),
    "proc.ppid.ts": _on_parent(lambda t: _nonzero(t.start_ns)),
    "proc.is_exe_writable": _on_thread(lambda t: t.exe_writable),
    "proc.is_exe_upper_layer": _on_thread(lambda t: t.exe_upper_layer),
    "proc.is_exe_lower_layer": _on_thread(lambda t: t.exe_lower_layer),
    "proc.is_exe_from_memfd": _on_thread(lambda t: t.exe_from_memfd),
    "proc.exe_ino": _on_thread(lambda t: _nonzero(t.exe_ino)),
    "proc.exe_ino.ctime": _on_thread(lambda t: _nonzero(t.exe_ctime_ns)),
    "proc.exe_ino.mtime": _on_thread(lambda t: _nonzero(t.exe_mtime_ns)),
    "proc.exe_ino.ctime_duration_proc_start": simple(_ctime_to_start),
    "proc.nthreads": simple(lambda ev: len(ev.lookups.threads.threads_of(ev.thread.pid))),
    "proc.nchilds": simple(lambda ev: len(ev.lookups.threads.child_pids(ev.thread.pid))),
    "proc.fdopencount": _on_thread(lambda t: len(t.fds)),
    "proc.stdin.type": _std_fd(0, "type"),
    "proc.stdout.type": _std_fd(1, "type"),
    "proc.stderr.type": _std_fd(2, "type"),
    "proc.stdin.name": _std_fd(0, "name"),
    "proc.stdout.name": _std_fd(1, "name"),
    "proc.stderr.name": _std_fd(2, "name"),
    "proc.aargs": _ancestor(lambda t: " ".join(t.args)),
    "proc.aenv": _ancestor_env,
    "proc.loginshellid": simple(_login_shell_id),
    "proc.fdlimit": simple(lambda ev: _main_thread(ev).fd_limit),
    "proc.fdusage": simple(_fd_usage),
    "proc.vmsize": _on_thread(lambda t: t.vm_size_kb),
    "proc.vmrss": _on_thread(lambda t: t.vm_rss_kb),
    "proc.vmswap": _on_thread(lambda t: t.vm_swap_kb),
    "proc.pidns_init_start_ts": _on_thread(lambda t: _nonzero(t.pidns_init_start_ns)),
    "proc.exe_ino.ctime_duration_pidns_start": simple(_ctime_after_pidns_start),
    "thread.pfmajor": _on_thread(lambda t: t.page_faults_major),
    "thread.pfminor": _on_thread(lambda t: t.page_faults_minor),
    "thread.vmsize": _main_only(lambda t: t.vm_size_kb),
    "thread.vmrss": _main_only(lambda t: t.vm_rss_kb),
    "thread.vmsize.b": _main_only(lambda t: t.vm_size_kb, 1024),
    "thread.vmrss.b": _main_only(lambda t: t.vm_rss_kb, 1024),
    "thread.nametid": simple(lambda ev: f"{ev.thread.comm}{ev.record.tid}"),
    "thread.cgroups": _on_thread(lambda t: " ".join(t.cgroups) or None),
    "thread.cgroup": _cgroup_of,
    "thread.tid": _on_thread(lambda t: t.tid),
    "thread.ismain": _on_thread(lambda t: t.is_main),
    "thread.vtid": _on_thread(lambda t: t.vpid or t.tid if t.is_main else t.tid),
    "thread.cap_permitted": _on_thread(lambda t: capabilities_text(t.cap_permitted)),
    "thread.cap_inheritable": _on_thread(lambda t: capabilities_text(t.cap_inheritable)),
    "thread.cap_effective": _on_thread(lambda t: capabilities_text(t.cap_effective)),
}
