"""Ask a container runtime about one container: the Docker-compatible API (Docker, Podman) over its
unix socket, else `crictl inspect` for CRI runtimes (containerd, CRI-O). Never raises; None when unknown."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sources.kernel.state.host import ContainerMeta, ContainerMount

DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/podman/podman.sock")
CRI_SOCKETS = ("/run/containerd/containerd.sock", "/var/run/crio/crio.sock", "/run/k3s/containerd/containerd.sock")

#: CRI's MountPropagation enum (by name, or by number in older crictl output) in the words Falco's container
#: plugin prints; anything else is "unknown", as there.
_CRI_PROPAGATION = {
    "PROPAGATION_PRIVATE": "private", 0: "private",
    "PROPAGATION_HOST_TO_CONTAINER": "rslave", 1: "rslave",
    "PROPAGATION_BIDIRECTIONAL": "rshared", 2: "rshared",
}


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout_s: float) -> None:
        super().__init__("localhost", timeout=timeout_s)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def parse_time_ns(text: str | None) -> int | None:
    """An RFC 3339 time with up to nanoseconds (`2024-01-02T03:04:05.123456789Z`) in ns since the epoch."""
    if not text or text.startswith("0001-"):
        return None
    main, _, rest = text.partition(".")
    digits = "".join(ch for ch in rest if ch.isdigit())
    zone = rest[len(digits):] if rest else main[19:]
    try:
        seconds = datetime.fromisoformat(main[:19] + (zone.replace("Z", "+00:00") or "+00:00")).timestamp()
    except ValueError:
        return None
    return int(seconds) * 1_000_000_000 + int((digits + "000000000")[:9])


def _entries(value: Any) -> list[dict[str, Any]]:
    """The JSON objects of a list the runtime sent (anything else in it is skipped)."""
    return [entry for entry in value if isinstance(entry, dict)] if isinstance(value, list) else []


def docker_mounts(value: Any) -> tuple[ContainerMount, ...]:
    """The `Mounts` of a Docker inspect answer (binds and volumes, as Docker lists them)."""
    return tuple(
        ContainerMount(str(m.get("Source") or ""), str(m.get("Destination") or ""), str(m.get("Mode") or ""),
                       bool(m.get("RW", False)), str(m.get("Propagation") or ""))
        for m in _entries(value)
    )


def cri_mounts(value: Any) -> tuple[ContainerMount, ...]:
    """The `status.mounts` of `crictl inspect`: CRI has no mode text, and names propagation by enum."""
    return tuple(
        ContainerMount(str(m.get("hostPath") or ""), str(m.get("containerPath") or ""), "",
                       not m.get("readonly", False), _cri_propagation(m.get("propagation", 0)))
        for m in _entries(value)
    )


def _cri_propagation(value: Any) -> str:
    return _CRI_PROPAGATION.get(value, "unknown") if isinstance(value, (str, int)) else "unknown"


def meta_from_docker(doc: dict[str, Any], runtime: str) -> ContainerMeta:
    """ContainerMeta from a `/containers/<id>/json` answer."""
    config = doc.get("Config") or {}
    host_config = doc.get("HostConfig") or {}
    state = doc.get("State") or {}
    return ContainerMeta(
        id=doc.get("Id", ""), name=(doc.get("Name") or "").lstrip("/") or None, image=config.get("Image") or None,
        image_id=doc.get("Image") or None, privileged=bool(host_config.get("Privileged", False)),
        start_ns=parse_time_ns(state.get("StartedAt")), runtime=runtime, labels=dict(config.get("Labels") or {}),
        mounts=docker_mounts(doc.get("Mounts")),
    )


def meta_from_crictl(doc: dict[str, Any]) -> ContainerMeta:
    """ContainerMeta from `crictl inspect` output (status plus the runtime's info)."""
    status = doc.get("status") or {}
    info = doc.get("info") or {}
    privileged = (((info.get("config") or {}).get("linux") or {}).get("security_context") or {}).get("privileged")
    labels = dict(status.get("labels") or {})
    created = status.get("startedAt") or status.get("createdAt")
    return ContainerMeta(
        id=status.get("id", ""), name=(status.get("metadata") or {}).get("name"),
        image=(status.get("image") or {}).get("image") or None, image_id=status.get("imageRef") or None,
        privileged=bool(privileged) if privileged is not None else None,
        start_ns=parse_time_ns(created) if isinstance(created, str) else None, runtime="cri", labels=labels,
        mounts=cri_mounts(status.get("mounts")),
    )


class RuntimeClient:
    """Queries the runtimes whose sockets exist, Docker-compatible first; each call bounded by `timeout_s`."""

    def __init__(self, *, timeout_s: float = 2.0, docker_sockets: Sequence[str] = DOCKER_SOCKETS,
                 cri_sockets: Sequence[str] = CRI_SOCKETS) -> None:
        self.timeout_s = timeout_s
        self._docker = tuple(docker_sockets)
        self._cri = tuple(cri_sockets)
        self._crictl = shutil.which("crictl")

    @classmethod
    def for_sockets(cls, paths: Sequence[str], *, timeout_s: float = 2.0) -> RuntimeClient:
        """A client for the configured sockets: Docker's and Podman's speak the Docker API, others CRI."""
        docker_like = [p for p in paths if os.path.basename(p) in ("docker.sock", "podman.sock")]
        return cls(timeout_s=timeout_s, docker_sockets=docker_like,
                   cri_sockets=[p for p in paths if p not in docker_like])

    def container(self, container_id: str) -> ContainerMeta | None:
        for path in self._docker:
            if os.path.exists(path):
                doc = self._docker_inspect(path, container_id)
                if doc is not None:
                    return meta_from_docker(doc, "podman" if "podman" in path else "docker")
        if self._crictl is not None:
            for path in self._cri:
                if os.path.exists(path):
                    doc = self._crictl_inspect(path, container_id)
                    if doc is not None:
                        return meta_from_crictl(doc)
        return None

    def _docker_inspect(self, path: str, container_id: str) -> dict[str, Any] | None:
        conn = _UnixHTTPConnection(path, self.timeout_s)
        try:
            conn.request("GET", f"/containers/{container_id}/json")
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                return None
            doc = json.loads(body)
        except (OSError, http.client.HTTPException, ValueError):
            return None
        finally:
            conn.close()
        return doc if isinstance(doc, dict) else None

    def _crictl_inspect(self, path: str, container_id: str) -> dict[str, Any] | None:
        assert self._crictl is not None
        try:
            done = subprocess.run([self._crictl, "--runtime-endpoint", f"unix://{path}", "inspect", container_id],
                                  capture_output=True, timeout=self.timeout_s, check=False)
            doc = json.loads(done.stdout) if done.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired, ValueError):
            return None
        return doc if isinstance(doc, dict) else None
