"""Alerts POSTed as Falco's JSON alert object (what Falcosidekick accepts), from a background thread.

`emit` only queues (bounded; overflow is dropped and counted). The writer thread sends one alert per request, or with
`batch` a JSON array of up to 100 alerts per request, retrying with backoff until the endpoint accepts. A reply of 400,
413 or 422 means the alert will never be accepted: it is counted as rejected instead of retried forever. Any other
non-2xx reply (401/403 until a token is fixed, 404 until a URL is, 429, 5xx) and any transport error is retried.

As Falco's http_output can: the body gzip-compressed (`compress_uploads`), a new connection per request instead of one
kept open (`keep_alive` off), and each answer of the server written on stdout (`echo`).
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp
import structlog

from agent import __version__
from agent.alert import FALCO_JSON, Alert, JsonAlertFormat, json_bytes
from agent.errors import ConfigError
from agent.outputs.async_writer import AsyncWriter, Backoff, DeliveryError, QueuedOutput, RejectedError

__all__ = ["DEFAULT_BACKOFF", "PERMANENT_STATUSES", "HttpOptions", "HttpOutput"]

log = structlog.get_logger(__name__)

DEFAULT_BACKOFF = Backoff(initial_s=0.5, max_s=30.0)
PERMANENT_STATUSES = frozenset({400, 413, 422})
_MAX_BATCH = 100
_JOIN_GRACE_S = 2.0
# zlib's default: most of the size gain of level 9 at a fraction of its CPU, spent on the writer thread.
_GZIP_LEVEL = 6


def _ssl_context(url: str, *, verify_tls: bool, ca_file: str, ca_path: str, client_cert: str,
                 client_key: str) -> ssl.SSLContext | bool:
    """aiohttp's `ssl` argument: True (defaults) for plain http, False to skip verification, or a context."""
    if not url.startswith("https:"):
        return True
    if not verify_tls and not client_cert:
        return False
    try:
        context = ssl.create_default_context(cafile=ca_file or None, capath=ca_path or None)
        if not verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if client_cert:
            context.load_cert_chain(client_cert, client_key or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"http output TLS set-up failed for {url}: {exc}; check ca_file, ca_path, client_cert "
                          "and client_key") from None
    return context


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """How requests are made, beyond where they go (Falco's http_output keys)."""

    headers: Mapping[str, str] = field(default_factory=dict)
    user_agent: str = ""  # "" is falco-agent/<version>
    compress: bool = False
    keep_alive: bool = True
    echo: bool = False


class _HttpDestination:
    """Owns an event loop and a client session, both created and used on the writer thread only."""

    def __init__(self, url: str, *, options: HttpOptions, timeout_s: float, tls: ssl.SSLContext | bool,
                 iso8601: bool, json_format: JsonAlertFormat, batch: bool) -> None:
        self._url = url
        self._headers = {"Content-Type": "application/json",
                         "User-Agent": options.user_agent or f"falco-agent/{__version__}", **options.headers}
        if options.compress:
            self._headers["Content-Encoding"] = "gzip"
        if not options.keep_alive:
            self._headers["Connection"] = "close"
        self._options = options
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._tls = tls
        self._iso8601 = iso8601
        self._json = json_format
        self._batch = batch
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None

    def send(self, items: list[Alert]) -> None:
        if self._batch:
            body = json_bytes([self._json.document(alert, iso8601=self._iso8601) for alert in items])
        else:
            (alert,) = items
            body = self._json.line(alert, iso8601=self._iso8601)
        if self._options.compress:
            body = gzip.compress(body, compresslevel=_GZIP_LEVEL)
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        status, reply = self._loop.run_until_complete(self._post(body))
        if self._options.echo and reply:
            _echo(reply)
        if 200 <= status < 300:
            return
        summary = f"HTTP {status}: {reply[:200].decode('utf-8', 'replace')}"
        if status in PERMANENT_STATUSES:
            raise RejectedError(summary)
        raise DeliveryError(summary)

    async def _post(self, body: bytes) -> tuple[int, bytes]:
        if self._session is None:
            connector = aiohttp.TCPConnector(force_close=not self._options.keep_alive)
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
        try:
            async with self._session.post(self._url, data=body, headers=self._headers, ssl=self._tls) as response:
                return response.status, await response.read()
        except TimeoutError:
            raise DeliveryError(f"no answer within {self._timeout.total}s") from None
        except aiohttp.ClientError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from None

    def release(self) -> None:
        if self._loop is None:
            return
        if self._session is not None:
            self._loop.run_until_complete(self._session.close())
        self._loop.close()


def _echo(reply: bytes) -> None:
    """The server's answer on stdout, a line of its own between alert lines."""
    out = sys.stdout.buffer
    out.write(reply if reply.endswith(b"\n") else reply + b"\n")
    out.flush()


class HttpOutput(QueuedOutput[Alert]):
    """Falcosidekick-compatible HTTP POST output; `emit` never waits for the network."""

    name = "http"

    def __init__(self, url: str, *, iso8601: bool, timeout_s: float, max_queue: int, batch: bool,
                 close_timeout_s: float, options: HttpOptions = HttpOptions(), verify_tls: bool = True,
                 ca_file: str = "", ca_path: str = "", client_cert: str = "", client_key: str = "",
                 json_format: JsonAlertFormat = FALCO_JSON, backoff: Backoff = DEFAULT_BACKOFF) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"http output url must start with http:// or https://, not {url!r}")
        tls = _ssl_context(url, verify_tls=verify_tls, ca_file=ca_file, ca_path=ca_path, client_cert=client_cert,
                           client_key=client_key)
        destination = _HttpDestination(url, options=options, timeout_s=timeout_s, tls=tls, iso8601=iso8601,
                                       json_format=json_format, batch=batch)
        self._timeout_s = timeout_s
        self._close_timeout_s = close_timeout_s
        self._writer: AsyncWriter[Alert] = AsyncWriter(self.name, destination, max_queue=max_queue,
                                                       max_batch=_MAX_BATCH if batch else 1, backoff=backoff)

    def close(self) -> None:
        """Deliver what is queued until `close_timeout_s`, then count the rest as dropped."""
        if not self._writer.stop(self._close_timeout_s):
            log.warning("output_close_deadline", output=self.name, timeout_s=self._close_timeout_s)
        # A request in flight ends within its own timeout.
        if not self._writer.join(self._timeout_s + _JOIN_GRACE_S):
            log.error("output_writer_stuck", output=self.name)

