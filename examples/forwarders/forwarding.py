"""The forwarding loop: subscribe, batch, deliver with retries, then acknowledge the batch's last seq in a state file.

Guarantees. Nothing is lost: the state file only ever holds a sequence number whose alerts the remote accepted (or
refused for good, see `Outcome.rejected`), and a restart resubscribes with `resume_after` set to it, so the agent's
spool replays the rest. A remote that is down is retried with capped exponential backoff and jitter, without a limit
on the count; meanwhile the read-ahead queue fills, the subscription stops being read, the agent's per-subscriber
queue overflows into a gap, and the client fills the gap from the spool: backpressure, not loss. Only alerts the
spool no longer holds arrive as a `Gap`, which is logged and counted (`missed`). Nothing is sent twice, except in
one window: the remote accepted a batch but its answer was lost (timeout, connection reset, crash before the state
file was written); that batch is sent again. Sinks make that resend harmless or findable (Elasticsearch `_id` from
hostname and seq, the seq in Splunk events, a deterministic webhook `uuid`).
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
import orjson
import structlog
from forwarder_config import AgentSettings, DeliverySettings, FilterSettings, ForwarderSettings

from agent.alert import Alert
from agent.atomic_file import replace_atomically
from agent.grpc.client import AlertClient, Gap, make_filter
from agent.grpc.tls import ClientTls
from agent.priority import Priority

__all__ = ["Backoff", "DeliveryFailed", "Forwarder", "ForwarderStats", "Outcome", "Sink", "StateFile"]

log = structlog.get_logger(__name__)


class DeliveryFailed(Exception):
    """The whole attempt failed and may succeed later (connection refused, timeout, 5xx, 429)."""

    def __init__(self, reason: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class Outcome:
    """What an attempt left over: alerts to retry, and alerts the remote refused for good (with the reason)."""

    retry: list[Alert] = field(default_factory=list)
    rejected: list[tuple[Alert, str]] = field(default_factory=list)
    retry_after_s: float | None = None
    reason: str = ""


class Sink(Protocol):
    """A remote that takes alerts; `deliver` is called again with `Outcome.retry` until it is empty."""

    name: str

    def deliver(self, alerts: list[Alert]) -> Outcome:
        """Send the alerts; raise DeliveryFailed when nothing was accepted and a retry may help."""
        ...

    def close(self) -> None: ...


class StateFile:
    """The last acknowledged sequence number, replaced atomically (write, fsync, rename, fsync the folder)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def read(self) -> int | None:
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            raise RuntimeError(f"state file {self.path} is unreadable ({exc}); fix or remove it") from None
        return int(data["last_seq"])

    def write(self, seq: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(self.path, orjson.dumps({"last_seq": seq, "updated_s": round(time.time(), 3)}))


class Backoff:
    """Capped exponential delays with equal jitter: each delay is in [d/2, d], d doubling up to `max_s`."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s, self.max_s = initial_s, max_s
        self._next_s = initial_s

    def next_delay_s(self) -> float:
        delay = self._next_s
        self._next_s = min(self._next_s * 2, self.max_s)
        return delay / 2 + random.uniform(0, delay / 2)

    def reset(self) -> None:
        self._next_s = self.initial_s


class ForwarderStats:
    """Counters a test or a health check can wait on; thread-safe."""

    def __init__(self) -> None:
        self.delivered = self.rejected = self.missed = self.failures = self.batches = 0
        self.last_acked_seq: int | None = None
        self._changed = threading.Condition()

    def add(self, **counts: int) -> None:
        with self._changed:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)
            self._changed.notify_all()

    def acked(self, seq: int) -> None:
        with self._changed:
            self.last_acked_seq = seq
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[ForwarderStats], bool], timeout_s: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout_s)


_END = object()  # the reader thread put this after its last item


class Forwarder:
    """Moves alerts from one agent subscription to one sink; `run()` blocks until `stop()` or a fatal error."""

    def __init__(self, settings: ForwarderSettings, sink: Sink, *, name: str) -> None:
        self.settings = settings
        self.sink = sink
        self.state = StateFile(settings.delivery.state_file)
        self.stats = ForwarderStats()
        self.log = log.bind(forwarder=name, sink=sink.name)
        self._delivery: DeliverySettings = settings.delivery
        self._client = _make_client(settings.agent)
        self._stopping = threading.Event()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, self._delivery.queue_size))
        self._reader_error: BaseException | None = None

    def stop(self) -> None:
        """Ask `run()` to return: the subscription ends and no new delivery attempt starts. Thread-safe."""
        self._stopping.set()
        self._client.close()

    def run(self) -> None:
        """Deliver until stopped; raises grpc.RpcError when the agent refuses the subscription for good."""
        resume_after = self._starting_point()
        if resume_after is None:
            return  # stopped before the agent answered
        self.log.info("forwarder_started", resume_after=resume_after, state_file=str(self.state.path))
        reader = threading.Thread(target=self._read, args=(resume_after,), name="forwarder-reader", daemon=True)
        reader.start()
        try:
            for batch in self._batches():
                self._deliver(batch)
        finally:
            self.stop()
            reader.join(timeout=5.0)
            self.sink.close()
            self.log.info("forwarder_stopped", delivered=self.stats.delivered, rejected=self.stats.rejected,
                          missed=self.stats.missed, failures=self.stats.failures,
                          last_acked_seq=self.stats.last_acked_seq)
        if self._reader_error is not None:
            raise self._reader_error

    def _starting_point(self) -> int | None:
        """The state file's seq; on a first start, 0 (`earliest`) or the agent's last seq, written down at once."""
        saved = self.state.read()
        if saved is not None:
            self.stats.acked(saved)
            return saved
        if self._delivery.start_at == "earliest":
            return 0
        backoff = Backoff(self._delivery.backoff_initial_s, self._delivery.backoff_max_s)
        while not self._stopping.is_set():
            try:
                last_seq = int(self._client.version().last_seq)
            except grpc.RpcError as exc:
                self.log.warning("agent_unreachable", code=exc.code().name)
                self._stopping.wait(backoff.next_delay_s())
                continue
            self.state.write(last_seq)  # so a crash before the first delivery still resumes from here
            self.stats.acked(last_seq)
            return last_seq
        return None

    def _read(self, resume_after: int) -> None:
        """Subscription → bounded queue; a full queue blocks here, which is the backpressure on the agent."""
        filters = self.settings.filters
        try:
            for item in self._client.subscribe(allow=[_filter(f) for f in filters.allow],
                                               deny=[_filter(f) for f in filters.deny], resume_after=resume_after):
                while not self._stopping.is_set():
                    try:
                        self._queue.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
        except grpc.RpcError as exc:
            if not self._stopping.is_set():
                self.log.error("subscription_failed", code=exc.code().name, details=exc.details())
                self._reader_error = exc
        finally:
            self._stopping.set()
            self._put_end()

    def _put_end(self) -> None:
        while True:
            try:
                self._queue.put(_END, timeout=0.2)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()  # stopping: what is dropped here was never acknowledged

    def _batches(self) -> Iterator[list[Alert | Gap]]:
        """Up to `batch_size` items, or fewer once `batch_max_wait_s` passed since the batch's first item.

        A batch cut short by the end of the subscription (stop or fatal error) is not delivered: it was never
        acknowledged, so the next run gets it again from the spool.
        """
        size, wait_s = max(1, self._delivery.batch_size), self._delivery.batch_max_wait_s
        while True:
            item = self._queue.get()
            if item is _END:
                return
            batch: list[Alert | Gap] = [item]  # type: ignore[list-item]
            deadline = time.monotonic() + wait_s
            while len(batch) < size:
                try:
                    item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0001))
                except queue.Empty:
                    break
                if item is _END:
                    return
                batch.append(item)  # type: ignore[arg-type]
            yield batch

    def _deliver(self, batch: list[Alert | Gap]) -> None:
        """Deliver the batch's alerts until none is left to retry, then acknowledge its last seq."""
        alerts: list[Alert] = []
        last_seq = 0
        for item in batch:
            if isinstance(item, Gap):
                self.log.warning("alerts_missed", count=item.missed, first_seq=item.first_missed_seq,
                                 last_seq=item.last_missed_seq, reason="no longer in the agent's spool")
                self.stats.add(missed=item.missed)
                last_seq = max(last_seq, item.last_missed_seq)
            else:
                alerts.append(item)
                last_seq = max(last_seq, item.seq)
        pending = alerts
        backoff = Backoff(self._delivery.backoff_initial_s, self._delivery.backoff_max_s)
        while pending:
            try:
                outcome = self.sink.deliver(pending)
            except DeliveryFailed as exc:
                outcome = Outcome(retry=pending, retry_after_s=exc.retry_after_s, reason=exc.reason)
            if outcome.rejected:
                self._dead_letter(outcome.rejected)
            self.stats.add(delivered=len(pending) - len(outcome.retry) - len(outcome.rejected))
            if not outcome.retry:
                break
            delay_s = backoff.next_delay_s()
            if outcome.retry_after_s is not None:
                delay_s = max(delay_s, outcome.retry_after_s)
            self.stats.add(failures=1)
            self.log.warning("delivery_failed", reason=outcome.reason, pending=len(outcome.retry),
                             first_seq=outcome.retry[0].seq, retry_in_s=round(delay_s, 3))
            pending = outcome.retry
            if self._stopping.wait(delay_s):
                return  # not acknowledged: the next run sends the batch again
        self.state.write(last_seq)
        self.stats.add(batches=1)
        self.stats.acked(last_seq)

    def _dead_letter(self, rejected: list[tuple[Alert, str]]) -> None:
        """Alerts the remote refused for good: logged, counted, and appended to the dead-letter file if set."""
        self.stats.add(rejected=len(rejected))
        self.log.error("alerts_rejected", count=len(rejected), first_seq=rejected[0][0].seq, reason=rejected[0][1])
        path = self._delivery.dead_letter_file
        if not path:
            return
        with open(path, "ab") as out:
            for alert, reason in rejected:
                out.write(orjson.dumps({"seq": alert.seq, "reason": reason, "alert": alert.falco_json()}) + b"\n")


def _filter(settings: FilterSettings) -> Any:
    priority = Priority.parse(settings.min_priority) if settings.min_priority else None
    return make_filter(min_priority=priority, sources=settings.sources, rules=settings.rules,
                       tags_any=settings.tags_any, tags_all=settings.tags_all)


def _make_client(agent: AgentSettings) -> AlertClient:
    tls = None
    if agent.tls_ca or agent.tls_cert:
        tls = ClientTls(ca=agent.tls_ca, cert=agent.tls_cert, key=agent.tls_key, server_name=agent.tls_server_name)
    if agent.address:
        return AlertClient(address=agent.address, tls=tls, backoff_max_s=agent.reconnect_backoff_max_s)
    return AlertClient(socket_path=agent.socket_path, backoff_max_s=agent.reconnect_backoff_max_s)
