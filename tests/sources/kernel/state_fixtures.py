"""A fake host and a record-stream builder for the kernel state tests (no root, no /proc)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.event import Event
from sources.kernel.capture import write_capture
from sources.kernel.fields import syscall_source
from sources.kernel.record import SyscallRecord
from sources.kernel.state import Accounts, ContainerMeta, KernelState, ProcessSnapshot, UserEntry
from sources.kernel.state.fds import FdInfo
from sources.kernel.state.sockaddr import AF_INET, AF_INET6, SockAddr, pack_sockaddr
from sources.kernel.state.threads import ThreadInfo

ROOT_USERS = {0: UserEntry(0, "root", "/root", "/bin/bash"), 1000: UserEntry(1000, "alice", "/home/alice", "/bin/sh")}
CONTAINER_ID = "a" * 64


@dataclass
class FakeHost:
    """Answers from dicts; remembers every question it was asked."""

    snapshots: list[ProcessSnapshot] = field(default_factory=list)
    later: dict[int, ProcessSnapshot] = field(default_factory=dict)
    users: dict[str, Accounts] = field(default_factory=dict)
    containers: dict[str, ContainerMeta] = field(default_factory=dict)
    cgroups: dict[int, str] = field(default_factory=dict)
    asked: list[tuple[str, Any]] = field(default_factory=list)

    def processes(self) -> list[ProcessSnapshot]:
        self.asked.append(("processes", None))
        return list(self.snapshots)

    def process(self, tid: int) -> ProcessSnapshot | None:
        self.asked.append(("process", tid))
        return self.later.get(tid)

    def accounts(self, container_id: str, pid: int) -> Accounts:
        self.asked.append(("accounts", container_id))
        return self.users.get(container_id, Accounts())

    def container(self, container_id: str) -> ContainerMeta | None:
        self.asked.append(("container", container_id))
        return self.containers.get(container_id)

    def container_of_cgroup(self, cgroup_id: int) -> str | None:
        self.asked.append(("cgroup", cgroup_id))
        return self.cgroups.get(cgroup_id)


def snapshot(pid: int, ppid: int, comm: str, *, exe: str = "", exepath: str = "", args: tuple[str, ...] = (),
             cwd: str = "/", uid: int = 0, container_id: str = "", start_ns: int = 1, vpid: int = 0,
             **extra: Any) -> ProcessSnapshot:
    return ProcessSnapshot(tid=pid, pid=pid, ppid=ppid, comm=comm, exe=exe or comm,
                           exepath=exepath or f"/usr/bin/{comm}", args=list(args), cwd=cwd, uid=uid, euid=uid,
                           gid=uid, egid=uid, sid=1, pgid=pid, vpid=vpid or pid, start_ns=start_ns,
                           container_id=container_id, **extra)


def inet(ip: str, port: int) -> bytes:
    address = ipaddress.ip_address(ip)
    return pack_sockaddr(SockAddr(AF_INET6 if address.version == 6 else AF_INET, address, port))


class Stream:
    """Builds records for a state and applies them, with a clock that advances 1 ms per record."""

    def __init__(self, host: FakeHost | None = None, *, seed: bool = True, fetch_containers: bool = False,
                 **state_options: Any) -> None:
        self.host = host or default_host()
        self.state = KernelState(self.host, fetch_containers=fetch_containers, **state_options)
        self.ts_ns = 1_000_000_000_000
        self.events: list[Event] = []
        if seed:
            self.state.seed()

    def thread(self, tid: int) -> ThreadInfo:
        """The state's entry for `tid`, which must exist."""
        thread = self.state.ctx.table.get(tid)
        assert thread is not None, f"thread {tid} is not in the table"
        return thread

    def record(self, type_: str, tid: int, *, res: int = 0, record_pid: int | None = None, comm: str | None = None,
               record_uid: int = 0, **args: Any) -> Event:
        """A record of `tid`; its pid and comm default to what the state knows about that thread."""
        self.ts_ns += 1_000_000
        thread = self.state.ctx.table.get(tid)
        name = comm if comm is not None else (thread.comm if thread is not None else "unknown")
        pid = record_pid if record_pid is not None else (thread.pid if thread is not None else tid)
        event = self.state.apply(SyscallRecord(type_, self.ts_ns, tid, pid, record_uid, record_uid, name, res,
                                               dict(args)))
        assert event is not None, f"{type_} records only inform the state: use update() for them"
        self.events.append(event)
        return event

    def update(self, type_: str, tid: int, **args: Any) -> None:
        """A record that only informs the state (no event, as the rules must not see it)."""
        self.ts_ns += 1_000_000
        thread = self.state.ctx.table.get(tid)
        pid = thread.pid if thread is not None else tid
        assert self.state.apply(SyscallRecord(type_, self.ts_ns, tid, pid, 0, 0, "", 0, dict(args))) is None

    def fork(self, parent: int, child: int, *, flags: int = 0x11, child_pid: int | None = None) -> Event:
        return self.record("clone", parent, res=child, child_tid=child, child_pid=child_pid or child, flags=flags)

    def exec(self, tid: int, path: str, *argv: str, comm: str | None = None, res: int = 0) -> Event:
        name = comm if comm is not None else path.rsplit("/", 1)[-1][:15]
        return self.record("execve", tid, res=res, record_pid=tid, comm=name, filename=path, argv=[path, *argv])

    def spawn(self, parent: int, child: int, path: str, *argv: str, comm: str | None = None) -> Event:
        self.fork(parent, child)
        return self.exec(child, path, *argv, comm=comm)

    def exit(self, tid: int, *, group_dead: bool = True) -> Event:
        return self.record("procexit", tid, group_dead=group_dead)

    def open(self, tid: int, path: str, *, flags: int = 0, res: int = 3, dirfd: int = -100) -> Event:
        return self.record("openat", tid, res=res, dirfd=dirfd, name=path, flags=flags, mode=0)


@contextmanager
def recorded_stream(host: FakeHost, path: Path) -> Iterator[Stream]:
    """A seeded Stream over `host` whose state fetches container metadata (settled before it is yielded) and
    records everything into the capture file `path`, as `falco-agent capture` does."""
    with write_capture(path) as writer:
        stream = Stream(host, seed=False, fetch_containers=True, observer=writer)
        try:
            stream.state.seed()
            stream.state.settle_containers(timeout_s=5)
            yield stream
        finally:
            stream.state.close()


def default_host() -> FakeHost:
    """init (1) -> sshd (100) -> bash (200) on the host, plus a container's init (300, under 1)."""
    return FakeHost(
        snapshots=[
            snapshot(1, 0, "systemd", exe="/sbin/init", exepath="/usr/lib/systemd/systemd"),
            snapshot(100, 1, "sshd", args=("-D",), exepath="/usr/sbin/sshd"),
            snapshot(200, 100, "bash", exepath="/usr/bin/bash", cwd="/home/alice", uid=1000, tty=34816,
                     loginuid=1000),
            snapshot(300, 1, "sh", exepath="/bin/sh", container_id=CONTAINER_ID, vpid=1),
        ],
        users={"": Accounts(ROOT_USERS, {0: "root", 1000: "alice"}),
               CONTAINER_ID: Accounts({0: UserEntry(0, "root", "/root", "/bin/sh")}, {0: "root"})},
        containers={CONTAINER_ID: ContainerMeta(CONTAINER_ID, name="web", image="docker.io/library/nginx:1.25",
                                                privileged=True, start_ns=5, runtime="docker",
                                                labels={"io.kubernetes.pod.namespace": "prod",
                                                        "io.kubernetes.pod.name": "web-0"})},
    )


def parent_of(thread: ThreadInfo) -> ThreadInfo:
    """A thread's parent, which must be known."""
    assert thread.parent is not None, f"thread {thread.tid} has no parent"
    return thread.parent


def open_fd(thread: ThreadInfo, num: int) -> FdInfo:
    """A thread's descriptor `num`, which must be open."""
    info = thread.fds.get(num)
    assert info is not None, f"thread {thread.tid} has no fd {num}"
    return info


def extract(event: Event, field: str) -> Any:
    """A field's value for an event, through the syscall source's field table (`name`, `name[arg]`, `evt.arg.x`)."""
    name, _, arg = field.partition("[")
    found = syscall_source().fields.resolve(name, arg.rstrip("]") if arg else None)
    assert found is not None, field
    spec, bound_arg = found
    return spec.bind(bound_arg)(event)
