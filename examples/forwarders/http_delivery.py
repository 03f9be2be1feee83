"""Blocking HTTP POSTs for the forwarders: aiohttp on a private event loop, one total timeout per attempt.

`HttpPoster.post` returns the reply for any status and raises `DeliveryFailed` only when no reply came (refused,
reset, timeout, TLS failure). `check_reply` sorts statuses: 2xx accepted; 400, 413 and 422 mean this payload will
never be accepted (the caller rejects it); anything else (401/403 until a token is fixed, 404 until a URL is, 408,
429, 5xx) is worth retrying, with the server's `Retry-After` when it sent one.
"""

from __future__ import annotations

import asyncio
import email.utils
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp
from forwarder_config import HttpSettings
from forwarding import DeliveryFailed, Outcome

from agent.alert import Alert

__all__ = ["PERMANENT_STATUSES", "HttpPoster", "HttpReply", "check_reply", "deliver_each", "parse_retry_after"]

PERMANENT_STATUSES = frozenset({400, 413, 422})


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    def summary(self) -> str:
        return f"HTTP {self.status}: {self.body[:200].decode('utf-8', 'replace')}"


def parse_retry_after(value: str | None, *, now_s: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delay seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now_s is None else now_s))


def check_reply(reply: HttpReply) -> bool:
    """True when accepted, False when refused for good; raises DeliveryFailed when a retry may succeed."""
    if reply.is_success:
        return True
    if reply.status in PERMANENT_STATUSES:
        return False
    raise DeliveryFailed(reply.summary(), retry_after_s=parse_retry_after(reply.headers.get("Retry-After")))


def deliver_each(alerts: list[Alert], send: Callable[[Alert], HttpReply]) -> Outcome:
    """One request per alert, in order, stopping at the first failure so a retry never repeats an accepted one."""
    outcome = Outcome()
    for index, alert in enumerate(alerts):
        try:
            reply = send(alert)
            accepted = check_reply(reply)
        except DeliveryFailed as exc:
            if index == 0:
                raise
            outcome.retry = alerts[index:]
            outcome.retry_after_s, outcome.reason = exc.retry_after_s, exc.reason
            break
        if not accepted:
            outcome.rejected.append((alert, reply.summary()))
    return outcome


def _ssl_context(http: HttpSettings) -> ssl.SSLContext | bool:
    if not http.url.startswith("https:"):
        return True
    if not http.tls_verify:
        return False
    context = ssl.create_default_context(cafile=http.tls_ca)
    if http.tls_cert:
        context.load_cert_chain(http.tls_cert, http.tls_key)
    return context


class HttpPoster:
    """POSTs to one endpoint with the configured headers and TLS; not thread-safe (one forwarder thread)."""

    def __init__(self, http: HttpSettings, *, timeout_s: float) -> None:
        self.headers = dict(http.headers)
        self._ssl = _ssl_context(http)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._loop = asyncio.new_event_loop()
        self._session: aiohttp.ClientSession | None = None

    def post(self, url: str, body: bytes, *, headers: Mapping[str, str]) -> HttpReply:
        """The reply, whatever its status; DeliveryFailed when none came within the timeout."""
        return self._loop.run_until_complete(self._post(url, body, {**self.headers, **headers}))

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> HttpReply:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(url, data=body, headers=headers, ssl=self._ssl) as response:
                return HttpReply(response.status, dict(response.headers), await response.read())
        except TimeoutError:
            raise DeliveryFailed(f"no answer within {self._timeout.total}s") from None
        except aiohttp.ClientError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        if self._session is not None:
            self._loop.run_until_complete(self._session.close())
        self._loop.close()
