"""The kernel source's user-space state: seed it from the host, apply records, get events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from agent.event import Event
from sources.kernel.record import SyscallRecord
from sources.kernel.state import fd_events, process_events
from sources.kernel.state.context import StateContext, StateLimits
from sources.kernel.state.host import Accounts, ContainerMeta, HostView, ProcessSnapshot
from sources.kernel.state.payload import SyscallEvent
from sources.kernel.state.threads import ThreadInfo
from sources.kernel.syscalls import CLONE_TYPES, STATE_ONLY_TYPES
from sources.kernel.watched_files import WatchedFiles

SOURCE = "syscall"

Handler = Callable[[StateContext, SyscallRecord, ThreadInfo], SyscallEvent]

_HANDLERS: dict[str, Handler] = {
    **dict.fromkeys(CLONE_TYPES, process_events.on_clone),
    "execve": process_events.on_exec, "execveat": process_events.on_exec,
    "procexit": process_events.on_procexit, "chdir": process_events.on_chdir, "fchdir": process_events.on_fchdir,
    **dict.fromkeys(("setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid"), process_events.on_setuid),
    "setsid": process_events.on_setsid, "setpgid": process_events.on_setpgid, "capset": process_events.on_capset,
    **dict.fromkeys(("open", "openat", "openat2", "creat"), fd_events.on_open),
    "close": fd_events.on_close, **dict.fromkeys(("dup", "dup2", "dup3"), fd_events.on_dup),
    "pipe": fd_events.on_pipe, "pipe2": fd_events.on_pipe, "socketpair": fd_events.on_socketpair,
    "socket": fd_events.on_socket, "connect": fd_events.on_connect, "tcp_local": fd_events.on_tcp_local,
    "bind": fd_events.on_bind,
    "accept": fd_events.on_accept, "accept4": fd_events.on_accept, "memfd_create": fd_events.on_memfd_create,
    "sendto": fd_events.on_sendto,
}


class StateObserver(Protocol):
    """Told, in record-stream order, everything the state learned from outside (a capture writer)."""

    def on_answer(self, method: str, query: dict[str, Any], answer: Any) -> None: ...

    def on_container(self, meta: ContainerMeta) -> None: ...

    def on_seeded(self) -> None: ...

    def on_record(self, record: SyscallRecord) -> None: ...


class ObservedHost:
    """A HostView that reports each answer to an observer after passing it on."""

    def __init__(self, host: HostView, observer: StateObserver) -> None:
        self._host = host
        self._observer = observer

    def processes(self) -> list[ProcessSnapshot]:
        answer = self._host.processes()
        self._observer.on_answer("processes", {}, answer)
        return answer

    def process(self, tid: int) -> ProcessSnapshot | None:
        answer = self._host.process(tid)
        self._observer.on_answer("process", {"tid": tid}, answer)
        return answer

    def accounts(self, container_id: str, pid: int) -> Accounts:
        answer = self._host.accounts(container_id, pid)
        self._observer.on_answer("accounts", {"container_id": container_id, "pid": pid}, answer)
        return answer

    def container(self, container_id: str) -> ContainerMeta | None:
        # Reported when integrated into the state (on_container), not when the background fetch returns.
        return self._host.container(container_id)

    def container_of_cgroup(self, cgroup_id: int) -> str | None:
        answer = self._host.container_of_cgroup(cgroup_id)
        self._observer.on_answer("cgroup", {"cgroup_id": cgroup_id}, answer)
        return answer


class KernelState:
    """Threads, fds, users and containers of the host, kept up to date by the record stream.

    Call `seed()` once before the first record, then `apply()` for each record in order, from one
    thread. Field extraction (on other threads) only reads. With `fetch_containers` false the state
    never asks a runtime and learns container metadata only through `learn_container()` (replay).
    """

    def __init__(self, host: HostView, *, limits: StateLimits | None = None, observer: StateObserver | None = None,
                 fetch_containers: bool = True, hostname: str = "") -> None:
        self._observer = observer
        seen_host: HostView = ObservedHost(host, observer) if observer is not None else host
        self.ctx = StateContext(seen_host, limits=limits or StateLimits(), fetch_containers=fetch_containers)
        self.hostname = hostname
        self._num = 0
        self._fetched = self.ctx.containers.fetched
        #: The event types that become events (None: every type); a record of another type only updates the state,
        #: so a close no rule reads costs no event.
        self.forwarded: frozenset[str] | None = None

    @property
    def watched_files(self) -> WatchedFiles:
        """The files the rules name: opens of them are named so (the source sets them)."""
        return self.ctx.watched_files

    @watched_files.setter
    def watched_files(self, found: WatchedFiles) -> None:
        self.ctx.watched_files = found

    @property
    def opens_named_by_inode(self) -> int:
        """Opens of a watched file through another path (a link), named as the rules name the file."""
        return self.ctx.counters[fd_events.NAMED_BY_INODE]

    @property
    def counters(self) -> dict[str, int]:
        """What had to be guessed or dropped: threads read late or made up, fds and threads evicted."""
        table = self.ctx.table
        fd_drops = sum(t.fds.dropped for t in table.all() if t.is_main)
        return {**self.ctx.counters, "threads": len(table), "threads_evicted": table.evicted, "fds_dropped": fd_drops}

    def seed(self) -> None:
        """Load every running process, its threads and fds from the host."""
        ctx = self.ctx
        snaps = ctx.host.processes()
        mains = {s.pid: ctx.adopt(s) for s in snaps if s.tid == s.pid}
        for thread in mains.values():
            ctx.table.add(thread)
        for snap in snaps:
            main = mains.get(snap.pid)
            if snap.tid == snap.pid or main is None:
                continue
            thread = ctx.adopt(snap)
            thread.fds, thread.fs = main.fds, main.fs
            ctx.table.add(thread)
        # Parents are linked once every process is in the table, whatever the listing order.
        for snap in snaps:
            if snap.tid == snap.pid and snap.ppid in mains and snap.ppid != snap.pid:
                ctx.table.reparent(snap.pid, mains[snap.ppid])
        for thread in mains.values():
            ctx.track_identity(thread)
        if self._observer is not None:
            self._observer.on_seeded()

    def apply_close(self, tid: int, pid: int, res: int, fd: int) -> bool:
        """A close of a known thread that no rule reads, applied without its record (the caller decoded only
        these fields); False when it takes the whole record: a thread to learn, a capture, a rule on close."""
        ctx = self.ctx
        thread = ctx.table.get(tid)
        forwarded = self.forwarded
        if (thread is None or thread.pid != pid or self._observer is not None or forwarded is None
                or "close" in forwarded):
            return False
        fd_events.close_fd(thread, fd, res)
        if self._fetched:
            self._integrate_containers()
        self._num += 1
        return True

    def apply(self, record: SyscallRecord) -> Event | None:
        """Update the state with one record and return its event (procexit included); None for a record that
        only informs the state (`tcp_local`), which no rule may see, live or replayed, and for one of a type not
        `forwarded`."""
        ctx = self.ctx
        thread = ctx.table.get(record.tid)
        if thread is None or thread.pid != record.pid:
            thread = ctx.new_thread_for(record)
        kind = record.type
        handler = _HANDLERS.get(kind) or (fd_events.uses_fd if "fd" in record.args else None)
        payload = None
        if handler is not None:
            try:
                payload = handler(ctx, record, thread)
            except (TypeError, ValueError, KeyError, IndexError):
                # A record with arguments of the wrong shape still becomes an event; the state skips it.
                ctx.counters["records_malformed"] += 1
        if payload is None:
            payload = SyscallEvent(record, thread, ctx.lookups)
        # Container metadata fetched since the last record (or waited for by this one) is known before this
        # event is evaluated: one check per record, here rather than also before the handler.
        if self._fetched:
            self._integrate_containers()
        if self._observer is not None:
            self._observer.on_record(record)
        if kind in STATE_ONLY_TYPES:
            return None
        self._num += 1  # evt.num counts every event captured, forwarded or not
        forwarded = self.forwarded
        if forwarded is not None and kind not in forwarded:
            return None
        # Its cache given, not made by the field's factory: a call less per event.
        return Event(SOURCE, record.ts_ns, payload, kind, self.hostname, self._num, {})

    def learn_container(self, meta: ContainerMeta) -> None:
        """Container metadata from elsewhere (a replayed capture)."""
        self.ctx.containers.learn(meta)

    def settle_containers(self, timeout_s: float) -> None:
        """Wait for metadata fetches in flight and integrate them (shutdown, tests)."""
        for meta in self.ctx.containers.settle(timeout_s):
            self._report_container(meta)

    def close(self) -> None:
        self.ctx.containers.close()

    def _integrate_containers(self) -> None:
        for meta in self.ctx.containers.drain():
            self._report_container(meta)

    def _report_container(self, meta: ContainerMeta) -> None:
        if self._observer is not None:
            self._observer.on_container(meta)
