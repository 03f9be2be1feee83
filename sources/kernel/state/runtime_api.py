"""Ask a container runtime about one container: the Docker-compatible API (Docker, Podman) over its
unix socket, else `crictl inspect` for CRI runtimes (containerd, CRI-O), with `crictl inspectp` for the pod
sandbox (its IP, CNI result, host namespaces and probe spec). Never raises; None when unknown."""

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

from sources.kernel.state.cni_result import cni_result
from sources.kernel.state.host import ContainerMeta, ContainerMount
from sources.kernel.state.json_shapes import json_object, json_objects, json_path
from sources.kernel.state.runtime_probes import LAST_APPLIED_ANNOTATION, docker_probes, pod_spec_probes

DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/podman/podman.sock")
CRI_SOCKETS = ("/run/containerd/containerd.sock", "/var/run/crio/crio.sock", "/run/k3s/containerd/containerd.sock")

#: CRI's MountPropagation enum (by name, or by number in older crictl output) in the words Falco's container
#: plugin prints; anything else is "unknown", as there.
_CRI_PROPAGATION = {
    "PROPAGATION_PRIVATE": "private", 0: "private",
    "PROPAGATION_HOST_TO_CONTAINER": "rslave", 1: "rslave",
    "PROPAGATION_BIDIRECTIONAL": "rshared", 2: "rshared",
}
#: CRI's NamespaceMode for a namespace shared with the node, by name (crictl's JSON) or number (containerd's info).
_CRI_NODE_NAMESPACE = ("NODE", 2)
#: Docker's mode text for a namespace shared with the host, and the prefix of a network joined from a container.
_DOCKER_HOST_MODE = "host"
_DOCKER_PEER_NETWORK = "container:"
#: The label the kubelet's Docker shim puts on a pod's containers, naming the pod sandbox.
K8S_SANDBOX_ID_LABEL = "io.kubernetes.sandbox.id"


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


def docker_mounts(value: Any) -> tuple[ContainerMount, ...]:
    """The `Mounts` of a Docker inspect answer (binds and volumes, as Docker lists them)."""
    return tuple(
        ContainerMount(str(m.get("Source") or ""), str(m.get("Destination") or ""), str(m.get("Mode") or ""),
                       bool(m.get("RW", False)), str(m.get("Propagation") or ""))
        for m in json_objects(value)
    )


def cri_mounts(value: Any) -> tuple[ContainerMount, ...]:
    """The `status.mounts` of `crictl inspect`: CRI has no mode text, and names propagation by enum."""
    return tuple(
        ContainerMount(str(m.get("hostPath") or ""), str(m.get("containerPath") or ""), "",
                       not m.get("readonly", False), _cri_propagation(m.get("propagation", 0)))
        for m in json_objects(value)
    )


def _cri_propagation(value: Any) -> str:
    return _CRI_PROPAGATION.get(value, "unknown") if isinstance(value, (str, int)) else "unknown"


def docker_ip(doc: dict[str, Any]) -> str:
    """The container's address on Docker's default network (`NetworkSettings.IPAddress`), "" when none."""
    ip = json_path(doc, "NetworkSettings", "IPAddress")
    return ip if isinstance(ip, str) else ""


def docker_network_peer(doc: dict[str, Any]) -> str | None:
    """The container whose network this one joined (`--network container:<id>`), if it did."""
    mode = json_path(doc, "HostConfig", "NetworkMode")
    if isinstance(mode, str) and mode.startswith(_DOCKER_PEER_NETWORK):
        return mode.removeprefix(_DOCKER_PEER_NETWORK) or None
    return None


def _docker_shares_host(host_config: dict[str, Any], key: str) -> bool:
    return host_config.get(key) == _DOCKER_HOST_MODE


def meta_from_docker(doc: dict[str, Any], runtime: str, *, peer_ip: str = "") -> ContainerMeta:
    """ContainerMeta from a `/containers/<id>/json` answer; `peer_ip` is the address of the container whose
    network this one joined, used when it has none of its own (as a pod's containers join its sandbox's)."""
    config = json_object(doc.get("Config"))
    host_config = json_object(doc.get("HostConfig"))
    state = json_object(doc.get("State"))
    labels = dict(json_object(config.get("Labels")))
    sandbox_id = labels.get(K8S_SANDBOX_ID_LABEL)
    return ContainerMeta(
        id=doc.get("Id", ""), name=(doc.get("Name") or "").lstrip("/") or None, image=config.get("Image") or None,
        image_id=doc.get("Image") or None, privileged=bool(host_config.get("Privileged", False)),
        start_ns=parse_time_ns(state.get("StartedAt")), runtime=runtime, labels=labels,
        mounts=docker_mounts(doc.get("Mounts")), ip=docker_ip(doc) or peer_ip,
        pod_sandbox_id=sandbox_id if isinstance(sandbox_id, str) else "",
        host_pid=_docker_shares_host(host_config, "PidMode"),
        host_network=_docker_shares_host(host_config, "NetworkMode"),
        host_ipc=_docker_shares_host(host_config, "IpcMode"),
        probes=docker_probes(config),
    )


def cri_sandbox_id(doc: dict[str, Any]) -> str:
    """The pod sandbox of a `crictl inspect` answer (the runtime's verbose info names it), "" when unknown."""
    sandbox_id = json_path(doc, "info", "sandboxID")
    return sandbox_id if isinstance(sandbox_id, str) else ""


def _cri_shares_node(options: Any, key: str) -> bool:
    return json_object(options).get(key) in _CRI_NODE_NAMESPACE


def meta_from_crictl(doc: dict[str, Any], sandbox: dict[str, Any] | None = None) -> ContainerMeta:
    """ContainerMeta from `crictl inspect` output (status plus the runtime's info) and, when the pod sandbox
    answered, `crictl inspectp` output: the pod's IP, CNI result, shared namespaces and recorded spec."""
    status = json_object(doc.get("status"))
    info = json_object(doc.get("info"))
    privileged = json_path(info, "config", "linux", "security_context", "privileged")
    labels = dict(json_object(status.get("labels")))
    created = status.get("startedAt") or status.get("createdAt")
    raw_name = json_path(status, "metadata", "name")
    name = raw_name if isinstance(raw_name, str) else None
    sandbox_id = cri_sandbox_id(doc)
    if sandbox_id:
        labels[K8S_SANDBOX_ID_LABEL] = sandbox_id
    pod_status = json_object(json_object(sandbox).get("status"))
    # The sandbox's own view of its namespaces; without it, the one containerd recorded in the container's config.
    namespaces = json_path(pod_status, "linux", "namespaces", "options") if sandbox else json_path(
        info, "config", "linux", "security_context", "namespace_options")
    spec_text = json_path(pod_status, "annotations", LAST_APPLIED_ANNOTATION)
    ip = json_path(pod_status, "network", "ip")
    return ContainerMeta(
        id=status.get("id", ""), name=name,
        image=json_path(status, "image", "image") or None, image_id=status.get("imageRef") or None,
        privileged=bool(privileged) if privileged is not None else None,
        start_ns=parse_time_ns(created) if isinstance(created, str) else None, runtime="cri", labels=labels,
        mounts=cri_mounts(status.get("mounts")), ip=ip if isinstance(ip, str) else "",
        cni_json=cni_result(json_object(sandbox).get("info")), pod_sandbox_id=sandbox_id,
        host_pid=_cri_shares_node(namespaces, "pid"), host_network=_cri_shares_node(namespaces, "network"),
        host_ipc=_cri_shares_node(namespaces, "ipc"),
        # The pod spec names its containers as CRI's container metadata does.
        probes=pod_spec_probes(spec_text, name) if isinstance(spec_text, str) else (),
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
                    return meta_from_docker(doc, "podman" if "podman" in path else "docker",
                                            peer_ip=self._docker_peer_ip(path, doc))
        if self._crictl is not None:
            for path in self._cri:
                if os.path.exists(path):
                    doc = self._crictl_inspect(path, "inspect", container_id)
                    if doc is not None:
                        sandbox_id = cri_sandbox_id(doc)
                        sandbox = self._crictl_inspect(path, "inspectp", sandbox_id) if sandbox_id else None
                        return meta_from_crictl(doc, sandbox)
        return None

    def _docker_peer_ip(self, path: str, doc: dict[str, Any]) -> str:
        """The address of the container whose network `doc`'s joined, when `doc` has none of its own."""
        peer = docker_network_peer(doc)
        if docker_ip(doc) or peer is None:
            return ""
        peer_doc = self._docker_inspect(path, peer)
        return docker_ip(peer_doc) if peer_doc is not None else ""

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

    def _crictl_inspect(self, path: str, command: str, object_id: str) -> dict[str, Any] | None:
        """`crictl inspect` (a container) or `crictl inspectp` (a pod sandbox) as JSON, None when it fails."""
        assert self._crictl is not None
        try:
            done = subprocess.run([self._crictl, "--runtime-endpoint", f"unix://{path}", command, object_id],
                                  capture_output=True, timeout=self.timeout_s, check=False)
            doc = json.loads(done.stdout) if done.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired, ValueError):
            return None
        return doc if isinstance(doc, dict) else None
