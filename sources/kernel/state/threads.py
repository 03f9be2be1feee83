"""A thread as the state knows it: identity, process image, credentials, session and its parent link."""

from __future__ import annotations

from dataclasses import dataclass

from sources.kernel.state.fds import FdTable
from sources.kernel.state.host import ProcessImage


@dataclass(slots=True)
class FsInfo:
    """What CLONE_FS shares between threads: the working directory."""

    cwd: str


@dataclass(slots=True, eq=False)
class ThreadInfo(ProcessImage):
    """One thread. Threads of a process share `fds` and `fs`; a forked process gets copies.

    `parent` is the main thread of the parent process (None for the root of the tree or when
    unknown). An exec builds a new ThreadInfo, so an event emitted before it keeps the old image.
    `exe` is argv[0] as Falco's proc.exe; `exepath` the resolved executable path; `comm` the
    kernel's 15-character task name (proc.name). `container_id` is the full id, "" on the host.
    """

    tid: int
    pid: int
    comm: str
    fds: FdTable
    fs: FsInfo
    parent: ThreadInfo | None = None
    ptid: int = 0
    exited: bool = False

    @property
    def ppid(self) -> int:
        return self.parent.pid if self.parent is not None else 0

    @property
    def is_main(self) -> bool:
        return self.tid == self.pid

    @property
    def cwd(self) -> str:
        return self.fs.cwd

    def ancestors(self, limit: int = 64) -> list[ThreadInfo]:
        """Parent, grandparent, ... up to `limit` generations; stops on a loop."""
        out: list[ThreadInfo] = []
        seen = {id(self)}
        node = self.parent
        while node is not None and len(out) < limit and id(node) not in seen:
            out.append(node)
            seen.add(id(node))
            node = node.parent
        return out
