"""Output test helpers: alerts, and a real aiohttp server on 127.0.0.1 standing in for Falcosidekick."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from agent.alert import Alert
from agent.priority import Priority
from tests.support.http_recorder import FakeRemote, Received, fake_remote

WAIT_S = 20.0


def make_alert(i: int, *, priority: Priority = Priority.WARNING) -> Alert:
    return Alert(rule=f"Rule {i % 3}", priority=priority, source="syscall", ts_ns=1_700_000_000_123_456_789 + i,
                 output=f"alert number {i} (proc.name=cat)", hostname="node-1", tags=("filesystem", "mitre"),
                 output_fields={"proc.name": "cat", "proc.pid": i, "fd.name": None})


@contextmanager
def receiver(answer: Callable[[int], int] = lambda index: 200, *,
             tls: ssl.SSLContext | None = None) -> Iterator[FakeRemote]:
    """A recording server whose status for the request at `index` is `answer(index)`; its URL ends in /alerts."""

    def respond(index: int, _request: Received) -> tuple[int, dict[str, str], bytes]:
        status = answer(index)
        return status, {}, b"ok" if status < 300 else b"not now"

    with fake_remote(respond, tls=tls) as server:
        yield server
