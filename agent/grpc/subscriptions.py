"""Fan-out: every alert to the spool and to each subscriber whose filter passes it, never blocking.

The engine thread calls `Fanout.publish` (through `GrpcOutput.emit`). It numbers the alert,
appends it to the spool and offers it to every subscriber's bounded queue. A full queue does
not wait: the alert is counted into a `Gap` at the queue's tail (consecutive misses coalesce
into one gap), so a stalled subscriber costs the engine one counter increment per alert and
never slows the others. Each subscriber's gRPC handler thread drains its own queue.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import structlog

from agent.alert import Alert
from agent.grpc._gen.falco_agent.v1 import alerts_pb2 as pb
from agent.grpc.convert import alert_response_bytes, alert_to_proto, legacy_response
from agent.grpc.filters import AlertPredicate
from agent.grpc.spool import Spool, SpoolHole

__all__ = ["Fanout", "Gap", "GrpcOutput", "Published", "ResumeOutOfRange", "Subscription"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Gap:
    """Alerts a subscriber did not get, between the ones before and after it in its stream."""

    missed: int
    first_missed_seq: int
    last_missed_seq: int

    def response_bytes(self) -> bytes:
        gap = pb.Gap(missed=self.missed, first_missed_seq=self.first_missed_seq, last_missed_seq=self.last_missed_seq)
        return pb.SubscribeResponse(gap=gap).SerializeToString()


class ResumeOutOfRange(ValueError):
    """`resume_after` names a sequence number this agent has not issued yet."""


class Published:
    """One numbered alert as fan-out hands it to subscribers: shared, serialized once."""

    __slots__ = ("_legacy", "_msg", "_response", "alert_bytes", "priority", "rule", "seq", "source", "tags")

    def __init__(self, seq: int, msg: pb.Alert, alert_bytes: bytes) -> None:
        self.seq = seq
        self.priority = msg.priority - 1  # Falco numbering, as filters take it
        self.source = msg.source
        self.rule = msg.rule
        self.tags: Sequence[str] = msg.tags
        self.alert_bytes = alert_bytes
        self._msg = msg
        self._response: bytes | None = None
        self._legacy: bytes | None = None

    @classmethod
    def from_record(cls, seq: int, payload: bytes) -> Published:
        return cls(seq, pb.Alert.FromString(payload), payload)

    def matches(self, predicate: AlertPredicate) -> bool:
        return predicate(self.priority, self.source, self.rule, self.tags)

    def response_bytes(self) -> bytes:
        """`SubscribeResponse{alert}` bytes; computed once, whichever thread asks first."""
        if self._response is None:
            self._response = alert_response_bytes(self.alert_bytes)
        return self._response

    def legacy_bytes(self) -> bytes:
        """Falco's `falco.outputs.response` bytes; computed once."""
        if self._legacy is None:
            self._legacy = legacy_response(self._msg).SerializeToString()
        return self._legacy


class _GapRun:
    __slots__ = ("first", "last", "missed")

    def __init__(self, seq: int) -> None:
        self.first = self.last = seq
        self.missed = 1


class Subscription:
    """One subscriber's bounded queue. `offer` (engine thread) never blocks; `take` (handler) waits."""

    def __init__(self, predicate: AlertPredicate, capacity: int) -> None:
        self.predicate = predicate
        self.capacity = capacity
        self._items: deque[Published | _GapRun] = deque()
        self._queued = 0  # alerts in _items, gap markers not counted
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._idle = False
        self.closed = False
        self.offered = 0
        self.missed = 0

    def offer(self, item: Published) -> None:
        with self._lock:
            self.offered += 1
            if self._queued < self.capacity:
                self._items.append(item)
                self._queued += 1
            else:
                self.missed += 1
                tail = self._items[-1] if self._items else None
                if isinstance(tail, _GapRun):
                    tail.missed += 1
                    tail.last = item.seq
                else:
                    self._items.append(_GapRun(item.seq))
            wake, self._idle = self._idle, False
        if wake:
            self._wakeup.set()

    def take(self, timeout_s: float) -> list[Published | Gap]:
        """Everything queued, oldest first; waits up to timeout_s when empty; empty once closed."""
        with self._lock:
            if not self._items and not self.closed:
                self._idle = True
                self._wakeup.clear()
        if self._idle:
            self._wakeup.wait(timeout_s)
        with self._lock:
            self._idle = False
            if self.closed:
                return []
            items = list(self._items)
            self._items.clear()
            self._queued = 0
        return [Gap(i.missed, i.first, i.last) if isinstance(i, _GapRun) else i for i in items]

    def close(self) -> None:
        with self._lock:
            self.closed = True
        self._wakeup.set()


class Fanout:
    """The hub between the engine and the gRPC handlers: numbering, spool, subscriber queues."""

    def __init__(self, spool: Spool, *, queue_size: int = 10_000, wait_s: float = 1.0) -> None:
        self.spool = spool
        self.queue_size = queue_size
        self._wait_s = wait_s
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._subs: tuple[Subscription, ...] = ()
        self.published = 0
        self.spool_errors = 0
        self._closed = False

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    def publish(self, alert: Alert) -> int:
        """Number the alert, spool it and offer it to matching subscribers; returns its seq."""
        with self._lock:
            seq = self.spool.next_seq
            msg = alert_to_proto(alert, seq)
            data = msg.SerializeToString()
            try:
                self.spool.append(seq, data)
            except (OSError, RuntimeError) as exc:
                self.spool_errors += 1
                if self.spool_errors == 1 or self.spool_errors % 10_000 == 0:
                    log.warning("spool_append_failed", seq=seq, count=self.spool_errors, error=str(exc))
                if self.spool.next_seq == seq:  # closed: keep numbers unique for live subscribers anyway
                    self.spool.next_seq = seq + 1
            item = Published(seq, msg, data)
            priority, source, rule, tags = int(alert.priority), alert.source, alert.rule, alert.tags
            for sub in self._subs:
                if sub.predicate(priority, source, rule, tags):
                    sub.offer(item)
            self.published += 1
        alert.seq = seq
        return seq

    def wait_for_subscribers(self, count: int, timeout_s: float) -> bool:
        """Block until at least `count` subscribers receive live alerts; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._subs) >= count, timeout_s)

    def subscribe(self, predicate: AlertPredicate) -> Subscription:
        return Subscription(predicate, self.queue_size)

    def stream(self, sub: Subscription, *, resume_after: int | None = None,
               chunk: int = 256) -> Iterator[list[Published | Gap]]:
        """The subscriber's alerts in chunks: retained ones after `resume_after` (if set), then live ones.

        The switch from spool to live happens under the publish lock once the spool has been read
        up to its newest record, so no alert is skipped or repeated there.
        """
        try:
            if resume_after is None:
                self._attach(sub, None)
            else:
                cursor = resume_after
                while not sub.closed:
                    pending: list[Published | Gap] = []
                    for record in self.spool.read(cursor):
                        if isinstance(record, SpoolHole):
                            cursor = record.last_seq
                            pending.append(Gap(record.missed, record.first_seq, record.last_seq))
                        else:
                            item = Published.from_record(*record)
                            cursor = item.seq
                            if item.matches(sub.predicate):
                                pending.append(item)
                        if len(pending) >= chunk:
                            yield pending
                            pending = []
                            if sub.closed:
                                return
                    if pending:
                        yield pending
                    if self._attach(sub, cursor):
                        break
            while not sub.closed:
                items = sub.take(self._wait_s)
                if items:
                    yield items
        finally:
            self.detach(sub)

    def check_resume(self, resume_after: int) -> None:
        """Raise ResumeOutOfRange for a number not issued yet (a client of another agent or spool)."""
        if resume_after > self.spool.last_seq:
            raise ResumeOutOfRange(f"resume_after {resume_after} is past the newest alert {self.spool.last_seq}")

    def retained_range(self) -> tuple[int, int]:
        """(oldest, newest) sequence numbers the spool holds; (0, 0) when it holds none."""
        first, last = self.spool.first_seq, self.spool.last_seq
        return (first, last) if first <= last else (0, 0)

    def recent(self, count: int) -> Iterator[Published]:
        """The newest `count` retained alerts, oldest first."""
        after = max(0, self.spool.last_seq - count)
        for record in self.spool.read(after):
            if not isinstance(record, SpoolHole):
                yield Published.from_record(*record)

    def _attach(self, sub: Subscription, cursor: int | None) -> bool:
        with self._lock:
            if self._closed:
                sub.close()
                return True
            if cursor is not None and self.spool.next_seq - 1 > cursor:
                return False  # more was published while we read: read again
            self._subs = (*self._subs, sub)
            self._changed.notify_all()
        log.info("subscriber_attached", subscribers=len(self._subs), resumed_at=cursor)
        return True

    def detach(self, sub: Subscription) -> None:
        sub.close()
        with self._lock:
            if sub not in self._subs:
                return
            self._subs = tuple(s for s in self._subs if s is not sub)
            self._changed.notify_all()
        log.info("subscriber_detached", subscribers=len(self._subs), offered=sub.offered, missed=sub.missed)

    def get(self, after_seq: int, limit: int, predicate: AlertPredicate) -> Iterator[Published]:
        """At most `limit` retained alerts after `after_seq` that pass the predicate, oldest first."""
        sent = 0
        for record in self.spool.read(after_seq):
            if sent >= limit:
                return
            if isinstance(record, SpoolHole):
                continue
            item = Published.from_record(*record)
            if item.matches(predicate):
                sent += 1
                yield item

    def close(self) -> None:
        """End every stream; later publishes still number alerts but nobody is attached."""
        with self._lock:
            self._closed = True
            subs, self._subs = self._subs, ()
        for sub in subs:
            sub.close()


class GrpcOutput:
    """The `Output` feeding the gRPC API: `emit` numbers, spools and fans out; it never blocks on a client."""

    name = "grpc"

    def __init__(self, fanout: Fanout) -> None:
        self.fanout = fanout

    def emit(self, alert: Alert) -> None:
        self.fanout.publish(alert)

    def flush(self) -> None:
        """Nothing to do: the spool syncs on its own schedule and subscribers drain their queues."""

    def close(self) -> None:
        """The server owns the spool and closes it in `stop()`."""
