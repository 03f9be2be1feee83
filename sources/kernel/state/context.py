"""The pieces of state every record handler works on, and how a record finds its thread."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sources.kernel.record import SyscallRecord
from sources.kernel.state.accounts import AccountBook
from sources.kernel.state.builders import cloned_thread, fd_table_from_snapshot, thread_from_snapshot
from sources.kernel.state.containers import ContainerRegistry
from sources.kernel.state.fds import FdTable
from sources.kernel.state.host import HostView, ProcessSnapshot
from sources.kernel.state.lookups import Lookups
from sources.kernel.state.thread_table import ThreadTable
from sources.kernel.state.threads import FsInfo, ThreadInfo
from sources.kernel.watched_files import WatchedFiles


@dataclass(frozen=True, slots=True)
class StateLimits:
    """Bounds on memory: threads kept, descriptors per process, containers cached."""

    max_threads: int = 131_072
    max_fds_per_process: int = 4096
    max_containers: int = 4096


class StateContext:
    """Table, host, account book and container registry, plus counters of what had to be guessed."""

    def __init__(self, host: HostView, *, limits: StateLimits, fetch_containers: bool) -> None:
        self.host = host
        self.limits = limits
        self.table = ThreadTable(limits.max_threads)
        self.accounts = AccountBook(host)
        self.containers = ContainerRegistry(host, fetch=fetch_containers, max_containers=limits.max_containers)
        self.lookups = Lookups(self.table, self.accounts, self.containers)
        self.counters: Counter[str] = Counter()
        #: The files the rules name (watched_files.py): the source sets them when rules load.
        self.watched_files = WatchedFiles({})

    def new_fd_table(self) -> FdTable:
        return FdTable(self.limits.max_fds_per_process)

    def new_thread_for(self, rec: SyscallRecord) -> ThreadInfo:
        """The thread of a record whose tid the table does not hold for its pid (the caller looked it up): read
        from the host, else pieced from the record, and added."""
        main = self.table.main(rec.pid)
        if main is not None and main.tid != rec.tid:
            # A thread of a known process whose clone we missed: it shares the process's state.
            thread = thread_from_process(main, rec)
            self.counters["threads_from_process"] += 1
        else:
            snap = self.host.process(rec.tid)
            if snap is not None and snap.pid == rec.pid:
                thread = self.adopt(snap)
                self.counters["threads_from_host"] += 1
            else:
                thread = ThreadInfo(rec.tid, rec.pid, rec.comm, self.new_fd_table(), FsInfo(""),
                                    uid=rec.uid, gid=rec.gid, euid=rec.uid, egid=rec.gid, start_ns=rec.ts_ns)
                self.counters["threads_guessed"] += 1
        self.table.add(thread)
        self.track_identity(thread)
        return thread

    def adopt(self, snap: ProcessSnapshot) -> ThreadInfo:
        """A ThreadInfo for a process snapshot, linked to its parent if that is known (not yet added)."""
        thread = thread_from_snapshot(snap, fds=fd_table_from_snapshot(snap, self.limits.max_fds_per_process),
                                      fs=FsInfo(snap.cwd))
        thread.parent = self.table.main(snap.ppid) if snap.ppid != snap.pid else None
        return thread

    def track_identity(self, thread: ThreadInfo) -> None:
        """Make sure the names of the thread's users and its container metadata are (being) known."""
        self.accounts.load(thread.container_id, thread.pid)
        self.containers.request(thread.container_id)


def thread_from_process(main: ThreadInfo, rec: SyscallRecord) -> ThreadInfo:
    thread = cloned_thread(main, tid=rec.tid, pid=rec.pid, start_ns=main.start_ns, fds=main.fds, fs=main.fs)
    thread.parent = main.parent
    return thread
