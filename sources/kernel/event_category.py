"""libsinsp's class of each event type the probe delivers: its category, and for I/O events what the fd is.

`evt.category`, `evt.is_io*`, `evt.io_dir`, `evt.buflen*` and `evt.count.error.*` read these. The categories
and the read/write flags are those of libscap's event table for the exit events (the ones the agent's records
stand for); an I/O event's category is then narrowed by the type of its descriptor, as libsinsp does.
"""

from __future__ import annotations

from enum import Enum

from sources.kernel.state.fds import FdInfo, FdType
from sources.kernel.syscalls import CLONE_TYPES


class Category(Enum):
    """libscap's ppm_event_category of an event type; the value is the `evt.category` text."""

    OTHER = "other"
    FILE = "file"
    NET = "net"
    IPC = "IPC"
    MEMORY = "memory"
    PROCESS = "process"
    USER = "user"
    IO_READ = "io_read"
    IO_WRITE = "io_write"
    IO_OTHER = "io_other"

    @property
    def is_io(self) -> bool:
        """libscap's EC_IO_BASE: the category is refined by the descriptor's type."""
        return self in _IO


_IO = frozenset({Category.IO_READ, Category.IO_WRITE, Category.IO_OTHER})

_BY_CATEGORY: dict[Category, tuple[str, ...]] = {
    Category.FILE: ("open", "openat", "openat2", "creat", "unlink", "unlinkat", "rename", "renameat", "renameat2",
                    "link", "linkat", "symlink", "symlinkat", "mkdir", "mkdirat", "rmdir", "chmod", "fchmod",
                    "fchmodat", "chown", "lchown", "fchown", "fchownat", "chdir", "fchdir", "mount"),
    Category.IO_READ: ("read", "pread", "recvfrom"),
    Category.IO_WRITE: ("write", "pwrite", "sendto", "sendmsg"),
    Category.IO_OTHER: ("close", "dup", "dup2", "dup3"),
    Category.IPC: ("pipe", "pipe2", "socketpair"),
    Category.NET: ("socket", "connect", "bind", "listen", "accept", "accept4"),
    Category.MEMORY: ("memfd_create",),
    Category.OTHER: ("init_module", "finit_module"),
    Category.PROCESS: ("execve", "execveat", "ptrace", "setsid", "setpgid", "capset", *CLONE_TYPES, "procexit"),
    Category.USER: ("setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid"),
}

#: Category of every event type the rules can see.
CATEGORY_OF: dict[str, Category] = {name: cat for cat, names in _BY_CATEGORY.items() for name in names}
#: libscap's EF_READS_FROM_FD / EF_WRITES_TO_FD: for the captured syscalls, exactly the I/O read and write classes.
READS_FROM_FD = frozenset(_BY_CATEGORY[Category.IO_READ])
WRITES_TO_FD = frozenset(_BY_CATEGORY[Category.IO_WRITE])

_FILE_TYPES = frozenset({FdType.FILE, FdType.DIRECTORY})
_IPC_TYPES = frozenset({FdType.PIPE, FdType.UNIX, FdType.EVENT, FdType.SIGNALFD, FdType.INOTIFY})


def io_class(fd: FdInfo | None) -> str:
    """What libsinsp calls an I/O event by its descriptor: file, net, ipc (lower case here), else unknown."""
    if fd is None:
        return "unknown"
    if fd.type in _FILE_TYPES:
        return "file"
    if fd.type.is_ip:
        return "net"
    return "ipc" if fd.type in _IPC_TYPES else "unknown"


def category_text(event_type: str, fd: FdInfo | None) -> str:
    """`evt.category`: the class name, an I/O event's by its descriptor; `unknown` for an unlisted type."""
    category = CATEGORY_OF.get(event_type)
    if category is None:
        return "unknown"
    return io_class(fd) if category.is_io else category.value
