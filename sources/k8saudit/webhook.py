"""The kube-apiserver audit webhook receiver: HTTP(S) POSTs of audit events into the agent's queue.

A 200 answer means every event of the batch that could be decoded is queued; when the queue has
no room for the whole batch the answer is 503 with `Retry-After`, so the API server retries the
batch instead of losing it. Bad bodies and bad events are refused with their reason and counted;
the server keeps serving. Should the server itself die (its thread or event loop ends, or its
listening socket closes) without `stop()`, `failure()` says so and the supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from aiohttp import web

from agent.errors import AgentError, DecodeError
from agent.event import Event
from agent.event_queue import QueueClosed
from agent.json_fields import compact_json
from agent.source import EventSink, ListenError
from sources.k8saudit.decoder import K8sAuditDecoder

log = structlog.get_logger(__name__)
_STARTUP_TIMEOUT_S = 10.0
_BATCH_SIZE_BUCKETS = (1, 10, 100, 1000, 10_000)
_MAX_REASONS_REPORTED = 20


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    host: str = "127.0.0.1"
    port: int = 9765
    path: str = "/k8s-audit"
    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""
    max_body_bytes: int = 12 * 1024 * 1024
    max_event_bytes: int = 256 * 1024
    hostname: str = ""

    @property
    def is_tls(self) -> bool:
        return bool(self.cert_file)


def server_ssl_context(settings: WebhookSettings) -> ssl.SSLContext:
    """TLS for the server; requires and verifies client certificates when a client CA is given."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.cert_file, settings.key_file or None)
        if settings.client_ca_file:
            context.load_verify_locations(settings.client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise AgentError(f"k8s audit webhook TLS set-up failed: {exc}; check cert_file, key_file and "
                         "client_ca_file") from None
    return context


class WebhookStats:
    """Counters of the receiver, read by the metrics endpoint."""

    def __init__(self) -> None:
        self.requests = 0
        self.events_received = 0
        self.events_accepted = 0
        self.rejected: Counter[str] = Counter()
        self.requests_refused: Counter[int] = Counter()
        self.batch_sizes: Counter[int] = Counter()

    def observe_batch(self, size: int) -> None:
        bucket = next((b for b in _BATCH_SIZE_BUCKETS if size <= b), _BATCH_SIZE_BUCKETS[-1] * 10)
        self.batch_sizes[bucket] += 1

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "requests": self.requests,
            "events_received": self.events_received,
            "events_accepted": self.events_accepted,
        }
        out.update({f"events_rejected_{reason}": n for reason, n in self.rejected.items()})
        out.update({f"requests_refused_{status}": n for status, n in self.requests_refused.items()})
        out.update({f"batch_size_le_{bucket}": n for bucket, n in sorted(self.batch_sizes.items())})
        return out


class AuditWebhook:
    """LiveSource: an aiohttp server on its own thread and event loop."""

    name = "k8s_audit"

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        self.stats = WebhookStats()
        self._decoder = K8sAuditDecoder(hostname=settings.hostname)
        self._sink: EventSink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._is_stopped = False
        self._failure: str | None = None
        self.address: tuple[str, int] | None = None

    # ----- lifecycle --------------------------------------------------------------------------
    def start(self, sink: EventSink) -> None:
        """Listen; also after `stop()` or a failure, on the same instance (the supervisor restarts it so)."""
        self._sink = sink
        self._server = None
        self._failure = None
        self._is_stopped = False
        ssl_context = server_ssl_context(self.settings) if self.settings.is_tls else None
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self.address = loop.run_until_complete(self._open(ssl_context))
            except OSError as exc:
                failure.append(ListenError(
                    f"sources.k8s_audit.webhook.listen: the k8s audit webhook cannot listen on "
                    f"{self.settings.host}:{self.settings.port}: {exc.strerror}; free the address or change the key"))
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
                loop.run_until_complete(self._close())
            except Exception as exc:  # the thread's boundary: kept for failure(), so that the webhook is restarted
                log.exception("webhook_server_failed")
                self._failure = f"k8s audit webhook server failed: {type(exc).__name__}: {exc}"
            finally:
                loop.close()

        self._thread = threading.Thread(target=serve, name="k8s-audit-webhook", daemon=True)
        self._thread.start()
        if not started.wait(_STARTUP_TIMEOUT_S):
            raise AgentError("k8s audit webhook did not start in time")
        if failure:
            raise failure[0]
        scheme = "https" if self.settings.is_tls else "http"
        host, port = self.address  # type: ignore[misc]
        log.info("webhook_listening", url=f"{scheme}://{host}:{port}{self.settings.path}",
                 client_certificates=bool(self.settings.client_ca_file))

    async def _open(self, ssl_context: ssl.SSLContext | None) -> tuple[str, int]:
        app = web.Application(client_max_size=self.settings.max_body_bytes)
        app.router.add_post(self.settings.path, self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port, ssl_context=ssl_context,
                           reuse_address=True)
        await site.start()
        self._server = site._server  # aiohttp keeps the listening server here; failure() asks it
        host, port = self._runner.addresses[0][:2]
        return host, port

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        self._is_stopped = True
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)

    def failure(self) -> str | None:
        """Why the server stopped serving on its own; None while it serves and after `stop()`."""
        thread, server = self._thread, self._server
        if self._is_stopped or thread is None:
            return None
        if self._failure is not None:
            return self._failure
        if not thread.is_alive():
            return "k8s audit webhook server thread ended"
        if server is not None and not server.is_serving():
            host, port = self.address or (self.settings.host, self.settings.port)
            return f"k8s audit webhook no longer listens on {host}:{port}"
        return None

    def metrics(self) -> dict[str, Any]:
        return self.stats.as_dict()

    # ----- requests ---------------------------------------------------------------------------
    def _refuse(self, status: int, reason: str, **extra: Any) -> web.Response:
        self.stats.requests_refused[status] += 1
        body = {"error": reason, **extra}
        headers = {"Retry-After": "1"} if status in (429, 503) else None
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json",
                            headers=headers)

    async def _handle(self, request: web.Request) -> web.Response:
        self.stats.requests += 1
        if request.content_type != "application/json":
            return self._refuse(415, f"content type must be application/json, not '{request.content_type}'")
        declared = request.content_length
        if declared is not None and declared > self.settings.max_body_bytes:
            return self._refuse(413, f"body of {declared} bytes is over the limit of "
                                     f"{self.settings.max_body_bytes} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(413, f"body is over the limit of {self.settings.max_body_bytes} bytes")
        except (ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
            return self._refuse(400, f"body could not be read completely: {exc}")
        if declared is not None and len(body) != declared:
            return self._refuse(400, f"truncated body: {len(body)} of {declared} declared bytes")
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return self._refuse(400, f"invalid JSON: {exc}")
        peer = request.remote or "unknown"
        events, problems = self._decode(document, body, origin=f"webhook from {peer}")
        self.stats.events_received += len(events) + len(problems)
        self.stats.observe_batch(len(events) + len(problems))
        if not events:
            reasons = problems[:_MAX_REASONS_REPORTED] or ["no audit events in the body"]
            return self._refuse(400, "no acceptable audit event in the body", rejected=reasons)
        assert self._sink is not None
        try:
            queued = self._sink.offer(events)
        except QueueClosed:
            return self._refuse(503, "the agent is shutting down")
        if not queued:
            return self._refuse(503, "event queue is full; retry later", queued=0)
        self.stats.events_accepted += len(events)
        return web.Response(body=orjson.dumps({"accepted": len(events), "rejected": problems[:_MAX_REASONS_REPORTED],
                                               "rejected_count": len(problems)}),
                            content_type="application/json")

    def _decode(self, document: Any, body: bytes, *, origin: str) -> tuple[list[Event], list[str]]:
        """Events to queue and the reasons of the ones refused (each reason also counted)."""
        events: list[Event] = []
        problems: list[str] = []
        limit = self.settings.max_event_bytes
        # Only a body larger than the per-event limit can hold an event over it.
        check_size = len(body) > limit
        for index, part in enumerate(_items(document) if check_size else (document,)):
            if check_size and len(compact_json(part)) > limit:
                self._reject("event_too_large", problems, f"event {index} is over the limit of {limit} bytes")
                continue
            for item in self._decoder.events(part, origin=origin):
                if isinstance(item, DecodeError):
                    self._reject(item.reason, problems, str(item))
                else:
                    events.append(item)
        return events, problems

    def _reject(self, key: str, problems: list[str], text: str) -> None:
        self.stats.rejected[key] += 1
        problems.append(text)


def _items(document: Any) -> Sequence[Any]:
    """The separate events of a body, so each can be size-checked; other shapes stay whole."""
    if isinstance(document, list):
        return document
    if isinstance(document, dict) and document.get("kind") == "EventList" and isinstance(document.get("items"), list):
        items: list[Any] = document["items"]
        return items
    return (document,)
