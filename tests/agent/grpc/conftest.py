"""gRPC test helpers: alerts, running servers on a unix socket or loopback, stream readers."""

from __future__ import annotations

import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.alert import Alert
from agent.grpc._gen.falco_agent.v1 import alerts_pb2 as pb
from agent.grpc._gen.falco_agent.v1 import alerts_pb2_grpc as pb_grpc
from agent.grpc.server import AlertServer
from agent.priority import Priority

WAIT_S = 20.0


def make_alert(i: int, *, rule: str | None = None, priority: Priority = Priority.WARNING, source: str = "syscall",
               tags: tuple[str, ...] = ("filesystem",)) -> Alert:
    return Alert(rule=rule or f"Rule {i % 3}", priority=priority, source=source, ts_ns=1_700_000_000_000_000_000 + i,
                 output=f"alert number {i} (proc.name=cat)", hostname="node-1", tags=tags,
                 output_fields={"proc.name": "cat", "proc.pid": i, "fd.name": None, "container.privileged": False,
                                "ka.req.pod.volumes.hostpath": ["/etc", "/var"]})


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short folder under /tmp: unix socket paths must stay under ~107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="fa-grpc-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def running_server(spool_dir: Path, **settings: Any) -> Iterator[AlertServer]:
    server = AlertServer(spool_dir=spool_dir, **settings)
    try:
        server.start()
        yield server
    finally:
        server.stop(grace_s=0.5)


@pytest.fixture
def unix_server(short_dir: Path) -> Iterator[AlertServer]:
    with running_server(short_dir / "spool", socket_path=short_dir / "agent.sock") as server:
        yield server


@pytest.fixture
def channel_to() -> Iterator[Callable[..., grpc.Channel]]:
    """Opens channels to a server's unix socket; closes them all at the end."""
    channels: list[grpc.Channel] = []

    def open_channel(server: AlertServer, **options: Any) -> grpc.Channel:
        channel = grpc.insecure_channel(f"unix:{server.socket_path}", options=list(options.items()))
        channels.append(channel)
        return channel

    yield open_channel
    for channel in channels:
        channel.close()


def stub(channel: grpc.Channel) -> pb_grpc.AlertServiceStub:
    return pb_grpc.AlertServiceStub(channel)


class StreamReader:
    """Reads a response iterator on a thread into a queue, so tests wait with timeouts."""

    def __init__(self, responses: Iterator[Any]) -> None:
        self.responses = responses
        self._queue: queue.Queue[Any] = queue.Queue()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self.responses:
                self._queue.put(item)
        except grpc.RpcError as exc:
            self.error = exc
        self._queue.put(StopIteration)

    def take(self, count: int, timeout_s: float = WAIT_S) -> list[Any]:
        """Exactly `count` items, or fail naming how many arrived in time."""
        items: list[Any] = []
        while len(items) < count:
            try:
                item = self._queue.get(timeout=timeout_s)
            except queue.Empty:
                pytest.fail(f"got {len(items)} of {count} items within {timeout_s}s")
            if item is StopIteration:
                pytest.fail(f"stream ended after {len(items)} of {count} items: {self.error}")
            items.append(item)
        return items

    def take_until(self, done: Callable[[list[Any]], bool], timeout_s: float = WAIT_S) -> list[Any]:
        items: list[Any] = []
        while not done(items):
            try:
                item = self._queue.get(timeout=timeout_s)
            except queue.Empty:
                pytest.fail(f"condition not met within {timeout_s}s after {len(items)} items")
            if item is StopIteration:
                pytest.fail(f"stream ended after {len(items)} items: {self.error}")
            items.append(item)
        return items

    def ended(self, timeout_s: float = WAIT_S) -> BaseException | None:
        """Wait for the stream to end; its error, if any."""
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "stream did not end"
        return self.error


def subscribe(channel: grpc.Channel, *, allow: list[pb.AlertFilter] | None = None,
              deny: list[pb.AlertFilter] | None = None, resume_after: int | None = None) -> Any:
    request = pb.SubscribeRequest(allow_list=allow or [], deny_list=deny or [], resume_after=resume_after)
    return stub(channel).Subscribe(request)


def seqs(responses: list[pb.SubscribeResponse]) -> list[int]:
    return [r.alert.seq for r in responses]
