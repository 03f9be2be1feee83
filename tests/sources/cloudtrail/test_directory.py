"""Tests for sources/cloudtrail/directory.py: CloudTrail log files on disk in, aws_cloudtrail batches out, once each."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from agent.errors import AgentError
from agent.event_queue import EventQueue
from sources.cloudtrail.directory import CloudTrailDirectory
from tests.support.queue_consumer import eventually, running

WAIT_S = 5.0
REFERENCE = Path(__file__).resolve().parents[3].parent / "shared" / "reference"
STRATUS = REFERENCE / "samples" / "cloudtrail" / "stratus"


@pytest.fixture(scope="module")
def samples() -> list[list[dict[str, Any]]]:
    """The records of each Stratus technique file."""
    if not STRATUS.is_dir():
        pytest.skip(f"reference samples missing: {STRATUS}")
    return [orjson.loads(path.read_bytes()) for path in sorted(STRATUS.glob("*.json"))]


def write_log(path: Path, records: list[Any], *, is_gzipped: bool = True) -> set[str]:
    """Write a CloudTrail log file (gzipped unless told) and return its eventIDs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = orjson.dumps({"Records": records})
    path.write_bytes(gzip.compress(body) if is_gzipped else body)
    return {record["eventID"] for record in records if isinstance(record, dict)}


def synced_trail(root: Path, samples: list[list[dict[str, Any]]], *, day: str = "2024/08/01") -> set[str]:
    """Lay the samples out as `aws s3 sync` of an organisation trail would, below `root`."""
    expected: set[str] = set()
    for n, records in enumerate(samples):
        account, region = records[0]["recipientAccountId"], records[0]["awsRegion"]
        name = f"{account}_CloudTrail_{region}_{day.replace('/', '')}T0000Z_{n}.json.gz"
        expected |= write_log(root / "AWSLogs" / "o-abc123" / account / "CloudTrail" / region / day / name, records)
    return expected


def read_all(source: CloudTrailDirectory, expected: int) -> list[str]:
    """Every eventID a one-pass watcher hands over, once it has ended and `expected` records arrived."""
    with running(source) as consumer:
        assert source.wait_finished(WAIT_S)
        return consumer.wait_for(expected)


class TestReading:
    def test_synced_trail_read_once(self, tmp_path: Path, samples: list[list[dict[str, Any]]]) -> None:
        """Every record of a synced trail, gzipped or plain, arrives once; other files are ignored."""
        expected = synced_trail(tmp_path, samples[1:])
        expected |= write_log(tmp_path / "dropped.json", samples[0], is_gzipped=False)
        (tmp_path / "README.txt").write_text("not a log\n")
        (tmp_path / ".partial.json").write_bytes(b"{")
        source = CloudTrailDirectory(paths=[tmp_path], follow=False, hostname="host-1")
        got = read_all(source, len(expected))
        assert sorted(got) == sorted(expected)
        metrics = source.metrics()
        assert (metrics["files_read"], metrics["records_read"]) == (len(samples), len(expected))
        assert metrics["objects_rejected"] == metrics["read_errors"] == 0
        assert metrics["objects_too_large"] == metrics["records_skipped_too_large"] == 0
        assert metrics["files_skipped_not_regular"] == metrics["symlinks_skipped_outside"] == 0
        assert metrics["lag_s"] > 0

    def test_file_named_directly(self, tmp_path: Path, samples: list[list[dict[str, Any]]]) -> None:
        """A file given as a path is read whatever its name; files beside it are not."""
        log_file = tmp_path / "trail.log"
        expected = write_log(log_file, samples[0])
        write_log(tmp_path / "other.json.gz", samples[1])
        got = read_all(CloudTrailDirectory(paths=[log_file], follow=False), len(expected))
        assert sorted(got) == sorted(expected)

    def test_missing_path_fatal_without_follow(self, tmp_path: Path) -> None:
        """Reading recorded files that do not exist fails at start, naming the path."""
        source = CloudTrailDirectory(paths=[tmp_path / "nope"], follow=False)
        with pytest.raises(AgentError, match="not found") as info:
            source.start(EventQueue(10))
        assert str(tmp_path / "nope") in str(info.value)


class TestFollowing:
    def test_new_files_picked_up(self, tmp_path: Path, samples: list[list[dict[str, Any]]]) -> None:
        """Files synced in while watching, and a directory created later, are read on a later poll."""
        first = synced_trail(tmp_path / "trail", samples[:3])
        source = CloudTrailDirectory(paths=[tmp_path / "trail", tmp_path / "later"], poll_interval_s=0.02)
        with running(source) as consumer:
            assert sorted(consumer.wait_for(len(first))) == sorted(first)
            second = synced_trail(tmp_path / "trail", samples[3:6], day="2024/08/02")
            second |= write_log(tmp_path / "later" / "x.json.gz", samples[6])
            expected = first | second
            got = consumer.wait_for(len(expected))
        assert sorted(got) == sorted(expected)

    def test_rewritten_file_read_again(self, tmp_path: Path, samples: list[list[dict[str, Any]]]) -> None:
        """A file replaced with new content (new size and mtime) is a new file and is read."""
        log_file = tmp_path / "trail.json"
        first = write_log(log_file, samples[0], is_gzipped=False)
        source = CloudTrailDirectory(paths=[tmp_path], poll_interval_s=0.02)
        with running(source) as consumer:
            assert sorted(consumer.wait_for(len(first))) == sorted(first)
            second = write_log(log_file, samples[1], is_gzipped=False)
            got = consumer.wait_for(len(first) + len(second))
        assert sorted(got) == sorted(first | second)


class TestCheckpoint:
    def test_restart_reads_no_file_twice(self, tmp_path: Path, samples: list[list[dict[str, Any]]]) -> None:
        """Stopped after some acknowledged files and restarted, every record is evaluated once overall."""
        trail = tmp_path / "trail"
        expected = synced_trail(trail, samples)
        checkpoint = tmp_path / "state" / "files.json"
        first = CloudTrailDirectory(paths=[trail], checkpoint_path=checkpoint, poll_interval_s=0.02)
        with running(first, capacity=1, ack_limit=5) as consumer:
            assert consumer.wait_acked(5)
        evaluated = list(consumer.event_ids)
        assert first.metrics()["checkpoint_writes"] == consumer.acked
        second = CloudTrailDirectory(paths=[trail], checkpoint_path=checkpoint, follow=False)
        evaluated += read_all(second, len(expected) - len(evaluated))
        assert sorted(evaluated) == sorted(expected)
        assert second.metrics()["files_read"] == len(samples) - consumer.acked

    def test_checkpoint_inside_watched_directory_not_read(self, tmp_path: Path,
                                                          samples: list[list[dict[str, Any]]]) -> None:
        """A checkpoint kept in the watched directory is not taken for a log file."""
        expected = write_log(tmp_path / "a.json", samples[0], is_gzipped=False)
        checkpoint = tmp_path / "checkpoint.json"
        assert sorted(read_all(CloudTrailDirectory(paths=[tmp_path], follow=False, checkpoint_path=checkpoint),
                               len(expected))) == sorted(expected)
        again = CloudTrailDirectory(paths=[tmp_path], follow=False, checkpoint_path=checkpoint)
        assert read_all(again, 0) == []
        assert again.metrics()["files_read"] == again.metrics()["objects_rejected"] == 0


class TestErrors:
    def test_corrupt_files_reported_while_the_rest_goes_on(self, tmp_path: Path,
                                                           samples: list[list[dict[str, Any]]]) -> None:
        """Bad gzip, truncated JSON, Records not a list and a string record are logged and counted, not fatal."""
        expected = write_log(tmp_path / "0-good.json.gz", samples[0])
        bad = {
            tmp_path / "1-bad.json.gz": b"\x1f\x8b\x08\x00garbage",
            tmp_path / "2-truncated.json": b'{"Records": [{"eventID": "x"',
            tmp_path / "3-shape.json": b'{"Records": "not a list"}',
        }
        for path, body in bad.items():
            path.write_bytes(body)
        expected |= write_log(tmp_path / "4-string.json", ["a string", samples[1][0]], is_gzipped=False)
        checkpoint = tmp_path / "state" / "files.json"
        with capture_logs() as logs:
            source = CloudTrailDirectory(paths=[tmp_path], follow=False, checkpoint_path=checkpoint)
            got = read_all(source, len(expected))
        assert sorted(got) == sorted(expected)
        rejected = {entry["object"] for entry in logs if entry["event"] == "cloudtrail_object_rejected"}
        assert rejected == {str(path) for path in bad}
        assert [entry["object"] for entry in logs if entry["event"] == "cloudtrail_records_skipped"] == [
            str(tmp_path / "4-string.json")]
        metrics = source.metrics()
        assert (metrics["objects_rejected"], metrics["records_skipped_invalid"], metrics["files_read"]) == (3, 1, 5)
        again = CloudTrailDirectory(paths=[tmp_path], follow=False, checkpoint_path=checkpoint)
        assert read_all(again, 0) == []
        assert again.metrics()["files_read"] == 0

    @pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
    def test_unreadable_file_counted_and_retried(self, tmp_path: Path, samples: list[list[dict[str, Any]]]) -> None:
        """A file that cannot be opened is logged once and counted, then read once it becomes readable."""
        log_file = tmp_path / "locked.json"
        expected = write_log(log_file, samples[0], is_gzipped=False)
        log_file.chmod(0)
        source = CloudTrailDirectory(paths=[tmp_path], poll_interval_s=0.02)
        with capture_logs() as logs, running(source) as consumer:
            assert eventually(lambda: source.metrics()["read_errors"] >= 2)
            log_file.chmod(0o644)
            got = consumer.wait_for(len(expected))
        assert sorted(got) == sorted(expected)
        assert [entry["event"] for entry in logs].count("cloudtrail_file_unreadable") == 1
