"""Tests for sources/cloudtrail/s3.py: a real moto S3 endpoint in, aws_cloudtrail batches out, each record once."""

from __future__ import annotations

import gzip
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from structlog.testing import capture_logs

from agent.event_queue import EventQueue
from sources.cloudtrail.aws import AwsSettings
from sources.cloudtrail.objects import ObjectLimits
from sources.cloudtrail.s3 import S3TrailPoller, _DayProgress
from tests.support.queue_consumer import eventually, running

pytestmark = pytest.mark.server

WAIT_S = 10.0
REFERENCE = Path(__file__).resolve().parents[3].parent / "shared" / "reference"
SAMPLES = REFERENCE / "samples" / "cloudtrail"
ORG = "o-abc123"


@dataclass(frozen=True)
class Sample:
    """One Stratus technique file: its records share one account and one region."""

    name: str
    account: str
    region: str
    records: list[dict[str, Any]]

    @property
    def ids(self) -> set[str]:
        return {record["eventID"] for record in self.records}


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    stratus = SAMPLES / "stratus"
    if not stratus.is_dir():
        pytest.skip(f"reference samples missing: {stratus}")
    found = []
    for path in sorted(stratus.glob("*.json")):
        records = orjson.loads(path.read_bytes())
        found.append(Sample(path.stem, records[0]["recipientAccountId"], records[0]["awsRegion"], records))
    return found


@pytest.fixture()
def s3(aws_endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=aws_endpoint, region_name="us-east-1")


@pytest.fixture()
def bucket(s3: Any) -> str:
    name = f"trail-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


def log_key(account: str, region: str, *, day: str = "2024/08/01", n: int = 0, org: str | None = ORG,
            stamp: str = "0000") -> str:
    """A key in CloudTrail's layout: the organisation one unless `org` is None."""
    folder = f"AWSLogs/{org}/{account}" if org else f"AWSLogs/{account}"
    compact_day = day.replace("/", "")
    return f"{folder}/CloudTrail/{region}/{day}/{account}_CloudTrail_{region}_{compact_day}T{stamp}Z_{n}.json.gz"


def put_records(s3: Any, bucket: str, key: str, records: list[Any]) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(orjson.dumps({"Records": records})))


def upload(s3: Any, bucket: str, samples: list[Sample], *, day: str = "2024/08/01") -> set[str]:
    """Upload each sample as a gzipped log file in the organisation layout; the eventIDs uploaded."""
    for n, sample in enumerate(samples):
        put_records(s3, bucket, log_key(sample.account, sample.region, day=day, n=n), sample.records)
    return {event_id for sample in samples for event_id in sample.ids}


def poller(endpoint: str, bucket: str, **options: Any) -> S3TrailPoller:
    options.setdefault("poll_interval_s", 0.05)
    return S3TrailPoller(bucket=bucket, aws=AwsSettings(endpoint_url=endpoint, region="us-east-1"), **options)


def read_all(source: S3TrailPoller, expected: int, **consumer: Any) -> list[str]:
    """Every eventID a one-pass poller hands over, once it has ended and `expected` records arrived."""
    with running(source, **consumer) as consumer_:
        assert source.wait_finished(WAIT_S)
        return consumer_.wait_for(expected)


class TestReading:
    def test_every_record_once_from_both_layouts(self, aws_endpoint: str, s3: Any, bucket: str,
                                                 samples: list[Sample]) -> None:
        """Every record of the organisation and the single-account layouts arrives exactly once, with metrics."""
        expected = upload(s3, bucket, samples)
        alice_file = SAMPLES / "falco-regression" / "alice_start_instances.json"
        # The upstream regression record has no eventID; give it one to count it by.
        alice = [{**record, "eventID": f"alice-{n}"}
                 for n, record in enumerate(orjson.loads(alice_file.read_bytes())["Records"])]
        put_records(s3, bucket, log_key("123456789012", "us-east-2", org=None), alice)
        expected |= {record["eventID"] for record in alice}
        source = poller(aws_endpoint, bucket, follow=False, hostname="trail-host")
        got = read_all(source, len(expected))
        assert sorted(got) == sorted(expected)
        metrics = source.metrics()
        assert (metrics["files_read"], metrics["records_read"]) == (len(samples) + 1, len(expected))
        assert metrics["objects_rejected"] == metrics["s3_errors"] == 0
        assert metrics["lag_s"] > 0

    def test_events_are_cloudtrail_events(self, aws_endpoint: str, s3: Any, bucket: str,
                                          samples: list[Sample]) -> None:
        """Events carry the aws_cloudtrail source, the configured hostname and the eventName as type."""
        upload(s3, bucket, samples[:1])
        queue = EventQueue(1000)
        source = poller(aws_endpoint, bucket, follow=False, hostname="trail-host")
        source.start(queue)
        try:
            batch = queue.get(timeout_s=WAIT_S)
        finally:
            source.stop()
        assert batch is not None
        event = batch.events[0]
        assert (event.source, event.hostname, event.type) == (
            "aws_cloudtrail", "trail-host", samples[0].records[0]["eventName"])

    @pytest.mark.parametrize("concurrency", [1, 8])
    def test_concurrency_gives_the_same_records(self, aws_endpoint: str, s3: Any, bucket: str,
                                                samples: list[Sample], concurrency: int) -> None:
        """One download thread or eight: the same records, each once."""
        expected = upload(s3, bucket, samples)
        got = read_all(poller(aws_endpoint, bucket, follow=False, concurrency=concurrency), len(expected))
        assert sorted(got) == sorted(expected)

    def test_prefix_before_awslogs(self, aws_endpoint: str, s3: Any, bucket: str, samples: list[Sample]) -> None:
        """A trail written under a key prefix is found there; logs outside the prefix are not read."""
        sample = samples[0]
        put_records(s3, bucket, "trails/prod/" + log_key(sample.account, sample.region), sample.records)
        put_records(s3, bucket, log_key(samples[1].account, samples[1].region), samples[1].records)
        got = read_all(poller(aws_endpoint, bucket, prefix="trails/prod/", follow=False), len(sample.ids))
        assert set(got) == sample.ids and len(got) == len(sample.ids)


class TestFilters:
    def test_accounts_and_regions(self, aws_endpoint: str, s3: Any, bucket: str, samples: list[Sample]) -> None:
        """Only trails of the listed accounts and regions are read."""
        upload(s3, bucket, samples)
        wanted = samples[:3]
        source = poller(aws_endpoint, bucket, follow=False, accounts=[s.account for s in samples[:4]],
                        regions=[s.region for s in wanted])
        expected = {event_id for sample in wanted for event_id in sample.ids}
        got = read_all(source, len(expected))
        assert sorted(got) == sorted(expected)
        assert source.metrics()["files_read"] == len(wanted)

    def test_start_date(self, aws_endpoint: str, s3: Any, bucket: str, samples: list[Sample]) -> None:
        """Days before the start date are skipped, across a month and a year boundary."""
        upload(s3, bucket, samples[0:2], day="2023/12/31")
        upload(s3, bucket, samples[2:4], day="2024/07/31")
        expected = upload(s3, bucket, samples[4:6], day="2024/08/01")
        expected |= upload(s3, bucket, samples[6:7], day="2025/01/02")
        source = poller(aws_endpoint, bucket, follow=False, start_date=date(2024, 8, 1))
        got = read_all(source, len(expected))
        assert sorted(got) == sorted(expected)
        assert source.metrics()["files_read"] == 3


class TestCheckpoint:
    def test_listing_position_waits_for_the_lowest_pending_key(self) -> None:
        """Keys done out of order move the listing position only past keys with nothing pending below them."""
        day = _DayProgress(pending={"k1", "k2", "k3", "k4"})
        for key in ("k2", "k4"):
            day.pending.discard(key)
            day.done.add(key)
            day.compact()
        assert (day.after, day.done) == ("", {"k2", "k4"})
        day.pending.discard("k1")
        day.done.add("k1")
        day.compact()
        assert (day.after, day.done, day.pending) == ("k2", {"k4"}, {"k3"})
        day.pending.discard("k3")
        day.done.add("k3")
        day.compact()
        assert (day.after, day.done, day.is_settled) == ("k4", set(), True)

    def test_restart_resumes_exactly(self, aws_endpoint: str, s3: Any, bucket: str, samples: list[Sample],
                                     tmp_path: Path) -> None:
        """Stopped after some acknowledged objects and restarted, every record is evaluated once overall."""
        expected = upload(s3, bucket, samples)
        checkpoint = tmp_path / "state" / "s3.json"
        first = poller(aws_endpoint, bucket, concurrency=4, checkpoint_path=checkpoint)
        # A one-event queue keeps the downloaders waiting; acknowledgements come in reverse groups of three.
        with running(first, capacity=1, ack_limit=6, hold=3) as consumer:
            assert consumer.wait_acked(6)
        evaluated = list(consumer.event_ids)
        assert 0 < len(evaluated) < len(expected)
        acked = consumer.acked
        assert first.metrics()["checkpoint_writes"] == acked
        second = poller(aws_endpoint, bucket, follow=False, concurrency=4, checkpoint_path=checkpoint)
        evaluated += read_all(second, len(expected) - len(evaluated))
        assert sorted(evaluated) == sorted(expected)
        assert second.metrics()["files_read"] == len(samples) - acked

    @pytest.mark.parametrize("stop_after", [1, 5, 9])
    def test_restart_within_one_day_prefix(self, aws_endpoint: str, s3: Any, bucket: str, samples: list[Sample],
                                           tmp_path: Path, stop_after: int) -> None:
        """Many objects of one day fetched by eight threads and acknowledged out of order: a restart repeats none."""
        sample = max(samples, key=lambda s: len(s.records))
        chunks = [sample.records[i:i + 4] for i in range(0, len(sample.records), 4)]
        for n, chunk in enumerate(chunks):
            put_records(s3, bucket, log_key(sample.account, sample.region, stamp=f"{n:04d}"), chunk)
        checkpoint = tmp_path / "s3.json"
        first = poller(aws_endpoint, bucket, concurrency=8, checkpoint_path=checkpoint)
        with running(first, capacity=8, ack_limit=stop_after, hold=3) as consumer:
            assert consumer.wait_acked(stop_after)
        evaluated = list(consumer.event_ids)
        saved = orjson.loads(checkpoint.read_bytes())["days"]
        assert len(saved) == 1
        second = poller(aws_endpoint, bucket, follow=False, concurrency=8, checkpoint_path=checkpoint)
        evaluated += read_all(second, len(sample.ids) - len(evaluated))
        assert sorted(evaluated) == sorted(sample.ids)
        assert second.metrics()["files_read"] == len(chunks) - consumer.acked

    def test_done_bucket_read_again_reads_nothing(self, aws_endpoint: str, s3: Any, bucket: str,
                                                  samples: list[Sample], tmp_path: Path) -> None:
        """After a complete pass, a restart reads no object, and only a new one afterwards."""
        expected = upload(s3, bucket, samples[:5])
        checkpoint = tmp_path / "s3.json"
        assert sorted(read_all(poller(aws_endpoint, bucket, follow=False, checkpoint_path=checkpoint),
                               len(expected))) == sorted(expected)
        again = poller(aws_endpoint, bucket, follow=False, checkpoint_path=checkpoint)
        assert read_all(again, 0) == []
        assert again.metrics()["files_read"] == 0
        new = samples[5]
        put_records(s3, bucket, log_key(new.account, new.region, stamp="2355"), new.records)
        assert sorted(read_all(poller(aws_endpoint, bucket, follow=False, checkpoint_path=checkpoint),
                               len(new.ids))) == sorted(new.ids)

    def test_checkpoint_for_another_bucket_ignored(self, aws_endpoint: str, s3: Any, bucket: str,
                                                   samples: list[Sample], tmp_path: Path) -> None:
        """A checkpoint written for another bucket is not applied (and logged), so nothing is skipped."""
        expected = upload(s3, bucket, samples[:2])
        checkpoint = tmp_path / "s3.json"
        checkpoint.write_bytes(orjson.dumps({"version": 1, "bucket": "other", "days": {}}))
        with capture_logs() as logs:
            got = read_all(poller(aws_endpoint, bucket, follow=False, checkpoint_path=checkpoint), len(expected))
        assert sorted(got) == sorted(expected)
        assert any(entry["event"] == "checkpoint_ignored" for entry in logs)


class TestFollowing:
    def test_new_objects_picked_up(self, aws_endpoint: str, s3: Any, bucket: str, samples: list[Sample]) -> None:
        """Objects uploaded while polling, later the same day or on a new day, are read on a later poll."""
        first = upload(s3, bucket, samples[:4])
        source = poller(aws_endpoint, bucket)
        with running(source) as consumer:
            assert sorted(consumer.wait_for(len(first))) == sorted(first)
            late, next_day = samples[4], samples[5]
            put_records(s3, bucket, log_key(late.account, late.region, stamp="0005"), late.records)
            put_records(s3, bucket, log_key(next_day.account, next_day.region, day="2024/08/02"), next_day.records)
            expected = first | late.ids | next_day.ids
            got = consumer.wait_for(len(expected))
        assert sorted(got) == sorted(expected)


class TestErrors:
    def test_corrupt_objects_reported_while_the_rest_goes_on(self, aws_endpoint: str, s3: Any, bucket: str,
                                                             samples: list[Sample], tmp_path: Path) -> None:
        """Bad gzip, truncated JSON, Records not a list and a string record are logged and counted, not fatal."""
        good = samples[0]
        record = samples[1].records[0]
        put_records(s3, bucket, log_key(good.account, good.region, n=0), good.records)
        bad = {
            1: b"\x1f\x8b\x08\x00garbage",
            2: gzip.compress(b'{"Records": [{"eventID": "x"'),
            3: gzip.compress(b'{"Records": {"not": "a list"}}'),
        }
        for n, body in bad.items():
            s3.put_object(Bucket=bucket, Key=log_key(good.account, good.region, n=n), Body=body)
        put_records(s3, bucket, log_key(good.account, good.region, n=4), ["a string", record])
        expected = good.ids | {record["eventID"]}
        checkpoint = tmp_path / "s3.json"
        with capture_logs() as logs:
            source = poller(aws_endpoint, bucket, follow=False, checkpoint_path=checkpoint)
            got = read_all(source, len(expected))
        assert sorted(got) == sorted(expected)
        rejected = {entry["object"]: entry["reason"] for entry in logs
                    if entry["event"] == "cloudtrail_object_rejected"}
        assert set(rejected) == {f"s3://{bucket}/{log_key(good.account, good.region, n=n)}" for n in bad}
        assert "gzip" in rejected[f"s3://{bucket}/{log_key(good.account, good.region, n=1)}"]
        assert "JSON" in rejected[f"s3://{bucket}/{log_key(good.account, good.region, n=2)}"]
        assert "Records" in rejected[f"s3://{bucket}/{log_key(good.account, good.region, n=3)}"]
        skipped = [entry for entry in logs if entry["event"] == "cloudtrail_records_skipped"]
        assert [(entry["first_record"], entry["count"]) for entry in skipped] == [("0", 1)]
        metrics = source.metrics()
        assert (metrics["objects_rejected"], metrics["records_skipped_invalid"], metrics["files_read"]) == (3, 1, 5)
        # Rejected objects are done: a restart does not read them again.
        again = poller(aws_endpoint, bucket, follow=False, checkpoint_path=checkpoint)
        assert read_all(again, 0) == []
        assert again.metrics()["files_read"] == 0

    def test_objects_and_records_over_the_limits_skipped_and_remembered(self, aws_endpoint: str, s3: Any,
                                                                        bucket: str, samples: list[Sample],
                                                                        tmp_path: Path) -> None:
        """A gzip expanding past max_object_bytes and a plain object stored past it are skipped whole, with a warning
        naming them and the limit; a record past max_event_bytes is skipped alone; a restart retries none."""
        good, record = samples[0], samples[1].records[0]
        limits = ObjectLimits(max_object_bytes=1024 * 1024, max_event_bytes=64 * 1024)
        blanks = b'{"Records": [' + b" " * (4 * 1024 * 1024) + b"]}"
        put_records(s3, bucket, log_key(good.account, good.region, n=0), good.records)
        too_large = {1: gzip.compress(blanks), 2: blanks}
        for n, body in too_large.items():
            s3.put_object(Bucket=bucket, Key=log_key(good.account, good.region, n=n), Body=body)
        huge = {**samples[1].records[1], "requestParameters": {"policy": "x" * (128 * 1024)}}
        put_records(s3, bucket, log_key(good.account, good.region, n=3), [huge, record])
        expected = good.ids | {record["eventID"]}
        checkpoint = tmp_path / "s3.json"
        with capture_logs() as logs:
            source = poller(aws_endpoint, bucket, follow=False, checkpoint_path=checkpoint, limits=limits)
            with running(source) as consumer:
                assert consumer.wait_acked(4)  # the skipped objects too, as empty batches
        assert sorted(consumer.event_ids) == sorted(expected)
        reasons = {entry["object"]: entry["reason"] for entry in logs
                   if entry["event"] == "cloudtrail_object_too_large"}
        keys = {n: f"s3://{bucket}/{log_key(good.account, good.region, n=n)}" for n in (1, 2, 3)}
        assert reasons.keys() == {keys[1], keys[2]}
        assert "max_object_bytes (1048576 bytes) once decompressed" in reasons[keys[1]]
        assert "max_object_bytes (1048576 bytes) as stored" in reasons[keys[2]]
        [records] = [entry for entry in logs if entry["event"] == "cloudtrail_records_too_large"]
        assert (records["object"], records["first_record"]) == (keys[3], "0")
        assert "max_event_bytes (65536 bytes)" in records["reason"]
        metrics = source.metrics()
        assert (metrics["objects_too_large"], metrics["records_skipped_too_large"], metrics["files_read"]) == (2, 1, 4)
        again = poller(aws_endpoint, bucket, follow=False, checkpoint_path=checkpoint, limits=limits)
        assert read_all(again, 0) == []
        assert again.metrics()["files_read"] == 0

    def test_insight_and_incomplete_records_skipped(self, aws_endpoint: str, s3: Any, bucket: str,
                                                    samples: list[Sample]) -> None:
        """Insight records and records without eventTime or eventType are skipped and counted by reason."""
        good = samples[0].records[0]
        insight = {**samples[0].records[1], "eventType": "AwsCloudTrailInsight"}
        no_time = {k: v for k, v in samples[0].records[2].items() if k != "eventTime"}
        no_type = {k: v for k, v in samples[1].records[0].items() if k != "eventType"}
        put_records(s3, bucket, log_key(samples[0].account, samples[0].region), [good, insight, no_time, no_type])
        source = poller(aws_endpoint, bucket, follow=False)
        assert read_all(source, 1) == [good["eventID"]]
        metrics = source.metrics()
        assert (metrics["records_skipped_insight"], metrics["records_skipped_missing_event_time"],
                metrics["records_skipped_missing_event_type"], metrics["records_read"]) == (1, 1, 1, 1)

    def test_missing_bucket_counted_and_polling_goes_on(self, aws_endpoint: str, s3: Any,
                                                        samples: list[Sample]) -> None:
        """A bucket that does not exist yet is an S3 error, counted and logged; once it exists, it is read."""
        name = f"trail-{uuid.uuid4().hex[:16]}"
        source = poller(aws_endpoint, name, poll_interval_s=0.02)
        with capture_logs() as logs, running(source) as consumer:
            assert eventually(lambda: source.metrics()["s3_errors"] >= 2)
            s3.create_bucket(Bucket=name)
            expected = upload(s3, name, samples[:2])
            got = consumer.wait_for(len(expected))
            assert not source.wait_finished(0)
        assert sorted(got) == sorted(expected)
        errors = [entry for entry in logs if entry["event"] == "cloudtrail_s3_error"]
        assert errors and "NoSuchBucket" in errors[0]["reason"]

    def test_deleted_bucket_counted_and_polling_goes_on(self, aws_endpoint: str, s3: Any, bucket: str,
                                                   samples: list[Sample]) -> None:
        """A deleted bucket mid-run is counted; re-created with new objects, polling reads them."""
        first = upload(s3, bucket, samples[:1])
        source = poller(aws_endpoint, bucket, poll_interval_s=0.02)
        with running(source) as consumer:
            assert sorted(consumer.wait_for(len(first))) == sorted(first)
            s3.delete_object(Bucket=bucket, Key=log_key(samples[0].account, samples[0].region))
            s3.delete_bucket(Bucket=bucket)
            assert eventually(lambda: source.metrics()["s3_errors"] >= 1)
            s3.create_bucket(Bucket=bucket)
            second = samples[1]
            put_records(s3, bucket, log_key(second.account, second.region, day="2024/08/02"), second.records)
            got = consumer.wait_for(len(first) + len(second.ids))
        assert sorted(got) == sorted(first | second.ids)
