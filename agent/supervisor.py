"""Keeps live sources running: a source that dies or cannot start is restarted with capped exponential backoff.

A source tells that its threads ended on their own through an optional `failure()` method (see `FailureReporting`);
the supervisor polls it every `poll_interval_s` from its own thread. A failed source is stopped (to release what
it holds) and started again on the same instance after 1 s, 2 s, 4 s ... up to `max_backoff_s`; the backoff starts
over once a restarted source has run for `max_backoff_s`. A source that could not start at boot is retried the same
way. The other sources keep running throughout. Each failure streak raises one `Falco Agent Source Failed` internal
alert and each successful restart a `Falco Agent Source Restarted` one.

Every built-in live source offers `failure()`: the file readers and pollers (their worker thread), the k8s audit
webhook (its server thread or listening socket) and the SQS consumer (any of its threads). A source without it is
supervised only for `start()` failures.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import structlog

from agent.alert import Alert
from agent.internal_alerts import InternalAlerts
from agent.source import EventSink, LiveSource

log = structlog.get_logger(__name__)


@runtime_checkable
class FailureReporting(Protocol):
    def failure(self) -> str | None:
        """Why the source's threads ended on their own; None while it runs, after `stop()`, or after a planned end."""
        ...


@dataclass(slots=True)
class _Slot:
    source: LiveSource
    is_running: bool = False
    delay_s: float = 0.0
    retry_at: float = 0.0
    started_at: float = 0.0
    attempts: int = 0
    is_reported: bool = False


class SourceSupervisor:
    """Starts the sources, notices failures and restarts them; `check()` is one pass (the thread calls it)."""

    def __init__(self, sources: list[LiveSource], sink: EventSink, *, alerts: InternalAlerts,
                 emit: Callable[[Alert], None], initial_backoff_s: float = 1.0, max_backoff_s: float = 60.0,
                 poll_interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._slots = [_Slot(source) for source in sources]
        self._sink = sink
        self._alerts = alerts
        self._emit = emit
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.poll_interval_s = poll_interval_s
        self._clock = clock
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> list[LiveSource]:
        return [slot.source for slot in self._slots if slot.is_running]

    def start_sources(self) -> None:
        """Start every source once; one that cannot start is reported, retried later, and the others run."""
        for slot in self._slots:
            self._start(slot)

    def start(self) -> None:
        """Supervise from a daemon thread until `stop()`."""
        self._thread = threading.Thread(target=self._run, name="source-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop supervising (no restart after this), then stop the running sources."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for slot in self._slots:
            if slot.is_running:
                slot.source.stop()
                slot.is_running = False

    def _run(self) -> None:
        while not self._stopping.wait(self.poll_interval_s):
            self.check()

    def check(self) -> None:
        """Notice dead sources and restart those whose backoff has passed."""
        now = self._clock()
        for slot in self._slots:
            if self._stopping.is_set():
                return
            if slot.is_running:
                reason = slot.source.failure() if isinstance(slot.source, FailureReporting) else None
                if reason is not None:
                    self._died(slot, reason, now)
            elif now >= slot.retry_at:
                self._start(slot)

    def _start(self, slot: _Slot) -> None:
        source = slot.source
        try:
            source.start(self._sink)
        except Exception as exc:  # a source's bug must not end the supervision of the others
            self._start_failed(slot, str(exc) or type(exc).__name__)
            return
        slot.is_running = True
        slot.started_at = self._clock()
        if slot.is_reported:
            log.info("source_restarted", source=source.name, attempts=slot.attempts + 1)
            self._emit(self._alerts.source_restarted(source.name, attempts=slot.attempts + 1))
        slot.attempts = 0
        slot.is_reported = False

    def _died(self, slot: _Slot, reason: str, now: float) -> None:
        slot.source.stop()  # release what the dead source still holds before starting it again
        slot.is_running = False
        has_run_long = now - slot.started_at >= self.max_backoff_s
        slot.delay_s = self.initial_backoff_s if has_run_long or not slot.delay_s else self._next_delay(slot)
        slot.retry_at = now + slot.delay_s
        slot.is_reported = True
        log.error("source_failed", source=slot.source.name, error=reason, retry_in_s=slot.delay_s)
        self._emit(self._alerts.source_failed(slot.source.name, reason, retry_in_s=slot.delay_s))

    def _start_failed(self, slot: _Slot, error: str) -> None:
        slot.delay_s = self._next_delay(slot) if slot.delay_s else self.initial_backoff_s
        slot.retry_at = self._clock() + slot.delay_s
        slot.attempts += 1
        if slot.is_reported:
            log.warning("source_restart_failed", source=slot.source.name, error=error, attempts=slot.attempts,
                        retry_in_s=slot.delay_s)
            return
        slot.is_reported = True
        log.error("source_start_failed", source=slot.source.name, error=error, retry_in_s=slot.delay_s)
        self._emit(self._alerts.source_failed(slot.source.name, error, retry_in_s=slot.delay_s))

    def _next_delay(self, slot: _Slot) -> float:
        return min(slot.delay_s * 2, self.max_backoff_s)
