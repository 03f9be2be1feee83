"""A falco-agent plugin for the tests: the `ticker` event source counts, and `ticker_extras` adds a field to
`aws_cloudtrail`. With `fail_after`, the ticker's thread dies after that many events, for the supervisor to see."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from agent.plugins.api import (
    DecodeError,
    Event,
    EventSink,
    FieldSpec,
    FieldType,
    LiveContext,
    NoConfig,
    Plugin,
    SourceWorker,
    limits,
    schema_fields,
)

SOURCE = "ticker"


@dataclass(frozen=True, slots=True)
class TickerConfig:
    """`init_config` of the ticker."""

    interval_s: float = field(default=0.05, metadata=limits(gt=0))
    message: str = "tick"
    fail_after: int = field(default=0, metadata=limits(ge=0))


class Ticker:
    """One event every `interval_s`, each batch acknowledged before `acked` moves on (its "checkpoint")."""

    def __init__(self, config: TickerConfig, context: LiveContext) -> None:
        self.name = SOURCE
        self._config = config
        self._hostname = context.hostname
        self._worker = SourceWorker("ticker")
        self.count = 0
        self.acked = 0

    def start(self, sink: EventSink) -> None:
        self._worker.start(lambda: self._run(sink))

    def stop(self) -> None:
        self._worker.stop()

    def failure(self) -> str | None:
        return self._worker.failure()

    def metrics(self) -> dict[str, Any]:
        return {"events": self.count, "acked": self.acked}

    def _run(self, sink: EventSink) -> None:
        emitted = 0
        while not self._worker.stopping.wait(self._config.interval_s):
            if self._config.fail_after and emitted >= self._config.fail_after:
                raise RuntimeError(f"ticker gave up after {emitted} events")
            self.count += 1
            emitted += 1
            event = Event(SOURCE, time.time_ns(), {"count": self.count, "message": self._config.message},
                          type="tick", hostname=self._hostname)
            # Waiting for room in the agent's queue is the backpressure; stop still ends the wait.
            while not sink.put([event], on_done=partial(self._ack, self.count), timeout_s=0.1):
                if self._worker.stopping.is_set():
                    return

    def _ack(self, count: int) -> None:
        self.acked = max(self.acked, count)


class TickerDecoder:
    """Recorded ticks, `{"ticker": {"count": N, "message": "..."}}`, for `replay`."""

    source = SOURCE

    def __init__(self, hostname: str) -> None:
        self._hostname = hostname

    def matches(self, document: Any) -> bool:
        return isinstance(document, dict) and isinstance(document.get("ticker"), dict)

    def events(self, document: Any, *, origin: str) -> Iterator[Event | DecodeError]:
        yield Event(SOURCE, 0, document["ticker"], type="tick", hostname=self._hostname)


def _extract(event: Event, name: str, arg: str | None) -> Any:
    return event.payload.get(name.removeprefix("ticker."))


def _live(config: TickerConfig, context: LiveContext) -> list[Ticker]:
    return [Ticker(config, context)]


# Falco's plugin_get_fields shape, plus one field written as a FieldSpec.
FIELDS = (
    *schema_fields([
        {"name": "ticker.count", "type": "uint64", "desc": "Events the ticker counted so far."},
        {"name": "ticker.message", "type": "string", "desc": "The configured message."},
    ], _extract),
    FieldSpec("ticker.even", FieldType.BOOL, "Whether the count is even.",
              lambda _arg: lambda event: event.payload["count"] % 2 == 0),
)

PLUGIN = Plugin(name="ticker", version="0.2.0", config=TickerConfig, source=SOURCE, fields=FIELDS, live=_live,
                decoder=TickerDecoder)

EXTRAS = Plugin(name="ticker_extras", version="1.0.0", config=NoConfig, extract_sources=("aws_cloudtrail",),
                fields=(FieldSpec("extras.name_length", FieldType.UINT64, "Length of the CloudTrail event name.",
                                  lambda _arg: lambda event: len(event.type)),))
