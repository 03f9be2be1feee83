"""The payload of a `syscall` event: the record plus the state it was applied to."""

from __future__ import annotations

from dataclasses import dataclass

from sources.kernel.record import SyscallRecord
from sources.kernel.state.fds import FdInfo
from sources.kernel.state.lookups import Lookups
from sources.kernel.state.threads import ThreadInfo


@dataclass(slots=True)
class SyscallEvent:
    """What field extractors read: the record, the thread that made the call (after an exec, the
    new image), and for events about a descriptor the FdInfo it refers to.

    `has_fd` marks events Falco treats as fd events (they create, use or close one); only those
    have `fd.*` fields. `fd_num` is `fd.num` (-1 when a call that creates an fd failed). When such
    a call failed, `fd` is None and `path`/`path_raw` still give the name it was asked for.
    `name_changed` is true when this event gave the fd a new name (connect, sendto).
    """

    record: SyscallRecord
    thread: ThreadInfo
    lookups: Lookups
    fd: FdInfo | None = None
    has_fd: bool = False
    fd_num: int | None = None
    path: str | None = None
    path_raw: str | None = None
    name_changed: bool = False
