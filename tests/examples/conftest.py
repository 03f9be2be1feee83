"""Forwarder test helpers: a real agent gRPC server on a unix socket, and a real HTTP server standing in for a remote.

The forwarders in examples/forwarders/ are scripts that import their siblings by module name, so that folder is put
on sys.path here, the way running `python examples/forwarders/slack.py` puts it there.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.alert import Alert
from agent.grpc.server import AlertServer
from agent.priority import Priority

REPO = Path(__file__).resolve().parents[2]
FORWARDERS = REPO / "examples" / "forwarders"
if str(FORWARDERS) not in sys.path:
    sys.path.insert(0, str(FORWARDERS))

WAIT_S = 20.0


def make_alert(i: int, *, priority: Priority = Priority.WARNING, hostname: str = "node-1") -> Alert:
    return Alert(rule=f"Rule {i % 3}", priority=priority, source="syscall", ts_ns=1_700_000_000_123_456_789 + i,
                 output=f"alert number {i} (proc.name=cat)", hostname=hostname, tags=("filesystem", "mitre"),
                 output_fields={"proc.name": "cat", "proc.pid": i, "fd.name": None,
                                "ka.req.pod.volumes.hostpath": ["/etc", "/var"]})


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short folder under /tmp: unix socket paths must stay under ~107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="fa-fwd-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def agent_server(short_dir: Path) -> Iterator[AlertServer]:
    """A real agent gRPC server on a unix socket; alerts go in through `server.output.emit`."""
    server = AlertServer(spool_dir=short_dir / "spool", socket_path=short_dir / "agent.sock")
    try:
        server.start()
        yield server
    finally:
        server.stop(grace_s=0.5)


def write_config(path: Path, server: AlertServer, *, url: str, own_key: str, own: dict[str, Any] | None = None,
                 delivery: dict[str, Any] | None = None, http: dict[str, Any] | None = None,
                 filters: dict[str, Any] | None = None) -> Path:
    """A forwarder YAML file for tests: fast backoff, replay from the start of the spool, state next to it."""
    document: dict[str, Any] = {
        "agent": {"socket_path": str(server.socket_path), "reconnect_backoff_max_s": 0.2},
        "delivery": {"state_file": str(path.with_suffix(".state")), "start_at": "earliest", "batch_size": 10,
                     "batch_max_wait_s": 0.2, "timeout_s": 5, "backoff_initial_s": 0.05, "backoff_max_s": 0.2,
                     **(delivery or {})},
        "http": {"url": url, **(http or {})},
        own_key: own or {},
    }
    if filters:
        document["filters"] = filters
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path
