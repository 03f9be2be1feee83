"""Forwarder test helpers: a real agent gRPC server on a unix socket, and a real HTTP server standing in for a remote.

The forwarders in examples/forwarders/ are scripts that import their siblings by module name, so that folder is put
on sys.path here, the way running `python examples/forwarders/slack.py` puts it there.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

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


@dataclass(frozen=True, slots=True)
class Received:
    """One request the stand-in remote got, and the status it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at_s: float


Responder = Callable[[int, Received], tuple[int, dict[str, str], bytes]]


def always_ok(index: int, request: Received) -> tuple[int, dict[str, str], bytes]:
    return 200, {}, b"ok"


class FakeRemote:
    """An aiohttp server on 127.0.0.1 in its own thread; `respond(index, request)` decides each answer."""

    def __init__(self, respond: Responder = always_ok, *, port: int = 0) -> None:
        self.respond = respond
        self.port = port
        self.received: list[Received] = []
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-remote", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeRemote:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(WAIT_S)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._changed:
            probe = Received(request.path, dict(request.headers), body, 0, time.monotonic())
            status, headers, answer = self.respond(len(self.received), probe)
            self.received.append(Received(probe.path, probe.headers, body, status, probe.at_s))
            self._changed.notify_all()
        return web.Response(status=status, headers=headers, body=answer)

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout_s: float = WAIT_S) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self.received), timeout_s)

    def accepted(self) -> list[Received]:
        with self._changed:
            return [r for r in self.received if 200 <= r.status < 300]

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(WAIT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(WAIT_S)
        self._loop.close()


@contextmanager
def fake_remote(respond: Responder = always_ok, *, port: int = 0) -> Iterator[FakeRemote]:
    remote = FakeRemote(respond, port=port)
    try:
        yield remote.start()
    finally:
        remote.stop()


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
