"""A bounded queue drained by one background thread, so that a slow destination never blocks the engine.

The engine thread calls `offer`, which never waits: when the queue is full the item is dropped and counted, and the
drop is logged once when a burst of drops starts and once, with its count, when it ends. The writer thread hands
batches to a `Destination`; a `DeliveryError` is retried with exponential backoff and jitter until it succeeds or
`stop` gives up at its deadline; a `RejectedError` (the destination refused the batch for good) is counted and the
batch dropped; a `DroppedError` (part of the batch could not be delivered and would be worthless later) counts those
alerts as dropped and the rest as delivered. Everything queued when the writer gives up is counted as dropped:
nothing vanishes uncounted.

Counters are plain ints, changed under the lock when two threads may write them, and read racily by the metrics
endpoint, which is fine under the GIL.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import structlog

from agent.alert import Alert

__all__ = ["AsyncWriter", "Backoff", "DeliveryError", "Destination", "DroppedError", "RejectedError"]

log = structlog.get_logger(__name__)

T = TypeVar("T")


class DeliveryError(Exception):
    """The batch could not be delivered now; a later attempt may succeed."""


class RejectedError(Exception):
    """The destination refused the batch for good; sending it again would not help."""


class DroppedError(Exception):
    """`count` items of the batch were not delivered and are not to be retried; the destination logged why."""

    def __init__(self, message: str, *, count: int) -> None:
        super().__init__(message)
        self.count = count


class Destination(Protocol[T]):
    """Where the writer thread delivers; both methods run on the writer thread only."""

    def send(self, items: list[T]) -> None:
        """Deliver the whole batch or raise DeliveryError / RejectedError."""
        ...

    def release(self) -> None:
        """Free connections, processes or files; called once when the writer thread ends."""
        ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with "equal jitter": each delay is half the capped exponential plus a random half."""

    initial_s: float = 0.5
    max_s: float = 30.0
    multiplier: float = 2.0

    def delay_s(self, attempt: int) -> float:
        """The wait before retry number `attempt` (0 for the first retry)."""
        capped = min(self.max_s, self.initial_s * self.multiplier ** min(attempt, 64))
        return capped / 2 + random.uniform(0, capped / 2)


class AsyncWriter(Generic[T]):
    """Bounded FIFO of items and the thread that delivers them in batches of at most `max_batch`."""

    def __init__(self, name: str, destination: Destination[T], *, max_queue: int, max_batch: int,
                 backoff: Backoff) -> None:
        if max_queue < 1 or max_batch < 1:
            raise ValueError("max_queue and max_batch must be at least 1")
        self.name = name
        self.delivered = 0
        self.failed_attempts = 0
        self.dropped = 0
        self.rejected = 0
        self._destination = destination
        self._max_queue = max_queue
        self._max_batch = max_batch
        self._backoff = backoff
        self._items: deque[T] = deque()
        self._in_flight = 0
        self._closing = False
        self._burst = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"output-{name}", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Items waiting, not counting the batch being delivered."""
        return len(self._items)

    def counters(self) -> dict[str, int]:
        return {"delivered": self.delivered, "dropped": self.dropped, "rejected": self.rejected,
                "failed_attempts": self.failed_attempts, "queue_depth": len(self._items)}

    # ----- engine side ----------------------------------------------------------------------------
    def offer(self, item: T) -> bool:
        """Queue the item now or count it as dropped; never waits for the destination."""
        with self._lock:
            if self._closing or len(self._items) >= self._max_queue:
                self.dropped += 1
                self._burst += 1
                burst = self._burst
                accepted = False
            else:
                self._items.append(item)
                self._changed.notify_all()
                burst, self._burst = self._burst, 0
                accepted = True
        if not accepted and burst == 1:
            log.warning("output_queue_full", output=self.name, capacity=self._max_queue,
                        hint="alerts are being dropped")
        elif accepted and burst:
            log.warning("output_alerts_dropped", output=self.name, count=burst, total=self.dropped)
        return accepted

    # ----- shutdown and tests ---------------------------------------------------------------------
    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until everything offered so far was delivered, rejected or dropped; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._items and not self._in_flight, timeout_s)

    def stop(self, timeout_s: float) -> bool:
        """Refuse new items and deliver what is queued until the deadline; then give up (counted). True if drained."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        drained = self.wait_idle(timeout_s)
        if not drained:
            self._abort.set()
            with self._changed:
                self._changed.notify_all()
        return drained

    def join(self, timeout_s: float) -> bool:
        """Wait for the writer thread to end; what it left queued is counted as dropped. False if it is stuck."""
        self._thread.join(timeout_s)
        with self._lock:
            left = len(self._items)
            self._items.clear()
            self.dropped += left
        if left:
            log.warning("output_alerts_dropped", output=self.name, count=left, total=self.dropped,
                        reason="closed before delivery")
        return not self._thread.is_alive()

    # ----- writer thread --------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while (batch := self._take()) is not None:
                self._deliver(batch)
                with self._changed:
                    self._in_flight = 0
                    self._changed.notify_all()
        finally:
            self._destination.release()

    def _take(self) -> list[T] | None:
        with self._changed:
            self._changed.wait_for(lambda: self._items or self._closing or self._abort.is_set())
            if self._abort.is_set() or not self._items:
                return None
            count = min(self._max_batch, len(self._items))
            batch = [self._items.popleft() for _ in range(count)]
            self._in_flight = count
            return batch

    def _deliver(self, batch: list[T]) -> None:
        attempt = 0
        started = time.monotonic()
        while True:
            try:
                self._destination.send(batch)
            except DroppedError as exc:
                with self._lock:
                    self.dropped += exc.count
                self.delivered += len(batch) - exc.count
                return
            except RejectedError as exc:
                self.rejected += len(batch)
                log.error("output_alerts_rejected", output=self.name, count=len(batch), error=str(exc))
                return
            except DeliveryError as exc:
                self.failed_attempts += 1
                if attempt == 0:
                    log.warning("output_delivery_failed", output=self.name, error=str(exc),
                                hint="retrying with backoff")
                if self._abort.wait(self._backoff.delay_s(attempt)):
                    with self._lock:
                        self.dropped += len(batch)
                    log.warning("output_alerts_dropped", output=self.name, count=len(batch), total=self.dropped,
                                      reason="gave up at close deadline", error=str(exc))
                    return
                attempt += 1
                continue
            self.delivered += len(batch)
            if attempt:
                log.info("output_delivery_recovered", output=self.name, failed_attempts=attempt,
                               outage_s=round(time.monotonic() - started, 3))
            return


class QueuedOutput(Generic[T]):
    """What every output delivering through an AsyncWriter shares: `emit` only queues, never waits.

    A subclass sets `name` and `_writer`, defines `close()` (its own deadline for what is in flight),
    and turns an alert into a queued item with `_item` when it needs more than the alert.
    """

    name: str
    _writer: AsyncWriter[T]

    def emit(self, alert: Alert) -> None:
        self._writer.offer(self._item(alert))

    def _item(self, alert: Alert) -> T:
        return alert  # type: ignore[return-value]

    def flush(self) -> None:
        """Nothing to do: the writer thread delivers as soon as alerts are queued (this must not wait)."""

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every alert emitted so far was delivered, rejected or dropped."""
        return self._writer.wait_idle(timeout_s)

    def counters(self) -> dict[str, int]:
        """delivered, dropped, rejected, failed_attempts and queue_depth, for the metrics endpoint."""
        return self._writer.counters()

    @property
    def delivered(self) -> int:
        return self._writer.delivered

    @property
    def dropped(self) -> int:
        return self._writer.dropped

    @property
    def failed_attempts(self) -> int:
        return self._writer.failed_attempts
