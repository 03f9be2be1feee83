"""The bounded queue between live sources and the engine, counted in events.

A source either offers a batch without waiting (the webhook: when there is no room for the whole
batch it answers 503 so the sender retries) or puts it, waiting for room (file tailers). A batch
may carry a callback that the consumer runs once every event of the batch was evaluated and its
alerts handed to the outputs: sources use it to persist checkpoints only for work really done.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.event import Event

Done = Callable[[], None]


@dataclass(frozen=True, slots=True)
class Batch:
    events: Sequence[Event]
    on_done: Done | None = None


class QueueClosed(Exception):
    """The queue no longer accepts events (the agent is stopping)."""


class EventQueue:
    """Thread-safe, bounded by the number of queued events; a batch is accepted whole or not at all.

    A batch larger than the whole capacity is accepted when the queue is empty, so that no batch
    can be refused forever.
    """

    def __init__(self, capacity_events: int) -> None:
        if capacity_events < 1:
            raise ValueError("queue capacity must be at least one event")
        self.capacity = capacity_events
        self._batches: deque[Batch] = deque()
        self._depth = 0
        self._closed = False
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)

    @property
    def depth(self) -> int:
        """Events queued now."""
        return self._depth

    def _fits(self, count: int) -> bool:
        return self._depth + count <= self.capacity or self._depth == 0

    def _append(self, batch: Batch) -> None:
        self._batches.append(batch)
        self._depth += len(batch.events)
        self._not_empty.notify()

    def offer(self, events: Sequence[Event], on_done: Done | None = None) -> bool:
        """Queue the whole batch now, or return False when it does not fit. Never waits."""
        with self._lock:
            if self._closed:
                raise QueueClosed
            if not self._fits(len(events)):
                return False
            self._append(Batch(events, on_done))
            return True

    def put(self, events: Sequence[Event], on_done: Done | None = None, *, timeout_s: float | None = None) -> bool:
        """Queue the whole batch, waiting for room; False when `timeout_s` passed first."""
        with self._lock:
            if not self._not_full.wait_for(lambda: self._closed or self._fits(len(events)), timeout_s):
                return False
            if self._closed:
                raise QueueClosed
            self._append(Batch(events, on_done))
            return True

    def get(self, *, timeout_s: float | None = None) -> Batch | None:
        """The next batch; None on timeout, or when the queue is closed and drained."""
        with self._lock:
            if not self._not_empty.wait_for(lambda: self._batches or self._closed, timeout_s):
                return None
            if not self._batches:
                return None
            batch = self._batches.popleft()
            self._depth -= len(batch.events)
            self._not_full.notify_all()
            return batch

    def close(self) -> None:
        """Refuse new batches; what is queued can still be taken."""
        with self._lock:
            self._closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
