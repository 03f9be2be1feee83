"""Alerts published as Falco's JSON alert object to NATS JetStream, the fleet-wide bus where many nodes' alerts meet.

`emit` only queues (bounded; overflow is dropped and counted). The AsyncWriter thread hands batches of up to 100
alerts to a NATS client that lives on its own asyncio loop thread, so that pings, reconnects and acks keep being
served between batches. Each alert is published to a subject rendered from a template (`{source}`, `{priority}`,
`{rule}`, `{hostname}`; values are made subject-safe) and counts as delivered only once the stream acknowledged it.
A failed batch is retried with backoff; alerts already acknowledged are not sent again, and each alert carries a
`Nats-Msg-Id` so that JetStream drops the copy a retry sends after an ack was lost. With `create_stream` the stream is
created when missing, capturing the template's subjects with `*` in place of each placeholder token.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import re
import string
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext

from agent.alert import FALCO_JSON, Alert, AlertEncoder, JsonAlertFormat, alert_encoder
from agent.errors import ConfigError
from agent.outputs.async_writer import AsyncWriter, Backoff, DeliveryError, QueuedOutput

__all__ = ["DEFAULT_BACKOFF", "NatsOutput", "SubjectTemplate"]

log = structlog.get_logger(__name__)

DEFAULT_BACKOFF = Backoff(initial_s=0.5, max_s=30.0)
_MAX_BATCH = 100
_JOIN_GRACE_S = 2.0
_PLACEHOLDERS = frozenset({"source", "priority", "rule", "hostname"})
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_SUBJECT = re.compile(r"[^.\s*>]+(\.[^.\s*>]+)*")
# An alert too large for the server, or a subject the server refuses: sending it again cannot succeed.
_PERMANENT = (nats.errors.MaxPayloadError, nats.errors.BadSubjectError, nats.errors.BadHeaderError)
_TRANSIENT = (nats.errors.Error, OSError, TimeoutError)


class SubjectTemplate:
    """A subject with `{placeholder}` tokens, checked once at start and rendered per alert."""

    def __init__(self, template: str) -> None:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        unknown = names - _PLACEHOLDERS
        if unknown:
            raise ConfigError(f"outputs.nats.subject: unknown placeholder(s) {', '.join(sorted(unknown))} in "
                              f"{template!r}; use {', '.join(sorted(_PLACEHOLDERS))}")
        probe = template.format(**{name: "x" for name in _PLACEHOLDERS})
        if not _SUBJECT.fullmatch(probe):
            raise ConfigError(f"outputs.nats.subject: {template!r} is not a valid NATS subject (dot-separated tokens, "
                              "no spaces or wildcards)")
        self.template = template
        self._is_static = not names

    @property
    def wildcard(self) -> str:
        """The subjects this template can produce: each token holding a placeholder becomes `*`."""
        return ".".join("*" if "{" in token else token for token in self.template.split("."))

    def render(self, alert: Alert) -> str:
        if self._is_static:
            return self.template
        return self.template.format(source=_safe(alert.source), priority=alert.priority.label.lower(),
                                    rule=_safe(alert.rule), hostname=_safe(alert.hostname))


def _safe(value: str) -> str:
    return _UNSAFE.sub("_", value) or "_"


@dataclass(slots=True)
class _Pending:
    """An alert on its way, with the id JetStream deduplicates retries by."""

    alert: Alert
    msg_id: str
    is_done: bool = False


class _NatsDestination:
    """Owns a NATS connection and the loop thread it runs on; `send` and `release` run on the writer thread."""

    def __init__(self, servers: Sequence[str], *, subject: SubjectTemplate, stream: str, create_stream: bool,
                 credentials_file: str, timeout_s: float, encode: AlertEncoder) -> None:
        self._servers = list(servers)
        self._subject = subject
        self._stream = stream
        self._create_stream = create_stream
        self._credentials_file = credentials_file
        self._timeout_s = timeout_s
        self._encode = encode
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._is_stream_ready = not create_stream
        self._is_quiet = False
        self._is_closing = False
        self.rejected = 0

    def send(self, items: list[_Pending]) -> None:
        loop = self._start_loop()
        future = asyncio.run_coroutine_threadsafe(self._publish(items), loop)
        try:
            future.result(timeout=4 * self._timeout_s + 1.0)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise DeliveryError(f"no acknowledgement within {4 * self._timeout_s + 1.0}s") from None

    def release(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._client is not None:
            future = asyncio.run_coroutine_threadsafe(self._close(), self._loop)
            try:
                future.result(timeout=self._timeout_s)
            except concurrent.futures.TimeoutError:
                future.cancel()
                log.warning("nats_close_timeout", output="nats", timeout_s=self._timeout_s)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self._timeout_s)
        if not self._thread.is_alive():
            self._loop.close()

    # ----- loop thread ----------------------------------------------------------------------------
    def _start_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="output-nats-loop", daemon=True)
            self._thread.start()
        return self._loop

    async def _publish(self, items: list[_Pending]) -> None:
        js = await self._connect()
        await self._ensure_stream(js)
        todo = [item for item in items if not item.is_done]
        results = await asyncio.gather(*(self._publish_one(js, item) for item in todo), return_exceptions=True)
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            if any(isinstance(failure, nats.js.errors.NoStreamResponseError) for failure in failures):
                self._is_stream_ready = not self._create_stream  # the stream may be gone: create it again
            raise DeliveryError(f"{len(failures)} of {len(todo)} publishes failed: {_describe(failures[0])}")

    async def _publish_one(self, js: JetStreamContext, item: _Pending) -> None:
        alert = item.alert
        try:
            await js.publish(self._subject.render(alert), self._encode(alert),
                             timeout=self._timeout_s, stream=self._stream, headers={"Nats-Msg-Id": item.msg_id})
        except _PERMANENT as exc:
            self.rejected += 1
            log.error("output_alerts_rejected", output="nats", count=1, rule=alert.rule, error=_describe(exc))
        item.is_done = True

    async def _connect(self) -> JetStreamContext:
        if self._client is not None and self._js is not None and not self._client.is_closed:
            if not self._client.is_connected:
                # Publishing now would only pile copies up in the client's reconnect buffer.
                raise DeliveryError("not connected to NATS; the client is reconnecting")
            return self._js
        client = Client()
        try:
            await asyncio.wait_for(client.connect(
                servers=self._servers, name="falco-agent", user_credentials=self._credentials_file or None,
                connect_timeout=max(1, round(self._timeout_s)), allow_reconnect=True, max_reconnect_attempts=-1,
                reconnect_time_wait=1, error_cb=self._on_error, disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected), timeout=self._timeout_s)
        except _TRANSIENT as exc:
            await _close_quietly(client)
            raise DeliveryError(f"cannot connect to {', '.join(self._servers)}: {_describe(exc)}") from None
        log.info("nats_connected", output="nats", server=str(client.connected_url.netloc if client.connected_url
                                                             else ""))
        self._is_quiet = False
        self._client, self._js = client, client.jetstream(timeout=self._timeout_s)
        return self._js

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        if self._is_stream_ready:
            return
        try:
            try:
                await js.stream_info(self._stream)
            except nats.js.errors.NotFoundError:
                await js.add_stream(name=self._stream, subjects=[self._subject.wildcard])
                log.info("nats_stream_created", output="nats", stream=self._stream, subjects=self._subject.wildcard)
        except (*_TRANSIENT, nats.js.errors.APIError) as exc:
            raise DeliveryError(f"cannot find or create stream {self._stream}: {_describe(exc)}") from None
        self._is_stream_ready = True

    async def _close(self) -> None:
        self._is_closing = True
        if self._client is not None:
            await _close_quietly(self._client)

    async def _on_error(self, exc: Exception) -> None:
        # Called on every failed reconnect attempt: say it once per outage.
        if not self._is_quiet:
            self._is_quiet = True
            log.warning("nats_client_error", output="nats", error=_describe(exc))

    async def _on_disconnected(self) -> None:
        if self._is_closing:
            return
        log.warning("nats_disconnected", output="nats", hint="reconnecting; alerts wait in the queue")

    async def _on_reconnected(self) -> None:
        self._is_quiet = False
        url = self._client.connected_url if self._client is not None else None
        log.info("nats_reconnected", output="nats", server=url.netloc if url else "")


async def _close_quietly(client: Client) -> None:
    try:
        await client.close()
    except _TRANSIENT as exc:
        log.debug("nats_close_failed", output="nats", error=_describe(exc))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class NatsOutput(QueuedOutput[_Pending]):
    """NATS JetStream output; `emit` never waits for the network."""

    name = "nats"

    def __init__(self, servers: Sequence[str], *, subject: str, stream: str, create_stream: bool, iso8601: bool,
                 max_queue: int, timeout_s: float, close_timeout_s: float, credentials_file: str = "",
                 json_format: JsonAlertFormat = FALCO_JSON, backoff: Backoff = DEFAULT_BACKOFF) -> None:
        if not servers:
            raise ConfigError("outputs.nats.servers: give at least one server URL (nats://host:4222)")
        if not stream or _UNSAFE.search(stream):
            raise ConfigError(f"outputs.nats.stream: {stream!r} must be letters, digits, '-' or '_'")
        if credentials_file and not Path(credentials_file).is_file():
            raise ConfigError(f"outputs.nats.credentials_file: {credentials_file} is not a readable file")
        self._destination = _NatsDestination(servers, subject=SubjectTemplate(subject), stream=stream,
                                             create_stream=create_stream, credentials_file=credentials_file,
                                             timeout_s=timeout_s,
                                             encode=alert_encoder(as_json=True, iso8601=iso8601,
                                                                  json_format=json_format))
        self._timeout_s = timeout_s
        self._close_timeout_s = close_timeout_s
        self._id_prefix = uuid.uuid4().hex
        self._ids = itertools.count()
        self._writer: AsyncWriter[_Pending] = AsyncWriter(self.name, self._destination, max_queue=max_queue,
                                                          max_batch=_MAX_BATCH, backoff=backoff)

    def _item(self, alert: Alert) -> _Pending:
        return _Pending(alert, f"{self._id_prefix}-{next(self._ids)}")

    def close(self) -> None:
        """Deliver what is queued until `close_timeout_s`, then count the rest as dropped."""
        if not self._writer.stop(self._close_timeout_s):
            log.warning("output_close_deadline", output=self.name, timeout_s=self._close_timeout_s)
        # A batch in flight ends within its own bound (see _NatsDestination.send), then the client closes.
        if not self._writer.join(6 * self._timeout_s + _JOIN_GRACE_S):
            log.error("output_writer_stuck", output=self.name)

    def counters(self) -> dict[str, int]:
        """delivered (acknowledged by the stream), dropped, rejected, failed_attempts and queue_depth."""
        counters: dict[str, Any] = self._writer.counters()
        rejected = self._destination.rejected
        counters["delivered"] -= rejected
        counters["rejected"] += rejected
        return counters

    @property
    def delivered(self) -> int:
        return self._writer.delivered - self._destination.rejected

