"""The table of live threads by tid, with the parent/child links the kernel keeps, bounded in size."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from sources.kernel.state.threads import ThreadInfo

#: The pid that inherits orphans when no subreaper is found.
INIT_PID = 1


class ThreadTable:
    """Live threads by tid, their processes by pid and each process's children.

    Children are indexed by the parent's pid so that an exec (a new ThreadInfo for the parent)
    or an exit (reparenting) can repoint them. At most `max_threads` entries are kept: past it the
    oldest exited entries go first, then the oldest of all, and `evicted` counts them.
    """

    def __init__(self, max_threads: int) -> None:
        self.max_threads = max_threads
        self.evicted = 0
        self._threads: OrderedDict[int, ThreadInfo] = OrderedDict()
        #: The thread of a tid, or None: the table's own lookup, called once per record.
        self.get: Callable[[int], ThreadInfo | None] = self._threads.get
        self._tids_by_pid: dict[int, set[int]] = {}
        self._children: dict[int, set[int]] = {}

    def __len__(self) -> int:
        return len(self._threads)

    def main(self, pid: int) -> ThreadInfo | None:
        """The thread standing for process `pid`: its main thread, else any live thread of it."""
        thread = self._threads.get(pid)
        if thread is not None and thread.pid == pid:
            return thread
        # Copies (tuple, sorted) are taken in one step: extractors read while the record thread writes.
        for tid in tuple(self._tids_by_pid.get(pid, ())):
            found = self._threads.get(tid)
            if found is not None:
                return found
        return None

    def threads_of(self, pid: int) -> list[ThreadInfo]:
        found = (self._threads.get(tid) for tid in sorted(self._tids_by_pid.get(pid, ())))
        return [thread for thread in found if thread is not None]

    def child_pids(self, pid: int) -> list[int]:
        """Processes whose parent is process `pid`."""
        return sorted(self._children.get(pid, ()))

    def children_of(self, pid: int) -> list[ThreadInfo]:
        """Threads whose parent is process `pid`."""
        out = []
        for child_pid in self.child_pids(pid):
            out += self.threads_of(child_pid)
        return out

    def all(self) -> list[ThreadInfo]:
        return list(self._threads.values())

    def add(self, thread: ThreadInfo) -> None:
        """Insert `thread`, replacing whatever held its tid (a reused tid or a pre-exec image)."""
        old = self._threads.get(thread.tid)
        if old is not None:
            self._unlink(old)
        self._threads[thread.tid] = thread
        self._threads.move_to_end(thread.tid)
        self._tids_by_pid.setdefault(thread.pid, set()).add(thread.tid)
        if thread.parent is not None:
            self._children.setdefault(thread.parent.pid, set()).add(thread.pid)
        if thread.is_main:
            # Children that pointed at the previous image of this process now point at this one.
            for child in self.children_of(thread.pid):
                child.parent = thread
        self._evict()

    def remove(self, tid: int) -> ThreadInfo | None:
        thread = self._threads.get(tid)
        if thread is not None:
            self._unlink(thread)
        return thread

    def reparent(self, child_pid: int, parent: ThreadInfo | None) -> None:
        """Make `parent` the parent of every thread of process `child_pid`."""
        for thread in self.threads_of(child_pid):
            if thread.parent is not None:
                self._discard_child(thread.parent.pid, child_pid)
            thread.parent = parent
        if parent is not None:
            self._children.setdefault(parent.pid, set()).add(child_pid)

    def reaper_for(self, dead: ThreadInfo) -> ThreadInfo | None:
        """Who adopts the children of a dead process: the nearest ancestor that is a subreaper or
        the init of a pid namespace (vpid 1), else pid 1."""
        for ancestor in dead.ancestors():
            if ancestor.is_subreaper or (ancestor.vpid == 1 and ancestor.pid != INIT_PID):
                return ancestor
        return self.main(INIT_PID)

    def _unlink(self, thread: ThreadInfo) -> None:
        del self._threads[thread.tid]
        tids = self._tids_by_pid.get(thread.pid)
        if tids is not None:
            tids.discard(thread.tid)
            if not tids:
                del self._tids_by_pid[thread.pid]
                if thread.parent is not None:
                    self._discard_child(thread.parent.pid, thread.pid)

    def _discard_child(self, parent_pid: int, child_pid: int) -> None:
        kids = self._children.get(parent_pid)
        if kids is not None:
            kids.discard(child_pid)
            if not kids:
                del self._children[parent_pid]

    def _evict(self) -> None:
        if len(self._threads) <= self.max_threads:
            return
        # Evict a sixteenth at once so that a full table does not pay a scan on every insert.
        target = self.max_threads - max(1, self.max_threads // 16)
        exited = [t for t in self._threads.values() if t.exited]
        victims = iter(exited + list(self._threads.values()))
        while len(self._threads) > target:
            victim = next(victims)
            if victim.tid in self._threads and self._threads[victim.tid] is victim:
                self._unlink(victim)
                self.evicted += 1
