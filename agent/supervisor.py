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

The first start is stricter: a source that cannot listen where the configuration says (`ListenError`) ends
`start_sources()`, since an agent that cannot serve its configuration should fail where systemd and Kubernetes see it.

`problems()` tells the agent's health what keeps sources from working now: a source failed or waiting for its
restart, one whose worker has been busy in one step for more than `stuck_after_s` (`ProgressReporting`, logged once
as `source_stuck`), and the supervisor's own thread ended or stuck.
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
from agent.metrics import HealthProblem
from agent.source import EventSink, ListenError, LiveSource, ProgressReporting

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
    error: str = ""
    is_stuck: bool = False

    @property
    def part(self) -> str:
        """The source as health reports name it: name and component (directory and S3 share a name)."""
        return f"source {self.source.name} ({type(self.source).__name__})"


class SourceSupervisor:
    """Starts the sources, notices failures and restarts them; `check()` is one pass (the thread calls it)."""

    def __init__(self, sources: list[LiveSource], sink: EventSink, *, alerts: InternalAlerts,
                 emit: Callable[[Alert], None], initial_backoff_s: float = 1.0, max_backoff_s: float = 60.0,
                 poll_interval_s: float = 1.0, stuck_after_s: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._slots = [_Slot(source) for source in sources]
        self._sink = sink
        self._alerts = alerts
        self._emit = emit
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.poll_interval_s = poll_interval_s
        self.stuck_after_s = stuck_after_s
        self._clock = clock
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pass_started_s: float | None = None  # while the thread is in a pass over the sources

    @property
    def running(self) -> list[LiveSource]:
        return [slot.source for slot in self._slots if slot.is_running]

    def start_sources(self) -> None:
        """Start every source once; one that cannot start is reported, retried later, and the others run.

        A ListenError is raised instead, after the sources started so far are stopped: fatal at the agent's start.
        """
        for slot in self._slots:
            try:
                self._start(slot, is_first=True)
            except ListenError:
                self.stop()
                raise

    def start(self) -> None:
        """Supervise from a daemon thread until `stop()`."""
        thread = threading.Thread(target=self._run, name="source-supervisor", daemon=True)
        # Published only once running: problems() takes a thread that is not alive for one that died.
        thread.start()
        self._thread = thread

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
        try:
            while not self._stopping.wait(self.poll_interval_s):
                self._pass_started_s = self._clock()
                self.check()
                self._pass_started_s = None
        except Exception:  # the thread's boundary: a bug here ends supervision, which problems() then reports
            log.exception("source_supervisor_failed", hint="failed sources are no longer restarted; restart the agent")

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
                else:
                    self._watch_progress(slot)
            elif now >= slot.retry_at:
                self._start(slot)

    def problems(self) -> list[HealthProblem]:
        """What keeps the sources from working now, for the agent's health; empty when all is well or stopping."""
        if self._stopping.is_set():
            return []
        now = self._clock()
        found = []
        thread, pass_started_s = self._thread, self._pass_started_s
        if thread is not None and not thread.is_alive():
            found.append(HealthProblem("source_supervisor", "its thread ended: failed sources are not restarted; "
                                                            "restart the agent"))
        elif pass_started_s is not None and now - pass_started_s > self.stuck_after_s:
            found.append(HealthProblem("source_supervisor", f"stuck for {now - pass_started_s:.0f} s in one pass "
                                                            "(starting or stopping a source)"))
        for slot in self._slots:
            source = slot.source
            if not slot.is_running:
                found.append(HealthProblem(slot.part, f"not running: {slot.error}; next start in "
                                                      f"{max(0.0, slot.retry_at - now):.0f} s"))
            elif isinstance(source, FailureReporting) and (reason := source.failure()) is not None:
                found.append(HealthProblem(slot.part, f"failed: {reason}"))
            elif (busy_s := _busy_s(source)) > self.stuck_after_s:
                found.append(HealthProblem(slot.part, f"stuck: busy in one step for {busy_s:.0f} s (more than "
                                                      f"{self.stuck_after_s:g} s), e.g. blocked reading its input"))
        return found

    def _watch_progress(self, slot: _Slot) -> None:
        """Log once when a source's worker gets stuck, and once when it moves on again."""
        busy_s = _busy_s(slot.source)
        is_stuck = busy_s > self.stuck_after_s
        if is_stuck and not slot.is_stuck:
            log.error("source_stuck", source=slot.source.name, component=type(slot.source).__name__, busy_s=busy_s,
                      hint="its worker is blocked inside one call; /healthz reports it until it moves on")
        elif slot.is_stuck and not is_stuck:
            log.info("source_moving_again", source=slot.source.name, component=type(slot.source).__name__)
        slot.is_stuck = is_stuck

    def _start(self, slot: _Slot, *, is_first: bool = False) -> None:
        source = slot.source
        try:
            source.start(self._sink)
        except Exception as exc:  # a source's bug must not end the supervision of the others
            if is_first and isinstance(exc, ListenError):
                raise
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
        slot.error = reason
        has_run_long = now - slot.started_at >= self.max_backoff_s
        slot.delay_s = self.initial_backoff_s if has_run_long or not slot.delay_s else self._next_delay(slot)
        slot.retry_at = now + slot.delay_s
        slot.is_reported = True
        log.error("source_failed", source=slot.source.name, error=reason, retry_in_s=slot.delay_s)
        self._emit(self._alerts.source_failed(slot.source.name, reason, retry_in_s=slot.delay_s))

    def _start_failed(self, slot: _Slot, error: str) -> None:
        slot.error = error
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


def _busy_s(source: LiveSource) -> float:
    """How long the source's worker has been inside one step; 0 for a source that does not tell."""
    return source.busy_s() if isinstance(source, ProgressReporting) else 0.0
