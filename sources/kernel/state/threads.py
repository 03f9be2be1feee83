"""A thread as the state knows it: identity, process image, credentials, session and its parent link."""

from __future__ import annotations

from dataclasses import dataclass, field

from sources.kernel.state.fds import FdTable


@dataclass(slots=True)
class FsInfo:
    """What CLONE_FS shares between threads: the working directory."""

    cwd: str


@dataclass(slots=True, eq=False)
class ThreadInfo:
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
    exe: str = ""
    exepath: str = ""
    args: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    uid: int = 0
    gid: int = 0
    euid: int = 0
    egid: int = 0
    suid: int = 0
    sgid: int = 0
    loginuid: int = -1
    tty: int = 0
    sid: int = 0
    pgid: int = 0
    vpid: int = 0
    start_ns: int = 0
    cap_permitted: int = 0
    cap_effective: int = 0
    cap_inheritable: int = 0
    exe_ino: int = 0
    exe_ctime_ns: int = 0
    exe_mtime_ns: int = 0
    exe_writable: bool = False
    exe_upper_layer: bool = False
    exe_lower_layer: bool = False
    exe_from_memfd: bool = False
    container_id: str = ""
    is_subreaper: bool = False
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
