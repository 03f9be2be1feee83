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
