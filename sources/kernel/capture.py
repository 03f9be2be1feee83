"""Capture files of the kernel source: the records and every answer the state got from the host.

A capture is JSON Lines (orjson), one object per line with a `kind`:

* `header` — first line: `{"kind": "header", "format": "falco-agent-kernel-capture", "version": 1}`;
* `processes` / `process` / `accounts` — a HostView answer, with the query's keys (`tid`;
  `container_id`, `pid`) and the `answer` (dataclass fields as objects, null when none);
* `seeded` — the state finished seeding (the `processes` answer and its `accounts` lines precede it);
* `container` — container metadata the state integrated at this point of the stream;
* `record` — a SyscallRecord's fields; in `args` bytes are `{"$b64": "..."}` and tuples `{"$tuple": [...]}`.

Answers obtained while applying a record are written before that record, so a replay can queue
them before it applies it. Replaying yields the same events and field values with no /proc access.
"""

from __future__ import annotations

import base64
import dataclasses
from collections import defaultdict, deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from agent.errors import DecodeError
from agent.event import Event
from agent.location import Location
from sources.kernel.record import SyscallRecord
from sources.kernel.state.host import (
    Accounts,
    ContainerMeta,
    ContainerMount,
    FdSnapshot,
    HealthProbe,
    ProbeKind,
    ProcessSnapshot,
    UserEntry,
)
from sources.kernel.state.kernel_state import KernelState

FORMAT = "falco-agent-kernel-capture"
VERSION = 1
_OPTS = orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE


def _encode_arg(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$b64": base64.b64encode(value).decode()}
    if isinstance(value, tuple):
        return {"$tuple": [_encode_arg(v) for v in value]}
    if isinstance(value, list):
        return [_encode_arg(v) for v in value]
    return value


def _decode_arg(value: Any) -> Any:
    if isinstance(value, dict):
        if "$b64" in value:
            return base64.b64decode(value["$b64"])
        if "$tuple" in value:
            return tuple(_decode_arg(v) for v in value["$tuple"])
    if isinstance(value, list):
        return [_decode_arg(v) for v in value]
    return value


class CaptureWriter:
    """A StateObserver that writes a capture file; pass it as `KernelState(..., observer=writer)`."""

    def __init__(self, path: str | Path) -> None:
        self._out: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed by close()/__exit__
        self._write({"kind": "header", "format": FORMAT, "version": VERSION})

    def _write(self, obj: dict[str, Any]) -> None:
        self._out.write(orjson.dumps(obj, option=_OPTS))

    def on_answer(self, method: str, query: dict[str, Any], answer: Any) -> None:
        self._write({"kind": method, **query, "answer": answer})

    def on_container(self, meta: ContainerMeta) -> None:
        self._write({"kind": "container", "answer": meta})

    def on_seeded(self) -> None:
        self._write({"kind": "seeded"})

    def on_record(self, record: SyscallRecord) -> None:
        fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
        fields["args"] = {k: _encode_arg(v) for k, v in record.args.items()}
        self._write({"kind": "record", **fields})

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        self._out.close()

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def write_capture(path: str | Path) -> CaptureWriter:
    """Open a capture file for writing (see the module docstring for the format)."""
    return CaptureWriter(path)


def _process(doc: dict[str, Any] | None) -> ProcessSnapshot | None:
    if doc is None:
        return None
    fds = [FdSnapshot(**{**fd, "local": _pair(fd.get("local")), "remote": _pair(fd.get("remote"))})
           for fd in doc.get("fds", [])]
    return ProcessSnapshot(**{**doc, "fds": fds})


def _pair(value: list[Any] | None) -> tuple[str, int] | None:
    return (value[0], value[1]) if value else None


def _container(doc: dict[str, Any]) -> ContainerMeta:
    """ContainerMeta from its JSON form; a capture written before a field existed leaves its default."""
    mounts = doc.get("mounts")
    probes = tuple(HealthProbe(ProbeKind(p["kind"]), p["exe"], tuple(p["args"])) for p in doc.get("probes", ()))
    return ContainerMeta(**{**doc, "mounts": None if mounts is None else tuple(ContainerMount(**m) for m in mounts),
                            "probes": probes})


def _accounts(doc: dict[str, Any]) -> Accounts:
    users = {int(uid): UserEntry(**entry) for uid, entry in doc.get("users", {}).items()}
    return Accounts(users, {int(gid): name for gid, name in doc.get("groups", {}).items()})


class ReplayHost:
    """A HostView answering from a capture's recorded answers, in the order they were recorded."""

    def __init__(self) -> None:
        self._processes: deque[list[ProcessSnapshot]] = deque()
        self._process: defaultdict[int, deque[ProcessSnapshot | None]] = defaultdict(deque)
        self._accounts: dict[str, Accounts] = {}
        self._cgroups: dict[int, str | None] = {}

    def push(self, kind: str, line: dict[str, Any]) -> None:
        answer = line["answer"]
        if kind == "processes":
            self._processes.append([p for p in map(_process, answer) if p is not None])
        elif kind == "process":
            self._process[line["tid"]].append(_process(answer))
        elif kind == "accounts":
            self._accounts[line["container_id"]] = _accounts(answer)
        elif kind == "cgroup":
            self._cgroups[line["cgroup_id"]] = answer

    def processes(self) -> list[ProcessSnapshot]:
        return self._processes.popleft() if self._processes else []

    def process(self, tid: int) -> ProcessSnapshot | None:
        queue = self._process.get(tid)
        return queue.popleft() if queue else None

    def accounts(self, container_id: str, pid: int) -> Accounts:
        return self._accounts.get(container_id, Accounts())

    def container(self, container_id: str) -> ContainerMeta | None:
        return None

    def container_of_cgroup(self, cgroup_id: int) -> str | None:
        return self._cgroups.get(cgroup_id)


def read_capture(path: str | Path) -> Iterator[dict[str, Any]]:
    """The lines of a capture as objects; ValueError names the line when the file is not a capture."""
    with open(path, "rb") as src:
        for number, raw in enumerate(src, start=1):
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON: {exc}") from None
            if number == 1 and (line.get("kind") != "header" or line.get("format") != FORMAT):
                raise ValueError(f"{path}:1: not a {FORMAT} file")
            yield line


def record_from_line(line: dict[str, Any]) -> SyscallRecord:
    fields = {k: v for k, v in line.items() if k != "kind"}
    fields["args"] = {k: _decode_arg(v) for k, v in fields.get("args", {}).items()}
    return SyscallRecord(**fields)


def replay_capture(path: str | Path, *, hostname: str = "") -> Iterator[Event]:
    """Events of a capture, rebuilt through a fresh KernelState that reads nothing from the host."""
    host = ReplayHost()
    state = KernelState(host, fetch_containers=False, hostname=hostname)
    try:
        for line in read_capture(path):
            kind = line.get("kind")
            if kind == "record":
                event = state.apply(record_from_line(line))
                if event is not None:
                    yield event
            elif kind == "seeded":
                state.seed()
            elif kind == "container":
                state.learn_container(_container(line["answer"]))
            elif kind in ("processes", "process", "accounts", "cgroup"):
                host.push(kind, line)
    finally:
        state.close()


class CaptureReplayer:
    """Lets `falco-agent replay` read kernel captures next to audit and CloudTrail files."""

    def __init__(self, *, hostname: str = "") -> None:
        self.hostname = hostname

    def claims(self, path: Path) -> bool:
        try:
            with open(path, "rb") as src:
                first = src.readline(4096)
        except OSError:
            return False
        return FORMAT.encode() in first and b'"header"' in first

    def events(self, path: Path) -> Iterator[Event | DecodeError]:
        try:
            yield from replay_capture(path, hostname=self.hostname)
        except (ValueError, TypeError, KeyError) as exc:
            # A damaged line ends the replay of this capture; the events before it were delivered.
            yield DecodeError(f"kernel capture unreadable: {exc}", Location(str(path)))
