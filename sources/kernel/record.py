"""One decoded syscall as the kernel probe delivers it, before any user-space state is applied.

The BPF programs join the enter and exit halves of a syscall in the kernel, so a record carries
both its arguments and its result, like the exit events of modern Falco. A record holds only what
the tracepoint arguments and BPF helpers give (thread ids, credentials, comm, time, arguments);
everything else (parents, exe, cwd, fds, containers) comes from the user-space state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class SyscallRecord:
    """A syscall, a scheduler event (clone, procexit) or an exec, decoded.

    `type` is Falco's event type name (`openat`, `execve`, `clone`, `procexit`, ...). `args` maps
    Falco's parameter names for that event to raw values: ints for numbers, flags and fds; `str`
    for paths and names (as the process passed them, unresolved); `bytes` for socket addresses
    (a raw `struct sockaddr`); `list[str]` for argv. The meaning of each parameter is in
    `sources.kernel.syscalls.SYSCALLS[type].params`. `res` is the raw return value: a negative
    errno on failure, the new fd, tid or 0 on success. `cgroup_id` is the thread's cgroup v2 id
    (the inode of its cgroup directory; 0 when unknown), which names its container. `cpu` is the CPU the
    record was written on (the syscall's exit), as Falco's `evt.cpu`.
    """

    type: str
    ts_ns: int
    tid: int
    pid: int
    uid: int
    gid: int
    comm: str
    res: int
    args: dict[str, Any] = field(default_factory=dict)
    cgroup_id: int = 0
    cpu: int = 0
