"""What the state learns from outside the record stream, and the one seam it learns it through.

Every fact read from /proc, /etc/passwd or a container runtime reaches the state as one of the
plain, JSON-friendly snapshots below, answered by a `HostView`. Tests feed fake hosts; a capture
records each answer so that a replay needs no /proc and no root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable


@dataclass(slots=True)
class FdSnapshot:
    """One open descriptor of a process as /proc shows it, with its socket endpoints resolved.

    `kind` is Falco's fd type name (`file`, `directory`, `ipv4`, `ipv6`, `unix`, `pipe`, `memfd`,
    `event`, `inotify`, `signalfd`, `eventpoll`, `timerfd`, `netlink`, `bpf`, `userfaultfd`,
    `io_uring`, `pidfd`, or `unknown`). For IP sockets `local`/`remote` are (ip, port) texts and
    `l4proto` is `tcp`/`udp`/`raw`; `listening` marks a server socket.
    """

    fd: int
    kind: str
    name: str
    flags: int = 0
    ino: int = 0
    l4proto: str = ""
    local: tuple[str, int] | None = None
    remote: tuple[str, int] | None = None
    listening: bool = False


@dataclass(slots=True, kw_only=True)
class ProcessImage:
    """What a process runs and as whom: the facts /proc reports and the state keeps per thread (keyword-only,
    so that each subclass keeps its own positional fields first)."""

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
    #: Resource figures as of the read (libsinsp also keeps the values of the last exec or clone): the soft
    #: RLIMIT_NOFILE (-1 unknown), memory in KiB from `status`, this thread's page faults from its `stat`.
    fd_limit: int = -1
    vm_size_kb: int = 0
    vm_rss_kb: int = 0
    vm_swap_kb: int = 0
    page_faults_major: int = 0
    page_faults_minor: int = 0
    #: `subsystem=path` per cgroup controller, as libscap reads /proc/<pid>/cgroup.
    cgroups: list[str] = field(default_factory=list)
    #: Start time (ns since the epoch) of the init process of the thread's pid namespace; 0 unknown.
    pidns_init_start_ns: int = 0


@dataclass(slots=True)
class ProcessSnapshot(ProcessImage):
    """A process (or one of its threads) as /proc describes it at one moment."""

    tid: int
    pid: int
    ppid: int
    comm: str
    cwd: str = ""
    fds: list[FdSnapshot] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class UserEntry:
    uid: int
    name: str
    home: str = ""
    shell: str = ""


@dataclass(frozen=True, slots=True)
class Accounts:
    """The users and groups one filesystem root knows (the host's or a container's)."""

    users: dict[int, UserEntry] = field(default_factory=dict)
    groups: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ContainerMount:
    """One mount of a container as its runtime reports it: host `source`, container `dest`, Docker's `mode`
    text (empty for CRI runtimes), whether it is read-write, and its propagation (`rprivate`, `rslave`, ...)."""

    source: str
    dest: str
    mode: str
    rdwr: bool
    propagation: str

    def as_text(self) -> str:
        """`source:dest:mode:rdwr:propagation`, the form Falco's container plugin prints."""
        return f"{self.source}:{self.dest}:{self.mode}:{'true' if self.rdwr else 'false'}:{self.propagation}"


class ProbeKind(StrEnum):
    """Why a runtime runs a command in a container: Docker's HEALTHCHECK, or a Kubernetes exec probe."""

    HEALTHCHECK = "healthcheck"
    LIVENESS = "liveness_probe"
    READINESS = "readiness_probe"


@dataclass(frozen=True, slots=True)
class HealthProbe:
    """A command the runtime runs in the container to probe it: `exe` is its argv[0], `args` the rest."""

    kind: ProbeKind
    exe: str
    args: tuple[str, ...] = ()

    def as_text(self) -> str:
        """The command as the container plugin prints it: argv joined by spaces."""
        return " ".join((self.exe, *self.args))


@dataclass(frozen=True, slots=True)
class ContainerMeta:
    """What a container runtime says about one container; `id` is the full id. `mounts` is None when the
    runtime did not answer (the container is unknown), a tuple, maybe empty, when it did.

    `runtime` is None until a runtime described the container (`described`); the fields after `mounts`
    hold the runtime's answer or the container plugin's empty value (`""`, False, no probes) when it has
    none. `ip` is the IPv4 address of the container (its pod's, for CRI), `cni_json` the pod's CNI result,
    `pod_sandbox_id` the full id of the pod sandbox, `host_*` whether it shares the host's namespaces.
    """

    id: str
    name: str | None = None
    image: str | None = None
    image_id: str | None = None
    privileged: bool | None = None
    start_ns: int | None = None
    runtime: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    mounts: tuple[ContainerMount, ...] | None = None
    ip: str = ""
    cni_json: str = ""
    pod_sandbox_id: str = ""
    host_pid: bool = False
    host_network: bool = False
    host_ipc: bool = False
    probes: tuple[HealthProbe, ...] = ()

    @property
    def described(self) -> bool:
        return self.runtime is not None

    def probe(self, kind: ProbeKind) -> HealthProbe | None:
        return next((p for p in self.probes if p.kind is kind), None)

    def probe_run_as(self, exe: str, args: tuple[str, ...]) -> ProbeKind | None:
        """The kind of the probe whose command is exactly `exe args`, if any."""
        return next((p.kind for p in self.probes if p.exe == exe and p.args == args), None)


class HostView(Protocol):
    """Every outside fact the kernel state uses. Implementations never raise for a missing
    process or an unknown runtime: they answer None or an empty value."""

    def processes(self) -> list[ProcessSnapshot]:
        """Every thread of every process now running, each with its fds (seeding)."""
        ...

    def process(self, tid: int) -> ProcessSnapshot | None:
        """One thread now (after an exec, or for a thread the state never saw); None when gone."""
        ...

    def accounts(self, container_id: str, pid: int) -> Accounts:
        """Users and groups of the host (container_id "") or of a container, seen through `pid`'s root."""
        ...

    def container(self, container_id: str) -> ContainerMeta | None:
        """Runtime metadata of a container by full id; may block, so callers keep it off the event path."""
        ...

    def container_of_cgroup(self, cgroup_id: int) -> str | None:
        """The full container id of a cgroup v2 id ("" for the host), or None when unknown."""
        ...


@runtime_checkable
class FdPaths(Protocol):
    """A host that can name a descriptor of a running process now: the live machine (a replay cannot).

    What it answers is as of the question, not of the record being applied: the state asks only for what it
    has no other way to know (a directory fd whose open it never saw).
    """

    def fd_path(self, pid: int, fd: int) -> str | None:
        """The path /proc/<pid>/fd/<fd> links to; None when gone or not a path (a socket, a pipe)."""
        ...
