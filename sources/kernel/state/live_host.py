"""The HostView of the machine the agent runs on: /proc, the /etc account files, the container runtimes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from sources.kernel.state.accounts import parse_group, parse_passwd
from sources.kernel.state.cgroup_index import CgroupIndex, cgroup2_mount
from sources.kernel.state.context import StateLimits
from sources.kernel.state.host import Accounts, ContainerMeta, ProcessSnapshot
from sources.kernel.state.kernel_state import KernelState, StateObserver
from sources.kernel.state.procfs import ProcReader, read_text
from sources.kernel.state.runtime_api import RuntimeClient


class LiveHostView:
    """Reads the live system; `proc` and `root` may point elsewhere (a test tree, a host mount)."""

    def __init__(self, *, proc: str = "/proc", root: str = "/", runtime: RuntimeClient | None = None) -> None:
        self._reader = ProcReader(Path(proc))
        self._proc = Path(proc)
        self._root = Path(root)
        self._runtime = runtime if runtime is not None else RuntimeClient()
        self._cgroups = CgroupIndex(cgroup2_mount(self._proc / "self" / "mounts"))

    def processes(self) -> list[ProcessSnapshot]:
        self._reader.forget_sockets()
        out = []
        for name in sorted(os.listdir(self._proc), key=lambda n: (len(n), n)):
            if not name.isdigit():
                continue
            main = self._reader.snapshot(int(name), with_fds=True)
            if main is None:
                continue
            out.append(main)
            for tid in main.threads:
                if tid != main.pid:
                    thread = self._reader.snapshot(tid, with_fds=False)
                    if thread is not None:
                        out.append(thread)
        self._reader.forget_sockets()
        return out

    def process(self, tid: int) -> ProcessSnapshot | None:
        try:
            return self._reader.snapshot(tid, with_fds=True)
        finally:
            self._reader.forget_sockets()

    def accounts(self, container_id: str, pid: int) -> Accounts:
        root = self._proc / str(pid) / "root" if container_id else self._root
        etc = root / "etc"
        return Accounts(parse_passwd(read_text(etc / "passwd") or ""), parse_group(read_text(etc / "group") or ""))

    def container(self, container_id: str) -> ContainerMeta | None:
        return self._runtime.container(container_id)

    def container_of_cgroup(self, cgroup_id: int) -> str | None:
        return self._cgroups.container_of(cgroup_id)

    def fd_path(self, pid: int, fd: int) -> str | None:
        try:
            target = os.readlink(self._proc / str(pid) / "fd" / str(fd))
        except OSError:
            return None
        return target if target.startswith("/") else None


def live_state(*, hostname: str = "", observer: StateObserver | None = None, limits: StateLimits | None = None,
               runtime_sockets: Sequence[str] | None = None) -> KernelState:
    """A KernelState of this machine, seeded from /proc (what the live source builds at each start).

    Pass a capture writer as `observer` to record the run; call `close()` on the state when done.
    `runtime_sockets` are the container runtime sockets to ask (None: the usual paths).
    """
    runtime = RuntimeClient.for_sockets(runtime_sockets) if runtime_sockets is not None else None
    state = KernelState(LiveHostView(runtime=runtime), hostname=hostname, observer=observer, limits=limits)
    state.seed()
    return state
