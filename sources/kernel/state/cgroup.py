"""Which container a process runs in, from the text of /proc/<pid>/cgroup (cgroup v1 and v2)."""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Falco's container.id is the first 12 characters of the full id.
SHORT_ID_LEN = 12

# The last path component is a 64-hex id, bare (`/docker/<id>`, `/kubepods/.../<id>`) or wrapped
# by the runtime's systemd scope (`docker-<id>.scope`, `cri-containerd-<id>.scope`,
# `crio-<id>.scope`, `libpod-<id>.scope`; podman on cgroup v2 nests a `/container` leaf below it).
# `*-conmon-<id>` scopes hold the monitor, not the container.
_ID_RE = re.compile(
    r"/(?:(?P<prefix>docker|cri-containerd|crio|libpod|containerd)-)?(?P<id>[0-9a-f]{64})(?:\.scope)?"
    r"(?:/container)?/?$"
)
_RUNTIMES = {"docker": "docker", "cri-containerd": "containerd", "containerd": "containerd",
             "crio": "cri-o", "libpod": "podman"}


@dataclass(frozen=True, slots=True)
class CgroupContainer:
    """A container found in a cgroup file: the full id and, when the path names it, the runtime."""

    id: str
    runtime: str | None


def container_from_cgroup(text: str) -> CgroupContainer | None:
    """The container of the first cgroup line that names one; None for a host process."""
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        match = _ID_RE.search(path)
        if match is None:
            continue
        prefix = match.group("prefix")
        runtime = _RUNTIMES.get(prefix) if prefix else _runtime_from_path(path)
        return CgroupContainer(match.group("id"), runtime)
    return None


def _runtime_from_path(path: str) -> str | None:
    if path.startswith("/docker/") or "/docker/" in path:
        return "docker"
    if "/libpod_parent/" in path:
        return "podman"
    return None


def short_id(container_id: str) -> str:
    """container.id as Falco prints it: `host` for the host, else the first 12 characters."""
    return container_id[:SHORT_ID_LEN] if container_id else "host"


#: The controllers libscap lists for the cgroup v2 unified hierarchy (the ones its container engines use).
_UNIFIED_CONTROLLERS = ("cpu", "memory", "cpuset")


def controller_paths(text: str) -> list[str]:
    """`controller=path` for each controller of /proc/<pid>/cgroup, in file order, as libscap reads it.

    A v1 line names its controllers (`4:cpu,cpuacct:/x` gives `cpu=/x` and `cpuacct=/x`; `name=systemd` is kept
    whole). The v2 line (`0::/x`) counts only when no v1 controller is mounted; it then stands for the unified
    controllers libscap assumes.
    """
    lines = [line.split(":", 2) for line in text.splitlines()]
    lines = [parts for parts in lines if len(parts) == 3]
    unified = not any(controllers for _, controllers, _ in lines)
    out: list[str] = []
    for hierarchy, controllers, path in lines:
        if controllers:
            out.extend(f"{name}={path}" for name in controllers.split(","))
        elif unified and hierarchy == "0":
            out.extend(f"{name}={path}" for name in _UNIFIED_CONTROLLERS)
    return out
