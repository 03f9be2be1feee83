"""Output test helpers: alerts, and a real aiohttp server on 127.0.0.1 standing in for Falcosidekick."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol

from agent.alert import Alert
from agent.outputs.base import Output
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


def emits_return(output: Output, alerts: Iterable[Alert], timeout_s: float = WAIT_S) -> bool:
    """Whether emitting every alert returns within `timeout_s`, called while the destination cannot take them.

    A deadline, not a speed bound: an `emit` that waits for the destination would not return before the test lets
    the destination recover, so it misses any deadline; an `emit` that only queues returns at once however slow the
    machine is. The emits run on a thread so that a blocking one fails the test here instead of hanging it.
    """
    done = threading.Event()

    def emit_all() -> None:
        for alert in alerts:
            output.emit(alert)
        done.set()

    threading.Thread(target=emit_all, name="emits", daemon=True).start()
    return done.wait(timeout_s)


class QueuedOutput(Output, Protocol):
    def wait_idle(self, timeout_s: float) -> bool: ...


def deliver(output: QueuedOutput, count: int, *, one_by_one: bool = False) -> None:
    """Emit alerts 0 .. count-1 and wait until the output delivered (or gave up on) them, one by one or all at
    once; the output is closed in any case."""
    try:
        for i in range(count):
            output.emit(make_alert(i))
            if one_by_one:
                assert output.wait_idle(WAIT_S)
        assert output.wait_idle(WAIT_S)
    finally:
        output.close()
