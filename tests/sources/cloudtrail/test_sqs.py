"""Tests for sources/cloudtrail/sqs.py (and the notification shapes it reads) against a real moto endpoint."""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from agent.alert import Alert
from agent.errors import AgentError, DecodeError
from agent.event import Event
from agent.event_queue import EventQueue
from agent.internal_alerts import SOURCE_FAILED, SOURCE_RESTARTED, InternalAlerts
from agent.supervisor import SourceSupervisor
from sources.cloudtrail.aws import AwsSettings
from sources.cloudtrail.notifications import Notification, ObjectRef, parse_notification
from sources.cloudtrail.sqs import SqsTrailConsumer

REFERENCE = Path(__file__).resolve().parents[3].parent / "shared" / "reference"
STRATUS = REFERENCE / "samples" / "cloudtrail" / "stratus"
PREFIX = "AWSLogs/o-exampleorg1/111122223333/CloudTrail/us-east-1/2024/08/01/"
WAIT_S = 20.0


# --- AWS fixtures and helpers -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    """Every record of the Stratus Red Team samples (bare arrays), 142 with distinct eventIDs."""
    if not STRATUS.is_dir():
        pytest.skip(f"reference data not available: {STRATUS}")
    out: list[dict[str, Any]] = []
    for path in sorted(STRATUS.glob("*.json")):
        out += json.loads(path.read_text())
    return out


@pytest.fixture
def s3(aws_endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=aws_endpoint, region_name="us-east-1")


@pytest.fixture
def sqs(aws_endpoint: str) -> Any:
    return boto3.client("sqs", endpoint_url=aws_endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"trail-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def new_queue(sqs: Any, label: str = "q") -> str:
    url: str = sqs.create_queue(QueueName=f"{label}-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    return url


@pytest.fixture
def queue_url(sqs: Any) -> str:
    return new_queue(sqs)


def log_file(records: list[Any]) -> bytes:
    return gzip.compress(json.dumps({"Records": records}).encode())


def upload(s3: Any, bucket: str, records: list[dict[str, Any]], *, chunk: int, name: str = "part") -> list[str]:
    """Upload `records` as gzipped log files of `chunk` records; returns their keys."""
    keys = []
    for start in range(0, len(records), chunk):
        key = f"{PREFIX}111122223333_CloudTrail_us-east-1_20240801T1335Z_{name} {start}+x.json.gz"
        s3.put_object(Bucket=bucket, Key=key, Body=log_file(records[start:start + chunk]))
        keys.append(key)
    return keys


def body(shape: str, bucket: str, keys: list[str], *, is_sns: bool) -> str:
    """A notification body naming `keys`: CloudTrail's own or an S3 event, raw or in an SNS envelope."""
    if shape == "cloudtrail":
        document: dict[str, Any] = {"s3Bucket": bucket, "s3ObjectKey": keys}
    else:
        document = {"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventTime": "2024-08-01T13:35:00.000Z", "eventName": "ObjectCreated:Put",
            "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                   "object": {"key": quote_plus(key, safe="/"), "size": 1024}},
        } for key in keys]}
    if not is_sns:
        return json.dumps(document)
    return json.dumps({"Type": "Notification", "MessageId": str(uuid.uuid4()),
                       "TopicArn": "arn:aws:sns:us-east-1:111122223333:trail", "Message": json.dumps(document)})


def queue_counts(sqs: Any, url: str) -> tuple[int, int]:
    """(visible, in flight) messages of a queue."""
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def wait_until(predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    """Re-check every 50 ms state that only AWS or the metrics show, which nothing notifies."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            return False
        pause.wait(0.05)
    return True


# --- the engine's stand-in ----------------------------------------------------------------------------------------

class Tally:
    """eventIDs evaluated across every evaluator of a test, with a condition to wait on."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.acked = 0
        self.taken = 0
        self.errors: list[BaseException] = []  # raised on an evaluator's thread, re-raised on the test's
        self.condition = threading.Condition()

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
        """Wait for `predicate`; an error on an evaluator's thread ends the wait at once and is raised here."""
        with self.condition:
            is_met = self.condition.wait_for(lambda: bool(self.errors) or predicate(), timeout_s)
        self.raise_errors()
        return is_met

    def raise_errors(self) -> None:
        if self.errors:
            raise AssertionError(f"an evaluator thread failed: {self.errors[0]!r}") from self.errors[0]


class Evaluator:
    """Takes batches from a real EventQueue like the runtime: records their eventIDs, then runs on_done.

    `release` cleared holds a taken batch before it is evaluated; once `max_acked` batches were evaluated,
    the next ones are dropped unevaluated, as by an agent killed with events still queued.
    """

    def __init__(self, tally: Tally, *, max_acked: int | None = None) -> None:
        self.queue = EventQueue(capacity_events=500)
        self.tally = tally
        self.max_acked = max_acked
        self.acked = 0
        self.release = threading.Event()
        self.release.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._evaluate()
        except BaseException as exc:  # reported on the test's thread by Tally.wait_for and stop(), not a timeout
            with self.tally.condition:
                self.tally.errors.append(exc)
                self.tally.condition.notify_all()

    def _evaluate(self) -> None:
        while not self._stop.is_set():
            batch = self.queue.get(timeout_s=0.05)
            if batch is None:
                continue
            with self.tally.condition:
                self.tally.taken += 1
                self.tally.condition.notify_all()
            if self.max_acked is not None and self.acked >= self.max_acked:
                continue
            while not self.release.wait(0.05):
                if self._stop.is_set():
                    return
            with self.tally.condition:
                self.tally.ids += [event.payload["eventID"] for event in batch.events]
            if batch.on_done is None:
                raise AssertionError("the consumer queued a batch without on_done: its message is never deleted")
            batch.on_done()
            self.acked += 1
            with self.tally.condition:
                self.tally.acked += 1
                self.tally.condition.notify_all()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.tally.raise_errors()


@contextmanager
def consuming(consumer: SqsTrailConsumer, evaluator: Evaluator) -> Iterator[SqsTrailConsumer]:
    consumer.start(evaluator.queue)
    try:
        yield consumer
    finally:
        consumer.stop()
        evaluator.stop()


def make_consumer(aws_endpoint: str, queue_url: str, **options: Any) -> SqsTrailConsumer:
    # A long visibility by default: only the tests about expiry and redelivery shorten it.
    options = {"concurrency": 2, "wait_time_s": 1, "visibility_timeout_s": 30} | options
    return SqsTrailConsumer(queue_url=queue_url, aws=AwsSettings(region="us-east-1", endpoint_url=aws_endpoint),
                            **options)


def assert_once(ids: list[str], expected: list[dict[str, Any]]) -> None:
    duplicates = [event_id for event_id, count in Counter(ids).items() if count > 1]
    assert not duplicates, f"evaluated more than once: {duplicates}"
    assert sorted(ids) == sorted(record["eventID"] for record in expected)


# --- tests --------------------------------------------------------------------------------------------------------

class TestNotifications:
    def test_shapes_name_the_same_objects(self) -> None:
        """CloudTrail and S3-event notifications, raw or SNS-wrapped, name the same decoded keys."""
        keys = [f"{PREFIX}a b+c.json.gz", f"{PREFIX}d.json.gz"]
        expected = tuple(ObjectRef("bkt", key) for key in keys)
        for shape in ("cloudtrail", "s3_event"):
            for is_sns in (False, True):
                notification = parse_notification(body(shape, "bkt", keys, is_sns=is_sns), origin="m")
                assert (notification.kind, notification.objects, notification.is_sns) == (shape, expected, is_sns)

    def test_test_event_and_removals_name_nothing(self) -> None:
        """The s3:TestEvent and ObjectRemoved records announce no object to read."""
        test_event = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "bkt"})
        assert parse_notification(test_event, origin="m").objects == ()
        removed = json.loads(body("s3_event", "bkt", ["k"], is_sns=False))
        removed["Records"][0]["eventName"] = "ObjectRemoved:Delete"
        assert parse_notification(json.dumps(removed), origin="m").objects == ()

    @pytest.mark.parametrize("text", ["garbage", "[]", '{"hello": 1}', '{"s3Bucket": "b", "s3ObjectKey": 3}',
                                      '{"Records": [{"eventSource": "aws:iam"}]}',
                                      '{"Type": "Notification", "Message": "{not json"}'])
    def test_unrecognised_bodies_are_errors_naming_the_message(self, text: str) -> None:
        """A body that is not a notification is a DecodeError naming the message."""
        with pytest.raises(DecodeError) as caught:
            parse_notification(text, origin="sqs://q/m-1")
        assert "sqs://q/m-1" in str(caught.value)

    @given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                            st.sampled_from(["Type", "Message", "s3Bucket", "s3ObjectKey", "Records", "Event",
                                             "eventSource", "eventName", "s3", "bucket", "object", "name", "key"]),
                            inner, max_size=4), max_leaves=12))
    def test_any_json_is_a_notification_or_a_decode_error(self, document: Any) -> None:
        """No JSON body makes the parser fail with anything but a DecodeError naming the message, and what it
        accepts is one of the three kinds, naming only objects with a bucket and a key."""
        try:
            notification = parse_notification(json.dumps(document), origin="sqs://q/m-1")
        except DecodeError as exc:
            assert "sqs://q/m-1" in str(exc)
            return
        assert notification.kind in {"cloudtrail", "s3_event", "s3_test"}
        assert notification.is_sns == (isinstance(document, dict) and document.get("Type") == "Notification")
        assert all(isinstance(ref.bucket, str) and ref.bucket and isinstance(ref.key, str) and ref.key
                   for ref in notification.objects)
        if notification.kind == "s3_test":
            assert notification.objects == ()

    @pytest.mark.parametrize(("text", "expected"), [
        ('{"s3Bucket": "b", "s3ObjectKey": "k.json.gz"}',
         Notification("cloudtrail", (ObjectRef("b", "k.json.gz"),))),
        ('{"s3Bucket": "b", "s3ObjectKey": ["AWSLogs/1/CloudTrail-Digest/us-east-1/d.json.gz", "x y+z.json.gz"]}',
         Notification("cloudtrail", (ObjectRef("b", "x y+z.json.gz"),))),
        ('{"s3Bucket": "b", "s3ObjectKey": []}', Notification("cloudtrail", ())),
        ('{"Event": "s3:TestEvent", "Records": 3}', Notification("s3_test", ())),
        ('{"Type": "Notification", "Message": "{\\"Event\\": \\"s3:TestEvent\\"}"}',
         Notification("s3_test", (), is_sns=True)),
        ('{"Records": []}', Notification("s3_event", ())),
        ('{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Copy",'
         ' "s3": {"bucket": {"name": "b"}, "object": {"key": "a+b%2Bc.json.gz"}}}]}',
         Notification("s3_event", (ObjectRef("b", "a b+c.json.gz"),))),
        ('{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",'
         ' "s3": {"bucket": {"name": "b"}, "object": {"key": "AWSLogs/folder/"}}}]}', Notification("s3_event", ())),
        ('{"Records": [{"eventSource": "aws:s3", "eventName": 5}]}', Notification("s3_event", ())),
        ('{"Type": "Notification", "Message": 5}', "SNS notification: 'Message' is not a string"),
        ('{"Type": "Notification"}', "no s3ObjectKey, Records or s3:TestEvent"),
        ('{"s3Bucket": "", "s3ObjectKey": ["k"]}', "'s3Bucket' is not a bucket name"),
        ('{"s3ObjectKey": ["k"]}', "'s3Bucket' is not a bucket name"),
        ('{"s3Bucket": "b", "s3ObjectKey": ["k", ""]}', "'s3ObjectKey' is not a list of keys"),
        ('{"Records": {"a": 1}}', "'Records' is not a list"),
        ('{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}}}]}',
         "a record has no s3.bucket.name or s3.object.key"),
        ('{"Records": [{"eventSource": "aws:sqs"}]}', "a record is not an aws:s3 event"),
        ("[1, 2]", "the body is not a JSON object"),
    ])
    def test_known_bodies_are_classified_exactly(self, text: str, expected: Notification | str) -> None:
        """Edge shapes: each is a given kind naming given objects, or a DecodeError giving a given reason."""
        if isinstance(expected, Notification):
            assert parse_notification(text, origin="m") == expected
        else:
            with pytest.raises(DecodeError, match=re.escape(expected)):
                parse_notification(text, origin="m")


@pytest.mark.server
class TestDelivery:
    @pytest.mark.parametrize("shape", ["cloudtrail", "s3_event"])
    @pytest.mark.parametrize("is_sns", [False, True], ids=["raw", "sns"])
    def test_every_record_once_then_deleted(self, aws_endpoint: str, s3: Any, sqs: Any, bucket: str, queue_url: str,
                                            records: list[dict[str, Any]], shape: str, is_sns: bool) -> None:
        """Each notification shape delivers every record of its files once, and the messages are deleted."""
        sample = records[:60]
        keys = upload(s3, bucket, sample, chunk=20)
        sqs.send_message(QueueUrl=queue_url, MessageBody=body(shape, bucket, keys[:2], is_sns=is_sns))
        sqs.send_message(QueueUrl=queue_url, MessageBody=body(shape, bucket, keys[2:], is_sns=is_sns))
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"Event": "s3:TestEvent", "Bucket": bucket}))
        tally = Tally()
        consumer = make_consumer(aws_endpoint, queue_url)
        with consuming(consumer, Evaluator(tally)):
            assert tally.wait_for(lambda: len(tally.ids) >= len(sample))
            assert wait_until(lambda: consumer.metrics()["messages_deleted"] == 3)
        assert_once(tally.ids, sample)
        assert queue_counts(sqs, queue_url) == (0, 0)
        metrics = consumer.metrics()
        assert (metrics["files_read"], metrics["records_read"], metrics["messages_received"]) == (3, 60, 3)
        assert metrics["lag_s"] > 0

    def test_unusable_queue_fails_to_start(self, aws_endpoint: str) -> None:
        """A queue that does not exist is a clear start error, not a silent idle source."""
        consumer = make_consumer(aws_endpoint, f"{aws_endpoint}/123456789012/no-such-queue")
        with pytest.raises(AgentError, match="cannot use the SQS queue"):
            consumer.start(EventQueue(capacity_events=10))


@pytest.mark.server
class TestInFlight:
    def test_held_message_stays_invisible_and_undeleted(self, aws_endpoint: str, s3: Any, sqs: Any, bucket: str,
                                                        queue_url: str, records: list[dict[str, Any]]) -> None:
        """A message is deleted only after on_done, and its visibility is extended while the engine holds it."""
        sample = records[:10]
        sqs.send_message(QueueUrl=queue_url, MessageBody=body("cloudtrail", bucket, upload(s3, bucket, sample,
                                                                                          chunk=10), is_sns=True))
        tally = Tally()
        evaluator = Evaluator(tally)
        evaluator.release.clear()
        consumer = make_consumer(aws_endpoint, queue_url, visibility_timeout_s=2)
        with consuming(consumer, evaluator):
            assert tally.wait_for(lambda: tally.taken == 1)
            assert queue_counts(sqs, queue_url) == (0, 1)
            # Twice the visibility timeout: without the heartbeat the message would come back to this receive.
            rival = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=4, VisibilityTimeout=30)
            assert rival.get("Messages", []) == []
            metrics = consumer.metrics()
            assert (metrics["messages_received"], metrics["messages_deleted"]) == (1, 0)
            assert metrics["visibility_extensions"] >= 2
            evaluator.release.set()
            assert tally.wait_for(lambda: tally.acked == 1)
        assert_once(tally.ids, sample)
        assert consumer.metrics()["messages_deleted"] == 1
        assert queue_counts(sqs, queue_url) == (0, 0)

    def test_batches_evaluated_after_stop_still_delete_their_message(self, aws_endpoint: str, s3: Any, sqs: Any,
                                                                     bucket: str, queue_url: str,
                                                                     records: list[dict[str, Any]]) -> None:
        """As the runtime stops its sources before draining the queue, on_done after stop() still deletes."""
        sample = records[:10]
        sqs.send_message(QueueUrl=queue_url, MessageBody=body("s3_event", bucket, upload(s3, bucket, sample,
                                                                                        chunk=10), is_sns=False))
        tally = Tally()
        evaluator = Evaluator(tally)
        evaluator.release.clear()
        consumer = make_consumer(aws_endpoint, queue_url)
        consumer.start(evaluator.queue)
        try:
            assert tally.wait_for(lambda: tally.taken == 1)
        finally:
            consumer.stop()
        assert consumer.metrics()["messages_deleted"] == 0
        evaluator.release.set()
        assert tally.wait_for(lambda: tally.acked == 1)
        evaluator.stop()
        assert_once(tally.ids, sample)
        assert consumer.metrics()["messages_deleted"] == 1
        assert queue_counts(sqs, queue_url) == (0, 0)


class FirstBatchFirstSink:
    """An EventSink that evaluates the first batch at once (its on_done runs before put returns), then has no room
    for the next batch until `room` is set, as a full queue whose engine is fast for one batch and then slow.

    Later batches, once accepted, are held unevaluated in `held` until the test runs their on_done.
    """

    def __init__(self) -> None:
        self.evaluated: list[str] = []
        self.held: list[tuple[list[str], Callable[[], None]]] = []
        self.waiting = threading.Event()  # a later batch is waiting for room
        self.room = threading.Event()
        self._lock = threading.Lock()

    def offer(self, events: Sequence[Event], on_done: Callable[[], None] | None = None) -> bool:
        return self.put(events, on_done, timeout_s=0)

    def put(self, events: Sequence[Event], on_done: Callable[[], None] | None = None, *,
            timeout_s: float | None = None) -> bool:
        if on_done is None:
            raise AssertionError("a batch without on_done: its message could never be deleted")
        ids = [event.payload["eventID"] for event in events]
        with self._lock:
            is_first = not self.evaluated
        if is_first:
            self.evaluated += ids
            on_done()
            return True
        self.waiting.set()
        if not self.room.wait(timeout_s):
            return False
        with self._lock:
            self.held.append((ids, on_done))
        return True


@pytest.mark.server
class TestCompletion:
    """A message naming several files is deleted only once every batch of every file was evaluated."""

    def test_not_deleted_while_a_later_file_waits_for_room(self, aws_endpoint: str, s3: Any, sqs: Any,
                                                           bucket: str, queue_url: str,
                                                           records: list[dict[str, Any]]) -> None:
        """The first file evaluated before the second is even queued does not complete the message."""
        sample = records[:10]
        keys = upload(s3, bucket, sample, chunk=5)
        sqs.send_message(QueueUrl=queue_url, MessageBody=body("cloudtrail", bucket, keys, is_sns=False))
        sink = FirstBatchFirstSink()
        # Short, so that the housekeeper runs (and would delete a completed message) several times a second.
        consumer = make_consumer(aws_endpoint, queue_url, visibility_timeout_s=2)
        consumer.start(sink)
        try:
            assert sink.waiting.wait(WAIT_S)
            assert sink.evaluated == [record["eventID"] for record in records[:5]]
            # Two more visibility extensions: the housekeeper flushed its deletes at least once since then.
            extended = consumer.metrics()["visibility_extensions"]
            assert wait_until(lambda: consumer.metrics()["messages_deleted"] > 0
                              or consumer.metrics()["visibility_extensions"] >= extended + 2)
            assert consumer.metrics()["messages_deleted"] == 0
            assert sum(queue_counts(sqs, queue_url)) == 1
            sink.room.set()
            assert wait_until(lambda: len(sink.held) == 1)
            [(second_ids, on_done)] = sink.held
            assert second_ids == [record["eventID"] for record in records[5:10]]
            assert consumer.metrics()["messages_deleted"] == 0
            on_done()
            assert wait_until(lambda: consumer.metrics()["messages_deleted"] == 1)
        finally:
            consumer.stop()
        assert queue_counts(sqs, queue_url) == (0, 0)

    def test_stopped_before_the_later_file_is_queued_the_message_comes_back_whole(
            self, aws_endpoint: str, s3: Any, sqs: Any, bucket: str, queue_url: str,
            records: list[dict[str, Any]]) -> None:
        """Stopped (as by a crash) after the first file was evaluated: the message is kept, so the second file's
        records are evaluated by the next agent instead of being lost."""
        sample = records[:10]
        keys = upload(s3, bucket, sample, chunk=5)
        sqs.send_message(QueueUrl=queue_url, MessageBody=body("s3_event", bucket, keys, is_sns=True))
        sink = FirstBatchFirstSink()
        first = make_consumer(aws_endpoint, queue_url, visibility_timeout_s=2)
        first.start(sink)
        try:
            assert sink.waiting.wait(WAIT_S)
        finally:
            first.stop()  # deletes every message it had completed before returning
        assert sink.evaluated == [record["eventID"] for record in records[:5]]
        assert sink.held == []
        assert first.metrics()["messages_deleted"] == 0
        assert sum(queue_counts(sqs, queue_url)) == 1
        tally = Tally()
        second = make_consumer(aws_endpoint, queue_url)
        with consuming(second, Evaluator(tally)):
            assert tally.wait_for(lambda: len(tally.ids) >= len(sample))
            assert wait_until(lambda: second.metrics()["messages_deleted"] == 1)
        assert_once(tally.ids, sample)
        assert queue_counts(sqs, queue_url) == (0, 0)


@pytest.mark.server
class TestPoison:
    def test_garbage_body_goes_to_the_dead_letter_queue(self, aws_endpoint: str, sqs: Any, queue_url: str) -> None:
        """An unrecognised body is retried, then moved to the DLQ with its reason after max_receive_count tries."""
        dlq_url = new_queue(sqs, "dlq")
        sqs.send_message(QueueUrl=queue_url, MessageBody="this is not a notification")
        consumer = make_consumer(aws_endpoint, queue_url, max_receive_count=2, dead_letter_queue_url=dlq_url)
        with capture_logs() as logs, consuming(consumer, Evaluator(Tally())):
            moved = sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=15, MessageAttributeNames=["All"])
        [message] = moved["Messages"]
        assert message["Body"] == "this is not a notification"
        assert "not a recognised notification" in message["MessageAttributes"]["reason"]["StringValue"]
        assert message["MessageAttributes"]["receive_count"]["StringValue"] == "2"
        poisoned = [entry for entry in logs if entry["event"] == "sqs_message_poisoned"]
        assert [(entry["receive_count"], entry["log_level"]) for entry in poisoned] == [(2, "error")]
        assert "not a recognised notification" in poisoned[0]["reason"]
        metrics = consumer.metrics()
        assert (metrics["messages_failed"], metrics["messages_poisoned"], metrics["messages_deleted"]) == (2, 1, 1)
        assert queue_counts(sqs, queue_url) == (0, 0)

    def test_missing_object_is_dropped_with_an_error_without_dlq(self, aws_endpoint: str, sqs: Any, bucket: str,
                                                                 queue_url: str) -> None:
        """A message naming an object that does not exist is retried, then deleted with an error log."""
        sqs.send_message(QueueUrl=queue_url, MessageBody=body("s3_event", bucket, [f"{PREFIX}gone.json.gz"],
                                                              is_sns=False))
        consumer = make_consumer(aws_endpoint, queue_url, max_receive_count=2)
        with capture_logs() as logs, consuming(consumer, Evaluator(Tally())):
            assert wait_until(lambda: consumer.metrics()["messages_poisoned"] == 1)
        [poisoned] = [entry for entry in logs if entry["event"] == "sqs_message_poisoned"]
        assert "NoSuchKey" in poisoned["reason"] and f"s3://{bucket}/{PREFIX}gone.json.gz" in poisoned["reason"]
        metrics = consumer.metrics()
        assert (metrics["s3_errors"], metrics["messages_deleted"], metrics["records_read"]) == (2, 1, 0)
        assert queue_counts(sqs, queue_url) == (0, 0)


@pytest.mark.server
class TestCorruptObjects:
    def test_corrupt_objects_counted_good_ones_evaluated(self, aws_endpoint: str, s3: Any, sqs: Any, bucket: str,
                                                         queue_url: str, records: list[dict[str, Any]]) -> None:
        """Corrupt files are reported and counted while the good files of the same message are evaluated."""
        good = records[:5]
        bad = {"bad-gzip.json.gz": b"\x1f\x8b\x08\x00garbage", "truncated.json.gz": log_file(good)[:-30],
               "not-a-list.json": json.dumps({"Records": "nope"}).encode(),
               "plain.json": json.dumps({"Records": [*records[5:8], "a string record"]}).encode()}
        keys = upload(s3, bucket, good, chunk=5)
        for name, data in bad.items():
            s3.put_object(Bucket=bucket, Key=PREFIX + name, Body=data)
            keys.append(PREFIX + name)
        sqs.send_message(QueueUrl=queue_url, MessageBody=body("cloudtrail", bucket, keys, is_sns=False))
        tally = Tally()
        consumer = make_consumer(aws_endpoint, queue_url)
        with capture_logs() as logs, consuming(consumer, Evaluator(tally)):
            assert tally.wait_for(lambda: len(tally.ids) >= 8)
            assert wait_until(lambda: consumer.metrics()["messages_deleted"] == 1)
        assert_once(tally.ids, records[:8])
        metrics = consumer.metrics()
        assert (metrics["files_read"], metrics["objects_rejected"], metrics["records_skipped_invalid"]) == (5, 3, 1)
        assert metrics["messages_failed"] == 0
        rejected = {entry["object"] for entry in logs if entry["event"] == "cloudtrail_object_rejected"}
        assert rejected == {f"s3://{bucket}/{PREFIX}{name}" for name in ("bad-gzip.json.gz", "truncated.json.gz",
                                                                          "not-a-list.json")}
        assert queue_counts(sqs, queue_url) == (0, 0)


def send_one_per_file(sqs: Any, queue_url: str, bucket: str, keys: list[str]) -> None:
    """One message per file, cycling through the four notification shapes."""
    shapes = [("cloudtrail", False), ("cloudtrail", True), ("s3_event", False), ("s3_event", True)]
    for index, key in enumerate(keys):
        shape, is_sns = shapes[index % len(shapes)]
        sqs.send_message(QueueUrl=queue_url, MessageBody=body(shape, bucket, [key], is_sns=is_sns))


@pytest.mark.server
class TestScaleOut:
    def test_two_consumers_share_the_queue_without_duplicate(self, aws_endpoint: str, s3: Any, sqs: Any,
                                                             bucket: str, queue_url: str,
                                                             records: list[dict[str, Any]]) -> None:
        """Two agents on one queue evaluate the union of all records, none of them twice."""
        keys = upload(s3, bucket, records, chunk=4)
        assert len(keys) >= 30
        send_one_per_file(sqs, queue_url, bucket, keys)
        tally = Tally()
        first = make_consumer(aws_endpoint, queue_url)
        second = make_consumer(aws_endpoint, queue_url)
        with consuming(first, Evaluator(tally)), consuming(second, Evaluator(tally)):
            assert tally.wait_for(lambda: len(tally.ids) >= len(records))
        assert_once(tally.ids, records)
        assert first.metrics()["messages_deleted"] + second.metrics()["messages_deleted"] == len(keys)
        assert queue_counts(sqs, queue_url) == (0, 0)

    def test_stop_midway_then_restart_evaluates_each_record_once(self, aws_endpoint: str, s3: Any, sqs: Any,
                                                                 bucket: str, queue_url: str,
                                                                 records: list[dict[str, Any]]) -> None:
        """An agent stopped mid-way, its queued batches lost, leaves the rest to the next agent: each record once."""
        keys = upload(s3, bucket, records, chunk=4)
        send_one_per_file(sqs, queue_url, bucket, keys)
        tally = Tally()
        # Short, so that the messages whose batches were lost come back soon after the first agent stops.
        first = make_consumer(aws_endpoint, queue_url, visibility_timeout_s=3)
        dying = Evaluator(tally, max_acked=10)
        with consuming(first, dying):
            assert tally.wait_for(lambda: tally.acked >= 10 and tally.taken > 10)
        assert len(tally.ids) < len(records)
        second = make_consumer(aws_endpoint, queue_url)
        with consuming(second, Evaluator(tally)):
            assert tally.wait_for(lambda: len(tally.ids) >= len(records))
            assert wait_until(lambda: queue_counts(sqs, queue_url) == (0, 0))
        assert_once(tally.ids, records)
        assert first.metrics()["messages_deleted"] + second.metrics()["messages_deleted"] == len(keys)


class BuggySink:
    """The evaluator's queue, except that the first put fails with a bug and kills the worker that called it."""

    def __init__(self, queue: EventQueue) -> None:
        self.queue = queue
        self.is_broken = True

    def offer(self, events: Sequence[Event], on_done: Callable[[], None] | None = None) -> bool:
        return self.queue.offer(events, on_done)

    def put(self, events: Sequence[Event], on_done: Callable[[], None] | None = None, *,
            timeout_s: float | None = None) -> bool:
        if self.is_broken:
            self.is_broken = False
            raise RuntimeError("sink bug")
        return self.queue.put(events, on_done, timeout_s=timeout_s)


@pytest.mark.server
class TestLiveness:
    def test_a_worker_killed_by_a_bug_is_restarted_and_its_message_evaluated_once(
            self, aws_endpoint: str, s3: Any, sqs: Any, bucket: str, queue_url: str,
            records: list[dict[str, Any]]) -> None:
        """A worker dies on a bug: failure() reports it, the supervisor restarts the consumer, each record once."""
        sample = records[:10]
        sqs.send_message(QueueUrl=queue_url, MessageBody=body("cloudtrail", bucket, upload(s3, bucket, sample,
                                                                                          chunk=5), is_sns=False))
        tally = Tally()
        evaluator = Evaluator(tally)
        consumer = make_consumer(aws_endpoint, queue_url)
        raised: list[Alert] = []
        sup = SourceSupervisor([consumer], BuggySink(evaluator.queue), alerts=InternalAlerts(hostname="n"),
                               emit=raised.append, initial_backoff_s=0)
        sup.start_sources()
        try:
            assert wait_until(lambda: consumer.failure() is not None)
            assert "RuntimeError: sink bug" in str(consumer.failure())
            sup.check()  # notices the death and stops what is left of the consumer
            sup.check()  # starts it again (no backoff in this test)
            assert [alert.rule for alert in raised] == [SOURCE_FAILED, SOURCE_RESTARTED]
            assert consumer.failure() is None
            assert tally.wait_for(lambda: len(tally.ids) >= len(sample))
            assert wait_until(lambda: consumer.metrics()["messages_deleted"] == 1)
        finally:
            sup.stop()
            evaluator.stop()
        assert_once(tally.ids, sample)
        assert (consumer.metrics()["messages_abandoned"], consumer.metrics()["messages_released"]) == (1, 1)
        assert queue_counts(sqs, queue_url) == (0, 0)

    def test_a_stopped_consumer_reports_no_failure_and_starts_again(self, aws_endpoint: str, queue_url: str) -> None:
        """stop() is no failure, and the same consumer starts again after it, as the supervisor needs."""
        consumer = make_consumer(aws_endpoint, queue_url)
        sink = EventQueue(capacity_events=10)
        consumer.start(sink)
        consumer.stop()
        assert consumer.failure() is None
        consumer.start(sink)
        try:
            assert consumer.failure() is None
        finally:
            consumer.stop()
