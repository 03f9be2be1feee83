"""A real aiohttp server on 127.0.0.1 that records every POST, standing in for a remote (Slack, Splunk, a webhook).

`respond(index, request)` decides each answer (status, headers, body) and may be changed at any time.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from aiohttp import web

WAIT_S = 20.0


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

    def __init__(self, respond: Responder = always_ok, *, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.respond = respond
        self.port = port
        self._tls = tls
        self.received: list[Received] = []
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-remote", daemon=True)

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> FakeRemote:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(WAIT_S)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True, ssl_context=self._tls)
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
def fake_remote(respond: Responder = always_ok, *, port: int = 0,
                tls: ssl.SSLContext | None = None) -> Iterator[FakeRemote]:
    remote = FakeRemote(respond, port=port, tls=tls)
    try:
        yield remote.start()
    finally:
        remote.stop()
