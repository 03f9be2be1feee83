"""Consume an SQS queue of CloudTrail log notifications as the live `aws_cloudtrail` source.

Scale-out: ingesting an organisation's CloudTrail beyond one machine
--------------------------------------------------------------------
Point the organisation trail's SNS notifications (or the log bucket's S3 event notifications) at one SQS
queue, and run as many agents as the volume needs, each with an `sqs` input on that queue. SQS hands each
message to one receiver at a time: while an agent works on it the message is invisible to the others, and
the agent keeps it so (ChangeMessageVisibility) for as long as it needs, a large file or a full event queue
included. The agent deletes the message only once every record of every file it names was evaluated, so each
file is processed by exactly one agent while that agent lives. When an agent dies or stops mid-way, its
unfinished messages become visible again and another agent (or the restarted one) processes them: nothing is
lost. Adding agents adds throughput; no coordination between them is needed beyond the queue itself.

Guarantees and their limits: delivery is at least once. A record is evaluated twice only when an agent
stopped after handing part of a message's records to the engine, when a visibility extension or a delete
fails for longer than the retries, or when the agent's work on one message outlives SQS's 12-hour visibility
cap. A message that cannot be processed (unrecognised body, missing object, S3 error) is retried through
redelivery and, after `max_receive_count` tries, moved to the dead-letter queue with the reason.

Threads: one receiver long-polls and keeps at most `2 * concurrency` (at least 10) messages in flight;
`concurrency` workers download, decode and hand events to the sink; one housekeeper deletes finished
messages in batches and extends the visibility of those in flight. A thread ended by a bug is reported by
`failure()`, so that the supervisor stops and restarts the consumer (the message a dying worker held is handed
back first); `start()` works again after `stop()`.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import structlog

from agent.errors import AgentError, ConfigError, DecodeError
from agent.event import Event
from agent.location import Location
from agent.source import EventSink
from sources.cloudtrail.aws import AWS_ERRORS, AwsSettings, backoff_s, describe, make_client, make_session
from sources.cloudtrail.checkpoint import PUT_WAIT_S, ReadTally, hand_over
from sources.cloudtrail.decoder import SOURCE, CloudTrailDecoder
from sources.cloudtrail.notifications import ObjectRef, parse_notification
from sources.cloudtrail.objects import DEFAULT_LIMITS, DecodedObject, ObjectLimits, read_s3_object
from sources.cloudtrail.sqs_calls import SQS_BATCH, HeldMessage, QueueCalls
from sources.cloudtrail.sqs_housekeeper import Housekeeper

log = structlog.get_logger(__name__)

#: Events per sink batch, so that a large file flows through the bounded queue instead of waiting for all its room.
_BATCH_EVENTS = 1000
_STOP_JOIN_S = 5.0
_COUNTERS = ("messages_received", "messages_deleted", "messages_poisoned", "messages_failed", "messages_released",
             "messages_abandoned", "sqs_errors", "s3_errors", "visibility_extensions")
_DEFAULT_AWS = AwsSettings()  # frozen: one shared default is safe


class SqsTrailConsumer:
    """A LiveSource reading the CloudTrail files announced on an SQS queue; see the module docstring."""

    name = SOURCE

    def __init__(self, *, queue_url: str, aws: AwsSettings = _DEFAULT_AWS, concurrency: int = 4,
                 wait_time_s: int = 10, visibility_timeout_s: int = 300, max_receive_count: int = 5,
                 dead_letter_queue_url: str = "", hostname: str = "", limits: ObjectLimits = DEFAULT_LIMITS) -> None:
        where = Location(file=queue_url)
        if not queue_url:
            raise ConfigError("an SQS queue URL is required", where)
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, not {concurrency}", where)
        if not 0 <= wait_time_s <= 20:
            raise ConfigError(f"wait_time_s must be between 0 and 20 (SQS's limit), not {wait_time_s}", where)
        if not 1 <= visibility_timeout_s <= 43200:
            raise ConfigError(f"visibility_timeout_s must be between 1 and 43200, not {visibility_timeout_s}", where)
        if max_receive_count < 1:
            raise ConfigError(f"max_receive_count must be at least 1, not {max_receive_count}", where)
        self.queue_url = queue_url
        self._aws = aws
        self._concurrency = concurrency
        self._wait_time_s = wait_time_s
        self._visibility_timeout_s = visibility_timeout_s
        self._max_receive_count = max_receive_count
        self._dlq_url = dead_letter_queue_url
        self._hostname = hostname
        self._limits = limits
        self._origin = "sqs://" + queue_url.rstrip("/").rsplit("/", 1)[-1]
        self._max_in_flight = max(2 * concurrency, SQS_BATCH)
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._in_flight: set[HeldMessage] = set()
        self._work: queue.Queue[HeldMessage] = queue.Queue()
        self._stopping = threading.Event()
        self._housekeeper: Housekeeper | None = None
        self._threads: list[threading.Thread] = []
        self._is_started = False
        self._failure: str | None = None
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._tally = ReadTally()
        self._sink: EventSink | None = None
        self._calls: QueueCalls  # made by start()
        self._s3: Any = None

    # --- LiveSource ---------------------------------------------------------------------------------------------

    def start(self, sink: EventSink) -> None:
        """Check the queues and start the threads; again after `stop()` (the supervisor restarts so)."""
        if self._is_started or any(thread.is_alive() for thread in self._threads):
            raise AgentError("the SQS consumer was already started", Location(file=self.queue_url))
        try:
            session = make_session(self._aws)
            sqs = make_client(session, "sqs", self._aws)
            self._s3 = make_client(session, "s3", self._aws)
            if "://" not in self.queue_url:  # a queue name, as Falco's cloudtrail plugin takes (`sqs://NAME`)
                self.queue_url = sqs.get_queue_url(QueueName=self.queue_url)["QueueUrl"]
            for url in filter(None, (self.queue_url, self._dlq_url)):
                sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
        except AWS_ERRORS as exc:
            raise AgentError(f"cannot use the SQS queue: {describe(exc)}", Location(file=self.queue_url)) from None
        self._calls = QueueCalls(sqs, self.queue_url, count=self._count)
        self._sink = sink
        self._failure = None
        self._stopping.clear()
        self._housekeeper = Housekeeper(self._calls, visibility_timeout_s=self._visibility_timeout_s,
                                        stopping=self._stopping, held=self._held, delete=self._delete,
                                        forget=self._forget, count=self._count)
        self._is_started = True
        self._threads = [self._thread(self._receive_loop, "sqs-receiver"),
                         self._thread(self._housekeeper.run, "sqs-housekeeper")]
        self._threads += [self._thread(self._work_loop, f"sqs-worker-{index}") for index in range(self._concurrency)]
        for thread in self._threads:
            thread.start()
        log.info("sqs_consumer_started", queue_url=self.queue_url, concurrency=self._concurrency)

    def stop(self) -> None:
        """Stop receiving; a message not entirely handed to the sink is abandoned, to be redelivered.

        Messages whose batches are all queued stay in flight: their on_done, run when the runtime drains
        the queue after stopping its sources, still deletes them.
        """
        if not self._is_started:
            return
        with self._lock:
            self._stopping.set()
            self._room.notify_all()
        assert self._housekeeper is not None
        self._housekeeper.wake()
        receiver, housekeeper, *workers = self._threads
        receiver.join(timeout=self._wait_time_s + _STOP_JOIN_S)
        for worker in workers:
            worker.join(timeout=_STOP_JOIN_S)
        leftovers: list[HeldMessage] = []
        while True:
            try:
                leftovers.append(self._work.get_nowait())
            except queue.Empty:
                break
        self._release(leftovers)
        housekeeper.join(timeout=_STOP_JOIN_S)
        if not housekeeper.is_alive():  # it finished on its way out, unless a bug ended it first
            self._housekeeper.finish()
        for thread in self._threads:
            if thread.is_alive():
                log.warning("sqs_thread_not_stopped", thread=thread.name)
        self._is_started = False
        log.info("sqs_consumer_stopped", queue_url=self.queue_url, **self.metrics())

    def failure(self) -> str | None:
        """Why a thread of the consumer ended on its own (a bug); None while they all run and after `stop()`."""
        return self._failure if self._is_started else None

    def metrics(self) -> dict[str, Any]:
        with self._lock:
            counters: dict[str, Any] = dict(self._counters)
            counters["messages_in_flight"] = len(self._in_flight)
        counters.update(self._tally.as_metrics())
        return counters

    def _thread(self, loop: Callable[[], None], name: str) -> threading.Thread:
        def run() -> None:
            try:
                loop()
            except Exception as exc:  # a bug: kept for failure(), so that the supervisor restarts the consumer
                log.exception("sqs_thread_failed", thread=name, queue_url=self.queue_url)
                self._failure = self._failure or f"{name}: {type(exc).__name__}: {exc}"

        return threading.Thread(target=run, name=name, daemon=True)

    # --- receiver -----------------------------------------------------------------------------------------------

    def _receive_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            with self._lock:
                room = self._max_in_flight - len(self._in_flight)
                if room <= 0:
                    self._room.wait(timeout=1.0)
                    continue
            try:
                messages = self._calls.receive(max_messages=room, wait_time_s=self._wait_time_s,
                                               visibility_timeout_s=self._visibility_timeout_s)
            except AWS_ERRORS as exc:
                failures += 1
                self._calls.failed("sqs", "receive_message", exc)
                self._stopping.wait(backoff_s(failures))
                continue
            failures = 0
            if not messages:
                continue
            self._count("messages_received", len(messages))
            with self._lock:
                is_stopping = self._stopping.is_set()
                if not is_stopping:
                    self._in_flight.update(messages)
                    for message in messages:
                        self._work.put(message)
            if is_stopping:
                self._release(messages)

    # --- workers ------------------------------------------------------------------------------------------------

    def _work_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                message = self._work.get(timeout=PUT_WAIT_S * 2)
            except queue.Empty:
                continue
            if self._stopping.is_set():
                self._release([message])
                break
            try:
                self._process(message)
            except Exception:
                # A bug ends this thread (failure() reports it): hand back the message first, unless all of it
                # was put, in which case its on_done still deletes it.
                if not message.is_submitted:
                    self._abandon(message, batches_put=message.batches_put)
                raise

    def _process(self, message: HeldMessage) -> None:
        if message.receive_count > self._max_receive_count:
            self._poison(message, f"received {message.receive_count} times without being completed")
            return
        origin = f"{self._origin}/{message.message_id}"
        try:
            notification = parse_notification(message.body, origin=origin)
        except DecodeError as exc:
            self._fail(message, f"not a recognised notification: {exc}")
            return
        # Every object is read before any event is handed over, so that a failing object leaves nothing
        # evaluated that the retry would evaluate again.
        decoded: list[DecodedObject] = []
        for ref in notification.objects:
            if self._stopping.is_set():
                self._release([message])
                return
            try:
                decoded.append(self._read(ref))
            except AWS_ERRORS as exc:
                self._calls.failed("s3", "get_object", exc, object=ref.name)
                self._fail(message, f"cannot read {ref.name}: {describe(exc)}")
                return
        self._submit(message, [obj.events for obj in decoded])

    def _read(self, ref: ObjectRef) -> DecodedObject:
        decoder = CloudTrailDecoder(hostname=self._hostname)  # per object: the decoder is not thread-safe
        decoded = read_s3_object(self._s3, ref.bucket, ref.key, decoder=decoder, limits=self._limits)
        # A corrupt or too large file stays so: it is counted, reported and skipped, never a reason to retry the
        # message.
        self._tally.count(decoded, decoder)
        return decoded

    def _submit(self, message: HeldMessage, event_lists: Iterable[list[Event]]) -> None:
        assert self._sink is not None
        batches = [events[start:start + _BATCH_EVENTS] for events in event_lists
                   for start in range(0, len(events), _BATCH_EVENTS)]
        on_done = partial(self._batch_done, message)
        for batch in batches:
            with self._lock:
                message.pending += 1
            if not hand_over(self._sink, batch, on_done, self._stopping):
                with self._lock:
                    message.pending -= 1
                self._abandon(message, batches_put=message.batches_put)
                return
            message.batches_put += 1
        with self._lock:
            message.is_submitted = True
            is_complete = message.pending == 0
        if is_complete:
            self._complete(message)

    def _batch_done(self, message: HeldMessage) -> None:
        """on_done of every batch: the message is complete once all its batches were evaluated."""
        with self._lock:
            message.pending -= 1
            is_complete = message.is_submitted and message.pending == 0
        if is_complete:
            self._complete(message)

    def _complete(self, message: HeldMessage) -> None:
        if self._housekeeper is not None and self._housekeeper.complete(message):
            return
        # After stop(): the runtime evaluates what was queued once its sources stopped; deleting here keeps
        # those records from being evaluated again by whoever receives the message next.
        for failed in self._delete([message]):
            self._forget(failed)
            log.error("sqs_message_delete_failed", message_id=failed.message_id)

    def _fail(self, message: HeldMessage, reason: str) -> None:
        """Leave the message to be redelivered after a backoff, or move it aside after its last try."""
        self._count("messages_failed")
        if message.receive_count >= self._max_receive_count:
            self._poison(message, reason)
            return
        log.warning("sqs_message_failed", message_id=message.message_id, receive_count=message.receive_count,
                    reason=reason)
        delay_s = math.ceil(min(self._visibility_timeout_s, backoff_s(message.receive_count) * 2))
        self._calls.change_visibility([message], delay_s)
        self._forget(message)

    def _poison(self, message: HeldMessage, reason: str) -> None:
        if self._dlq_url and not self._calls.send_dead_letter(self._dlq_url, message, reason):
            self._forget(message)  # not moved, so not deleted: it comes back and is moved on a later try
            return
        log.error("sqs_message_poisoned", message_id=message.message_id, receive_count=message.receive_count,
                  reason=reason, dead_letter_queue_url=self._dlq_url or None)
        self._count("messages_poisoned")
        for failed in self._delete([message]):
            self._forget(failed)

    def _abandon(self, message: HeldMessage, *, batches_put: int) -> None:
        self._count("messages_abandoned")
        if batches_put == 0:
            self._release([message])
            return
        # Part of it is queued and may still be evaluated; releasing it now would only make a repeat likelier.
        log.warning("sqs_message_abandoned", message_id=message.message_id, batches_put=batches_put)
        self._forget(message)

    # --- SQS calls ----------------------------------------------------------------------------------------------

    def _delete(self, messages: list[HeldMessage]) -> list[HeldMessage]:
        """Delete finished messages; returns those that could not be deleted."""
        deleted, failed = self._calls.delete(messages)
        self._count("messages_deleted", len(deleted))
        for message in deleted:
            self._forget(message)
        return failed

    def _release(self, messages: list[HeldMessage]) -> None:
        """Make messages visible again at once, so that another consumer takes them without waiting."""
        if not messages:
            return
        self._calls.change_visibility(messages, 0)
        self._count("messages_released", len(messages))
        for message in messages:
            self._forget(message)

    # --- bookkeeping --------------------------------------------------------------------------------------------

    def _held(self) -> list[HeldMessage]:
        with self._lock:
            return list(self._in_flight)

    def _forget(self, message: HeldMessage) -> None:
        with self._lock:
            self._in_flight.discard(message)
            self._room.notify()

    def _count(self, name: str, count: int = 1) -> None:
        with self._lock:
            self._counters[name] += count
