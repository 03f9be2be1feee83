"""Output test helpers: alerts, and a real aiohttp server on 127.0.0.1 standing in for Falcosidekick."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from aiohttp import web

from agent.alert import Alert
from agent.priority import Priority

WAIT_S = 20.0


def make_alert(i: int, *, priority: Priority = Priority.WARNING) -> Alert:
    return Alert(rule=f"Rule {i % 3}", priority=priority, source="syscall", ts_ns=1_700_000_000_123_456_789 + i,
                 output=f"alert number {i} (proc.name=cat)", hostname="node-1", tags=("filesystem", "mitre"),
                 output_fields={"proc.name": "cat", "proc.pid": i, "fd.name": None})


@dataclass(frozen=True, slots=True)
class Request:
    """One POST the receiver got and the status it answered."""

    headers: dict[str, str]
    body: bytes
    status: int


Answer = Callable[[int], int]  # request index → status


class Receiver:
    """An aiohttp server on its own loop thread; `answer(index)` picks each reply's status, changeable any time."""

    def __init__(self, answer: Answer, *, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.requests: list[Request] = []
        self.port = 0
        self._tls = tls
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="receiver", daemon=True)

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}/alerts"

    def start(self) -> Receiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(WAIT_S)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/alerts", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._tls)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._changed:
            status = self.answer(len(self.requests))
            self.requests.append(Request(dict(request.headers), body, status))
            self._changed.notify_all()
        return web.Response(status=status, text="ok" if status < 300 else "not now")

    def wait_for(self, predicate: Callable[[list[Request]], bool], timeout_s: float = WAIT_S) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self.requests), timeout_s)

    def accepted(self) -> list[Request]:
        with self._changed:
            return [r for r in self.requests if 200 <= r.status < 300]

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(WAIT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(WAIT_S)
        self._loop.close()


@contextmanager
def receiver(answer: Answer = lambda index: 200, *, tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    server = Receiver(answer, tls=tls)
    try:
        yield server.start()
    finally:
        server.stop()
