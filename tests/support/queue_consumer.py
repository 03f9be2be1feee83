"""The engine's side of an EventQueue in source tests: take batches, record ids, acknowledge."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from agent.event import Event
from agent.event_queue import EventQueue

WAIT_S = 10.0


def eventually(predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    """Whether `predicate` holds within `timeout_s`, checked on a short timed wait."""
    deadline = time.monotonic() + timeout_s
    ticker = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            return False
        ticker.wait(0.01)
    return True


def cloudtrail_id(event: Event) -> str:
    return str(event.payload["eventID"])


class Consumer:
    """Acknowledges each batch with on_done, then records its events' ids (`id_of`).

    `ack_limit` stops it after that many acknowledged batches; `hold` keeps that many batches and acknowledges
    them in reverse, as concurrent consumers would finish them out of order.
    """

    def __init__(self, queue: EventQueue, *, ack_limit: int | None = None, hold: int = 1,
                 id_of: Callable[[Event], str] = cloudtrail_id) -> None:
        self.queue = queue
        self.ack_limit = ack_limit
        self.hold = hold
        self.id_of = id_of
        self.event_ids: list[str] = []
        self.acked = 0
        self._held: list[tuple[list[str], Callable[[], None] | None]] = []
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set() and (self.ack_limit is None or self.acked < self.ack_limit):
            batch = self.queue.get(timeout_s=0.02)
            if batch is not None:
                self._held.append(([self.id_of(e) for e in batch.events], batch.on_done))
            if self._held and (len(self._held) >= self.hold or batch is None):
                self._release()

    def _release(self) -> None:
        # Acknowledged before its ids are visible: a test that saw an id may stop the source and find the batch
        # checkpointed (seen first, a stop could come between the two and the restart would read it again).
        for event_ids, on_done in reversed(self._held):
            if on_done is not None:
                on_done()
            with self._changed:
                self.event_ids.extend(event_ids)
                self.acked += 1
                self._changed.notify_all()
        self._held.clear()

    def wait_for(self, count: int, timeout_s: float = WAIT_S) -> list[str]:
        with self._changed:
            self._changed.wait_for(lambda: len(self.event_ids) >= count, timeout_s)
            return list(self.event_ids)

    def wait_acked(self, count: int, timeout_s: float = WAIT_S) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.acked >= count, timeout_s)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(WAIT_S)


@contextmanager
def running(source: Any, *, capacity: int = 10_000, **consumer: Any) -> Iterator[Consumer]:
    """Run a LiveSource into a real EventQueue drained by a Consumer; stop both, source first, on the way out."""
    queue = EventQueue(capacity)
    consumer_ = Consumer(queue, **consumer)
    source.start(queue)
    try:
        yield consumer_
    finally:
        source.stop()
        consumer_.stop()
