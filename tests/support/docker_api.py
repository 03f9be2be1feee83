"""A Docker Engine API stand-in on a unix socket: real HTTP, answering only `GET /containers/<id>/json`."""

from __future__ import annotations

import json
import os
import socketserver
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any


def bind_mount(source: str, dest: str, *, read_only: bool = False, propagation: str = "rprivate") -> dict[str, Any]:
    """One entry of `docker inspect`'s `Mounts`, as Docker reports a `-v source:dest[:ro]` bind."""
    return {"Type": "bind", "Source": source, "Destination": dest, "Mode": "ro" if read_only else "",
            "RW": not read_only, "Propagation": propagation}


@dataclass(frozen=True)
class Networking:
    """How `docker run` set up a container's namespaces: its own address on the default bridge, or
    `--network container:<id>` (`peer`), and the `--pid`/`--network`/`--ipc` modes ("host" shares the host's)."""

    ip: str = "172.17.0.2"
    peer: str | None = None
    pid_mode: str = ""
    network_mode: str = "bridge"
    ipc_mode: str = "private"


def inspect_document(container_id: str, *, namespace: str, pod: str, privileged: bool = False,
                     mounts: Sequence[dict[str, Any]] = (), networking: Networking = Networking(),
                     healthcheck: Sequence[str] | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """What `docker inspect` says of a Kubernetes pod's container (the parts the kernel source reads);
    `healthcheck` is `Config.Healthcheck.Test`, `labels` are added to the pod's."""
    config: dict[str, Any] = {
        "Image": "ghcr.io/acme/app:1.0",
        "Labels": {"io.kubernetes.pod.namespace": namespace, "io.kubernetes.pod.name": pod,
                   "io.kubernetes.container.name": "app", **(labels or {})}}
    if healthcheck is not None:
        config["Healthcheck"] = {"Test": list(healthcheck), "Interval": 30_000_000_000}
    network_mode = f"container:{networking.peer}" if networking.peer else networking.network_mode
    return {
        "Id": container_id,
        "Name": f"/k8s_app_{pod}_{namespace}_0",
        "Image": "sha256:" + "b" * 64,
        "Config": config,
        "HostConfig": {"Privileged": privileged, "NetworkMode": network_mode, "PidMode": networking.pid_mode,
                       "IpcMode": networking.ipc_mode},
        # Docker reports no address of its own for a container that joined another's network.
        "NetworkSettings": {"IPAddress": "" if networking.peer else networking.ip},
        "State": {"Running": True, "StartedAt": "2026-11-29T10:00:00.123456789Z"},
        "Mounts": list(mounts),
    }


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    api: FakeDockerApi


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        api = self.server.api
        parts = self.path.split("?", 1)[0].strip("/").split("/")
        doc = api.containers.get(parts[1]) if len(parts) == 3 and parts[::2] == ["containers", "json"] else None
        body = json.dumps(doc if doc is not None else {"message": f"No such container: {self.path}"}).encode()
        self.send_response(200 if doc is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        api.note_answered(parts[1] if len(parts) == 3 else self.path)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a unix socket has no client address to log, and stderr is not this server's."""


class FakeDockerApi:
    """Serves `containers` (full id -> inspect document) on `socket_path`; records which ids were asked."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.containers: dict[str, dict[str, Any]] = {}
        self.answered: list[str] = []
        self._changed = threading.Condition()
        self._server: _Server | None = None

    def add(self, container_id: str, *, namespace: str, pod: str, **details: Any) -> None:
        """Describe a container of pod `pod`; `details` are inspect_document's (mounts, networking, ...)."""
        self.containers[container_id] = inspect_document(container_id, namespace=namespace, pod=pod, **details)

    def note_answered(self, container_id: str) -> None:
        with self._changed:
            self.answered.append(container_id)
            self._changed.notify_all()

    def wait_answered(self, container_id: str, *, timeout_s: float) -> bool:
        """Whether the server has answered a request about `container_id`, waiting up to `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while container_id not in self.answered:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def __enter__(self) -> FakeDockerApi:
        self._server = _Server(str(self.socket_path), _Handler)
        self._server.api = self
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self.socket_path.exists():
            os.unlink(self.socket_path)
