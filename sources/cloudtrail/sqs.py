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
messages in batches and extends the visibility of those in flight.
"""

from __future__ import annotations

import math
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from agent.errors import AgentError, ConfigError, DecodeError
from agent.event import Event
from agent.event_queue import QueueClosed
from agent.location import Location
from agent.source import EventSink
from sources.cloudtrail.aws import AwsSettings, make_client, make_session
from sources.cloudtrail.decoder import SOURCE, CloudTrailDecoder
from sources.cloudtrail.notifications import ObjectRef, parse_notification
from sources.cloudtrail.objects import DecodedObject, decode_object

log = structlog.get_logger(__name__)

_AWS_ERRORS = (ClientError, BotoCoreError)
#: SQS's limit per ReceiveMessage and per batch call.
_SQS_BATCH = 10
#: Events per sink batch, so that a large file flows through the bounded queue instead of waiting for all its room.
_BATCH_EVENTS = 1000
#: A put waits at most this long before re-checking the stop flag, so that stop never hangs on a full queue.
_PUT_WAIT_S = 0.1
_STOP_JOIN_S = 5.0
_BACKOFF_BASE_S = 0.5
_BACKOFF_MAX_S = 30.0
_DELETE_ATTEMPTS = 5
_REASON_MAX_CHARS = 1000
SKIP_REASONS = ("insight", "missing_event_time", "missing_event_type", "invalid")
_COUNTERS = ("messages_received", "messages_deleted", "messages_poisoned", "messages_failed", "messages_released",
             "messages_abandoned", "files_read", "records_read", "objects_rejected", "sqs_errors", "s3_errors",
             "visibility_extensions", *(f"records_skipped_{reason}" for reason in SKIP_REASONS))
_DEFAULT_AWS = AwsSettings()  # frozen: one shared default is safe


@dataclass(slots=True, eq=False)
class _Message:
    """A received message while this agent holds it. `pending` counts batches put whose on_done has not run."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    visible_until: float  # time.monotonic(); only the receiver (at creation) and the housekeeper write it
    pending: int = 0
    is_submitted: bool = False  # every batch of the message was put
    delete_attempts: int = 0
    retry_at: float = 0.0


def _backoff_s(failures: int) -> float:
    """Exponential, capped, with jitter so that agents failing together do not retry together."""
    ceiling = min(_BACKOFF_MAX_S, _BACKOFF_BASE_S * 2 ** max(failures - 1, 0))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _describe(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    return str(exc)


class SqsTrailConsumer:
    """A LiveSource reading the CloudTrail files announced on an SQS queue; see the module docstring."""

    name = SOURCE

    def __init__(self, *, queue_url: str, aws: AwsSettings = _DEFAULT_AWS, concurrency: int = 4,
                 wait_time_s: int = 10, visibility_timeout_s: int = 300, max_receive_count: int = 5,
                 dead_letter_queue_url: str = "", hostname: str = "") -> None:
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
        self._origin = "sqs://" + queue_url.rstrip("/").rsplit("/", 1)[-1]
        self._max_in_flight = max(2 * concurrency, _SQS_BATCH)
        # Extend well before expiry: check four times per timeout, extend when half of it is left.
        self._tick_s = max(0.05, min(1.0, visibility_timeout_s / 4))
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._in_flight: set[_Message] = set()
        self._completed: list[_Message] = []
        self._is_housekeeping = False
        self._work: queue.Queue[_Message] = queue.Queue()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._newest_ts_ns = 0
        self._sink: EventSink | None = None
        self._sqs: Any = None
        self._s3: Any = None

    # --- LiveSource ---------------------------------------------------------------------------------------------

    def start(self, sink: EventSink) -> None:
        if self._threads:
            raise AgentError("the SQS consumer was already started", Location(file=self.queue_url))
        try:
            session = make_session(self._aws)
            self._sqs = make_client(session, "sqs", self._aws)
            self._s3 = make_client(session, "s3", self._aws)
            for url in filter(None, (self.queue_url, self._dlq_url)):
                self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
        except _AWS_ERRORS as exc:
            raise AgentError(f"cannot use the SQS queue: {_describe(exc)}", Location(file=self.queue_url)) from None
        self._sink = sink
        self._is_housekeeping = True
        self._threads = [threading.Thread(target=self._receive_loop, name="sqs-receiver", daemon=True),
                         threading.Thread(target=self._housekeep_loop, name="sqs-housekeeper", daemon=True)]
        self._threads += [threading.Thread(target=self._work_loop, name=f"sqs-worker-{index}", daemon=True)
                          for index in range(self._concurrency)]
        for thread in self._threads:
            thread.start()
        log.info("sqs_consumer_started", queue_url=self.queue_url, concurrency=self._concurrency)

    def stop(self) -> None:
        """Stop receiving; a message not entirely handed to the sink is abandoned, to be redelivered.

        Messages whose batches are all queued stay in flight: their on_done, run when the runtime drains
        the queue after stopping its sources, still deletes them.
        """
        if not self._threads:
            return
        with self._lock:
            self._stopping.set()
            self._room.notify_all()
        self._wake.set()
        receiver, housekeeper, *workers = self._threads
        receiver.join(timeout=self._wait_time_s + _STOP_JOIN_S)
        for worker in workers:
            worker.join(timeout=_STOP_JOIN_S)
        leftovers: list[_Message] = []
        while True:
            try:
                leftovers.append(self._work.get_nowait())
            except queue.Empty:
                break
        self._release(leftovers)
        housekeeper.join(timeout=_STOP_JOIN_S)
        for thread in self._threads:
            if thread.is_alive():
                log.warning("sqs_thread_not_stopped", thread=thread.name)
        log.info("sqs_consumer_stopped", queue_url=self.queue_url, **self.metrics())

    def metrics(self) -> dict[str, Any]:
        with self._lock:
            counters: dict[str, Any] = dict(self._counters)
            counters["messages_in_flight"] = len(self._in_flight)
            newest = self._newest_ts_ns
        counters["lag_s"] = round((time.time_ns() - newest) / 1e9, 3) if newest else None
        return counters

    # --- receiver -----------------------------------------------------------------------------------------------

    def _receive_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            with self._lock:
                room = self._max_in_flight - len(self._in_flight)
                if room <= 0:
                    self._room.wait(timeout=1.0)
                    continue
            started = time.monotonic()
            try:
                response = self._sqs.receive_message(
                    QueueUrl=self.queue_url, MaxNumberOfMessages=min(_SQS_BATCH, room),
                    WaitTimeSeconds=self._wait_time_s, VisibilityTimeout=self._visibility_timeout_s,
                    MessageSystemAttributeNames=["ApproximateReceiveCount"])
            except _AWS_ERRORS as exc:
                failures += 1
                self._aws_failed("sqs", "receive_message", exc)
                self._stopping.wait(_backoff_s(failures))
                continue
            failures = 0
            messages = [self._message(raw, started) for raw in response.get("Messages", [])]
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

    def _message(self, raw: dict[str, Any], received_at: float) -> _Message:
        count = raw.get("Attributes", {}).get("ApproximateReceiveCount", "1")
        # The visibility clock starts when SQS answers, after `received_at`: counting from it errs on the safe side.
        return _Message(raw["MessageId"], raw["ReceiptHandle"], raw.get("Body", ""),
                        int(count) if str(count).isdigit() else 1, received_at + self._visibility_timeout_s)

    # --- workers ------------------------------------------------------------------------------------------------

    def _work_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                message = self._work.get(timeout=_PUT_WAIT_S * 2)
            except queue.Empty:
                continue
            if self._stopping.is_set():
                self._release([message])
                break
            self._process(message)

    def _process(self, message: _Message) -> None:
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
                data = self._s3.get_object(Bucket=ref.bucket, Key=ref.key)["Body"].read()
            except _AWS_ERRORS as exc:
                self._aws_failed("s3", "get_object", exc, object=ref.name)
                self._fail(message, f"cannot read {ref.name}: {_describe(exc)}")
                return
            decoded.append(self._decode(ref, data))
        self._submit(message, [obj.events for obj in decoded])

    def _decode(self, ref: ObjectRef, data: bytes) -> DecodedObject:
        decoder = CloudTrailDecoder(hostname=self._hostname)  # per object: the decoder is not thread-safe
        obj = decode_object(data, name=ref.name, decoder=decoder)
        skipped = dict.fromkeys(SKIP_REASONS, 0)
        skipped["insight"] = decoder.skipped_insight
        record_errors: list[DecodeError] = []
        object_errors: list[DecodeError] = []
        for error in obj.errors:
            is_record = error.location is not None and error.location.item_kind == "record"
            (record_errors if is_record else object_errors).append(error)
        for error in record_errors:
            skipped[error.reason] += 1
        newest = max((event.ts_ns for event in obj.events), default=0)
        with self._lock:
            self._counters["files_read"] += 1
            self._counters["records_read"] += len(obj.events)
            self._counters["objects_rejected"] += bool(object_errors)
            for reason, count in skipped.items():
                self._counters[f"records_skipped_{reason}"] += count
            self._newest_ts_ns = max(self._newest_ts_ns, newest)
        if object_errors:
            # A corrupt file stays corrupt: it is reported and skipped, never a reason to retry the message.
            log.warning("cloudtrail_object_rejected", bucket=ref.bucket, key=ref.key, reason=object_errors[0].message)
        if record_errors:
            log.warning("cloudtrail_records_skipped", object=ref.name, count=len(record_errors),
                        first=str(record_errors[0]))
        return obj

    def _submit(self, message: _Message, event_lists: Iterable[list[Event]]) -> None:
        batches = [events[start:start + _BATCH_EVENTS] for events in event_lists
                   for start in range(0, len(events), _BATCH_EVENTS)]
        on_done = partial(self._batch_done, message)
        for index, batch in enumerate(batches):
            with self._lock:
                message.pending += 1
            if not self._put(batch, on_done):
                with self._lock:
                    message.pending -= 1
                self._abandon(message, batches_put=index)
                return
        with self._lock:
            message.is_submitted = True
            is_complete = message.pending == 0
        if is_complete:
            self._complete(message)

    def _put(self, batch: Sequence[Event], on_done: Callable[[], None]) -> bool:
        """Hand a batch to the sink; False when the source stops or the sink closes first."""
        assert self._sink is not None
        while not self._stopping.is_set():
            try:
                if self._sink.put(batch, on_done, timeout_s=_PUT_WAIT_S):
                    return True
            except QueueClosed:
                return False
        return False

    def _batch_done(self, message: _Message) -> None:
        """on_done of every batch: the message is complete once all its batches were evaluated."""
        with self._lock:
            message.pending -= 1
            is_complete = message.is_submitted and message.pending == 0
        if is_complete:
            self._complete(message)

    def _complete(self, message: _Message) -> None:
        with self._lock:
            if self._is_housekeeping:
                self._completed.append(message)
                self._wake.set()
                return
        # After stop(): the runtime evaluates what was queued once its sources stopped; deleting here keeps
        # those records from being evaluated again by whoever receives the message next.
        for failed in self._delete([message]):
            self._forget(failed)
            log.error("sqs_message_delete_failed", message_id=failed.message_id)

    def _fail(self, message: _Message, reason: str) -> None:
        """Leave the message to be redelivered after a backoff, or move it aside after its last try."""
        self._count("messages_failed")
        if message.receive_count >= self._max_receive_count:
            self._poison(message, reason)
            return
        log.warning("sqs_message_failed", message_id=message.message_id, receive_count=message.receive_count,
                    reason=reason)
        delay_s = math.ceil(min(self._visibility_timeout_s, _backoff_s(message.receive_count) * 2))
        self._change_visibility([message], delay_s)
        self._forget(message)

    def _poison(self, message: _Message, reason: str) -> None:
        if self._dlq_url:
            attributes = {
                "reason": {"DataType": "String", "StringValue": reason[:_REASON_MAX_CHARS]},
                "source_message_id": {"DataType": "String", "StringValue": message.message_id},
                "receive_count": {"DataType": "Number", "StringValue": str(message.receive_count)},
            }
            try:
                self._sqs.send_message(QueueUrl=self._dlq_url, MessageBody=message.body or "<empty>",
                                       MessageAttributes=attributes)
            except _AWS_ERRORS as exc:
                # Not moved, so not deleted: it comes back and is moved on a later try.
                self._aws_failed("sqs", "send_message", exc, message_id=message.message_id)
                self._forget(message)
                return
        log.error("sqs_message_poisoned", message_id=message.message_id, receive_count=message.receive_count,
                  reason=reason, dead_letter_queue_url=self._dlq_url or None)
        self._count("messages_poisoned")
        for failed in self._delete([message]):
            self._forget(failed)

    def _abandon(self, message: _Message, *, batches_put: int) -> None:
        self._count("messages_abandoned")
        if batches_put == 0:
            self._release([message])
            return
        # Part of it is queued and may still be evaluated; releasing it now would only make a repeat likelier.
        log.warning("sqs_message_abandoned", message_id=message.message_id, batches_put=batches_put)
        self._forget(message)

    # --- housekeeper --------------------------------------------------------------------------------------------

    def _housekeep_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._tick_s)
            self._wake.clear()
            self._flush_deletes(final=False)
            self._extend_visibility()
        with self._lock:
            self._is_housekeeping = False
        self._flush_deletes(final=True)

    def _flush_deletes(self, *, final: bool) -> None:
        now = time.monotonic()
        with self._lock:
            due = [message for message in self._completed if final or message.retry_at <= now]
            self._completed = [message for message in self._completed if message not in due]
        retry: list[_Message] = []
        for message in self._delete(due):
            message.delete_attempts += 1
            if final or message.delete_attempts >= _DELETE_ATTEMPTS:
                log.error("sqs_message_delete_failed", message_id=message.message_id,
                          attempts=message.delete_attempts)
                self._forget(message)
            else:
                message.retry_at = now + _backoff_s(message.delete_attempts)
                retry.append(message)
        with self._lock:
            self._completed.extend(retry)

    def _extend_visibility(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [message for message in self._in_flight
                   if message.visible_until - now < self._visibility_timeout_s / 2]
        changed, refused = self._change_visibility(due, self._visibility_timeout_s)
        for message in changed:
            message.visible_until = now + self._visibility_timeout_s
        self._count("visibility_extensions", len(changed))
        for message in refused:
            # SQS refuses when the message is no longer ours (it expired, or passed the 12-hour cap): asking
            # again never helps. The work goes on; its delete may fail and the records be evaluated twice.
            message.visible_until = math.inf

    # --- SQS calls ----------------------------------------------------------------------------------------------

    def _delete(self, messages: list[_Message]) -> list[_Message]:
        """Delete finished messages; returns those that could not be deleted."""
        failed: list[_Message] = []
        for start in range(0, len(messages), _SQS_BATCH):
            chunk = messages[start:start + _SQS_BATCH]
            entries = [{"Id": str(index), "ReceiptHandle": message.receipt_handle}
                       for index, message in enumerate(chunk)]
            try:
                response = self._sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except _AWS_ERRORS as exc:
                self._aws_failed("sqs", "delete_message_batch", exc, count=len(chunk))
                failed += chunk
                continue
            failed_ids = self._failed_ids(response, "delete_message_batch")
            for index, message in enumerate(chunk):
                if str(index) in failed_ids:
                    failed.append(message)
                else:
                    self._count("messages_deleted")
                    self._forget(message)
        return failed

    def _change_visibility(self, messages: list[_Message], timeout_s: int) -> tuple[list[_Message], list[_Message]]:
        """Set the visibility timeout of messages: (changed, refused by SQS); a failed call leaves both out."""
        changed: list[_Message] = []
        refused: list[_Message] = []
        for start in range(0, len(messages), _SQS_BATCH):
            chunk = messages[start:start + _SQS_BATCH]
            entries = [{"Id": str(index), "ReceiptHandle": message.receipt_handle, "VisibilityTimeout": timeout_s}
                       for index, message in enumerate(chunk)]
            try:
                response = self._sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)
            except _AWS_ERRORS as exc:
                self._aws_failed("sqs", "change_message_visibility_batch", exc, count=len(chunk))
                continue
            failed_ids = self._failed_ids(response, "change_message_visibility_batch")
            for index, message in enumerate(chunk):
                (refused if str(index) in failed_ids else changed).append(message)
        return changed, refused

    def _failed_ids(self, response: dict[str, Any], operation: str) -> set[str]:
        failed = response.get("Failed", [])
        for entry in failed:
            self._count("sqs_errors")
            log.warning("aws_call_failed", service="sqs", operation=operation, error=entry.get("Code"),
                        detail=entry.get("Message"))
        return {entry["Id"] for entry in failed}

    def _release(self, messages: list[_Message]) -> None:
        """Make messages visible again at once, so that another consumer takes them without waiting."""
        if not messages:
            return
        self._change_visibility(messages, 0)
        self._count("messages_released", len(messages))
        for message in messages:
            self._forget(message)

    # --- bookkeeping --------------------------------------------------------------------------------------------

    def _forget(self, message: _Message) -> None:
        with self._lock:
            self._in_flight.discard(message)
            self._room.notify()

    def _count(self, name: str, count: int = 1) -> None:
        with self._lock:
            self._counters[name] += count

    def _aws_failed(self, service: str, operation: str, exc: Exception, **context: Any) -> None:
        self._count(f"{service}_errors")
        log.warning("aws_call_failed", service=service, operation=operation, error=_describe(exc), **context)
