"""Hostile CloudTrail inputs (issue 13, case 3): a gzip bomb, `/dev/zero` behind a link, FIFOs, sockets and devices
named `*.json`, links leading out of the watched directory, oversized records and objects.

Each case is the report's own input, made real on disk (or in moto's S3 and SQS): the input skips it with one
warning naming it and the limit or the reason, counts it, remembers it as done when it was a file it read, reads
the next file, keeps its memory bounded and never blocks.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from structlog.testing import capture_logs

from agent.config.schema import CloudTrailConfig
from sources.cloudtrail.aws import AwsSettings
from sources.cloudtrail.decoder import CloudTrailDecoder
from sources.cloudtrail.directory import CloudTrailDirectory
from sources.cloudtrail.objects import ObjectLimits, decode_object
from sources.cloudtrail.sqs import SqsTrailConsumer
from tests.support.agent_process import REPO, Agent
from tests.support.process_memory import memory_mib, reset_peak
from tests.support.queue_consumer import eventually, running

MiB = 1024 * 1024
WAIT_S = 10.0
#: The example trail of the checkout: 56 records, several of which raise alerts with the shipped rules.
EXAMPLE_LOG = next((REPO / "examples" / "cloudtrail" / "AWSLogs").rglob("*.json.gz"))
DEFAULT_MAX_OBJECT_BYTES = CloudTrailConfig().max_object_bytes
DEFAULT_MAX_EVENT_BYTES = CloudTrailConfig().max_event_bytes
#: What reading a bomb may add to the process's peak memory beyond the limit itself: chunks, the file's
#: records, allocator slack. The unbounded reader took 2.5 GB for a 1.2 GB bomb.
SLACK_MIB = 64


# --- inputs ---------------------------------------------------------------------------------------------------------

def write_bomb(path: Path, expanded_mib: int, *, members: int = 1) -> None:
    """A gzip of a CloudTrail log padded with `expanded_mib` MiB of blanks, about 1 KB per MiB, written in a second.

    One deflate segment of 1 MiB of blanks, flushed so that it stands alone, is repeated: gzip -t accepts the file
    (its CRC and length are right). With several members, each but the last is a small honest one.
    """
    def segment(data: bytes, *, is_last: bool = False) -> bytes:
        deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        return deflate.compress(data) + deflate.flush(zlib.Z_FINISH if is_last else zlib.Z_FULL_FLUSH)

    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    head, blanks, tail = b'{"Records": [', b" " * MiB, b"]}"
    with path.open("wb") as out:
        for _ in range(members - 1):
            out.write(gzip.compress(b" "))
        crc = zlib.crc32(head)
        for _ in range(expanded_mib):
            crc = zlib.crc32(blanks, crc)
        crc = zlib.crc32(tail, crc)
        out.write(header + segment(head))
        repeated = segment(blanks)
        for _ in range(expanded_mib):
            out.write(repeated)
        out.write(segment(tail, is_last=True))
        out.write(struct.pack("<II", crc, (len(head) + expanded_mib * MiB + len(tail)) & 0xFFFFFFFF))


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """1 MB gzip files expanding to 1 GiB: one member (as gzip writes), and after a small honest member."""
    folder = tmp_path_factory.mktemp("bombs")
    made = {"one member": folder / "one.json.gz", "two members": folder / "two.json.gz"}
    write_bomb(made["one member"], 1024)
    write_bomb(made["two members"], 1024, members=2)
    assert made["one member"].stat().st_size < 2 * MiB
    return made


@pytest.fixture(scope="module")
def example_records() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = orjson.loads(gzip.decompress(EXAMPLE_LOG.read_bytes()))["Records"]
    return records


def write_log(path: Path, records: list[Any]) -> set[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(orjson.dumps({"Records": records})))
    return {record["eventID"] for record in records}


def events_of(logs: Sequence[MutableMapping[str, Any]], event: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


def read_all(source: CloudTrailDirectory, expected: int) -> list[str]:
    """Every eventID a one-pass watcher hands over, once it has ended and `expected` records arrived."""
    with running(source) as consumer:
        assert source.wait_finished(WAIT_S)
        return consumer.wait_for(expected)


def polls_pass(count: int, interval_s: float) -> None:
    """Let a following watcher poll `count` more times."""
    threading.Event().wait(count * interval_s)


# --- decompression bombs and oversized objects ------------------------------------------------------------------------

class TestDecompressionBomb:
    @pytest.mark.parametrize("kind", ["one member", "two members"])
    def test_skipped_in_bounded_memory_next_file_read_and_never_retried(
            self, tmp_path: Path, bombs: dict[str, Path], example_records: list[dict[str, Any]], kind: str) -> None:
        """A 1 MB file expanding to 1 GiB: the peak memory grows by the limit at most, the file is skipped with a
        warning naming it and the limit, the next file's records all arrive, and a restart does not read it again."""
        trail = tmp_path / "trail"
        trail.mkdir()
        bomb = trail / "0-bomb.json.gz"
        shutil.copy(bombs[kind], bomb)
        expected = write_log(trail / "1-next.json.gz", example_records)
        checkpoint = tmp_path / "state" / "files.json"
        before = reset_peak()
        with capture_logs() as logs:
            source = CloudTrailDirectory(paths=[trail], follow=False, checkpoint_path=checkpoint)
            got = read_all(source, len(expected))
        growth = memory_mib()["VmHWM"] - before
        print(f"{kind}: peak resident size +{growth:.0f} MiB reading a 1 GiB bomb "
              f"(limit {DEFAULT_MAX_OBJECT_BYTES // MiB} MiB)")
        assert growth < DEFAULT_MAX_OBJECT_BYTES / MiB + SLACK_MIB
        assert sorted(got) == sorted(expected)
        [warning] = events_of(logs, "cloudtrail_object_too_large")
        assert warning["object"] == str(bomb)
        assert f"max_object_bytes ({DEFAULT_MAX_OBJECT_BYTES} bytes) once decompressed" in warning["reason"]
        metrics = source.metrics()
        assert (metrics["files_read"], metrics["objects_too_large"], metrics["objects_rejected"]) == (2, 1, 1)
        with capture_logs() as logs:
            again = CloudTrailDirectory(paths=[trail], follow=False, checkpoint_path=checkpoint)
            assert read_all(again, 0) == []
        assert again.metrics()["files_read"] == 0
        assert not events_of(logs, "cloudtrail_object_too_large")

    def test_plain_file_over_the_limit_is_not_read_past_it(self, tmp_path: Path,
                                                           example_records: list[dict[str, Any]]) -> None:
        """A plain `.json` over max_object_bytes is rejected as stored, after reading no more than the limit."""
        big = tmp_path / "0-big.json"
        big.write_bytes(b'{"Records": [' + b" " * (4 * MiB) + b"]}")
        expected = write_log(tmp_path / "1-next.json.gz", example_records)
        limits = ObjectLimits(max_object_bytes=MiB)
        with capture_logs() as logs:
            source = CloudTrailDirectory(paths=[tmp_path], follow=False, limits=limits)
            assert sorted(read_all(source, len(expected))) == sorted(expected)
        [warning] = events_of(logs, "cloudtrail_object_too_large")
        assert warning["object"] == str(big) and f"({MiB} bytes) as stored" in warning["reason"]

    def test_limits_are_exact(self) -> None:
        """An object of exactly max_object_bytes is read, plain or gzipped; one byte more is too large. A record of
        exactly max_event_bytes is read; one byte more is skipped."""
        record = {"eventVersion": "1.08", "eventTime": "2024-08-01T10:00:00Z", "eventType": "AwsApiCall",
                  "eventName": "GetCallerIdentity", "eventID": "e-1"}
        data = orjson.dumps({"Records": [record]})
        record_size = len(orjson.dumps(record))
        for body in (data, gzip.compress(data)):
            exact = decode_object(body, name="x", decoder=CloudTrailDecoder(),
                                  limits=ObjectLimits(max_object_bytes=len(data), max_event_bytes=record_size))
            assert (len(exact.events), exact.errors) == (1, [])
            over = decode_object(body, name="x", decoder=CloudTrailDecoder(),
                                 limits=ObjectLimits(max_object_bytes=len(data) - 1))
            assert over.is_corrupt and over.errors[0].reason == "too_large"
        record_over = decode_object(data, name="x", decoder=CloudTrailDecoder(),
                                    limits=ObjectLimits(max_event_bytes=record_size - 1))
        assert not record_over.events and record_over.errors[0].reason == "too_large"
        assert record_over.errors[0].location is not None and record_over.errors[0].location.item_name == "0"

    def test_gzip_members_padding_and_truncation(self) -> None:
        """Several gzip members with zero padding between them are one document; a cut gzip is still reported."""
        data = orjson.dumps({"Records": [{"eventTime": "2024-08-01T10:00:00Z", "eventType": "AwsApiCall"}] * 3})
        members = gzip.compress(data[:10]) + b"\0\0\0" + gzip.compress(data[10:]) + b"\0"
        assert len(decode_object(members, name="x", decoder=CloudTrailDecoder()).events) == 3
        cut = decode_object(gzip.compress(data)[:-6], name="x", decoder=CloudTrailDecoder())
        assert cut.is_corrupt and "gzip" in cut.errors[0].message

    def test_out_of_memory_skips_the_file_instead_of_failing_the_input(self, tmp_path: Path,
                                                                       example_records: list[dict[str, Any]]) -> None:
        """Under a real memory limit (RLIMIT_AS, in a child process), a file under max_object_bytes that does not fit
        is skipped and remembered as done: the next file is read, and a restart does not try it again."""
        trail = tmp_path / "trail"
        trail.mkdir()
        write_bomb(trail / "0-fat.json.gz", 200)  # under the 256 MiB default: it is memory that runs out
        expected = write_log(trail / "1-next.json.gz", example_records)
        script = """
import json, resource, sys
from pathlib import Path
from sources.cloudtrail.directory import CloudTrailDirectory
from tests.support.queue_consumer import running
size = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (size + 100 * 1024 * 1024, resource.RLIM_INFINITY))
source = CloudTrailDirectory(paths=[sys.argv[1]], follow=False, checkpoint_path=Path(sys.argv[2]))
with running(source) as consumer:
    source.wait_finished(10)
    ids = consumer.wait_for(int(sys.argv[3]))
print(json.dumps({"ids": ids, **source.metrics()}))
"""
        checkpoint = tmp_path / "files.json"
        runs = []
        for count in (len(expected), 0):  # the second run, on the checkpoint, must read nothing
            done = subprocess.run([sys.executable, "-c", script, str(trail), str(checkpoint), str(count)],
                                  cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 0, done.stderr
            *log_lines, result = done.stdout.splitlines()  # structlog's default logger prints to stdout
            runs.append((json.loads(result), "\n".join(log_lines)))
        (first, first_log), (second, _) = runs
        assert sorted(first["ids"]) == sorted(expected)
        assert (first["objects_too_large"], first["files_read"]) == (1, 2)
        assert "out of memory while decoding it" in first_log and "0-fat.json.gz" in first_log
        assert (second["ids"], second["files_read"]) == ([], 0)


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize("limit", [DEFAULT_MAX_OBJECT_BYTES, 64 * MiB], ids=["default limit", "64 MiB"])
def test_agent_stays_up_within_memory_and_reads_the_next_file(tmp_path: Path, bombs: dict[str, Path],
                                                              limit: int) -> None:
    """The report, end to end: a real agent watching a directory gets the bomb and then a real trail file. It logs the
    bomb once, stays up, raises the trail's alerts, and its peak memory grows by the limit at most; restarted on its
    checkpoint, it reads the next new file without trying the bomb again."""
    trail = tmp_path / "trail"
    trail.mkdir()
    checkpoint = tmp_path / "state" / "files.json"
    options = ["--json", "-o", "sources.k8s_audit.enabled=false",
               "-o", f"sources.aws_cloudtrail.directory.paths=[{trail}]",
               "-o", f"sources.aws_cloudtrail.directory.checkpoint_path={checkpoint}",
               "-o", "sources.aws_cloudtrail.directory.poll_interval_s=0.2"]
    if limit != DEFAULT_MAX_OBJECT_BYTES:
        options += ["-o", f"sources.aws_cloudtrail.max_object_bytes={limit}"]
    agent = Agent(*options)
    agent.read_alerts()
    try:
        agent.wait_for_log("agent_started", timeout_s=60)
        before = reset_peak(agent.proc.pid)
        shutil.copy(bombs["one member"], trail / "0-bomb.json.gz")
        shutil.copy(EXAMPLE_LOG, trail / "1-next.json.gz")
        warning = agent.wait_for_log("cloudtrail_object_too_large")
        assert warning["object"] == str(trail / "0-bomb.json.gz")
        assert f"max_object_bytes ({limit} bytes)" in warning["reason"]
        alerts = agent.wait_for_alerts(1)
        assert alerts[0]["source"] == "aws_cloudtrail"
        growth = memory_mib(agent.proc.pid)["VmHWM"] - before
        print(f"agent: peak resident size +{growth:.0f} MiB over {before:.0f} MiB reading a 1 GiB bomb "
              f"(limit {limit // MiB} MiB)")
        assert growth < limit / MiB + SLACK_MIB
        assert agent.proc.poll() is None
    finally:
        code, _ = agent.stop()
    assert code == 0
    assert str(trail / "0-bomb.json.gz") in checkpoint.read_text()

    again = Agent(*options)
    again.read_alerts()
    try:
        again.wait_for_log("agent_started", timeout_s=60)
        shutil.copy(EXAMPLE_LOG, trail / "2-later.json.gz")
        assert again.wait_for_alerts(1)[0]["source"] == "aws_cloudtrail"
    finally:
        again.stop()
    assert "cloudtrail_object_too_large" not in "".join(again.stderr)


class TestOversizedRecord:
    def test_record_over_the_limit_skipped_while_the_rest_are_read(self, tmp_path: Path,
                                                                   example_records: list[dict[str, Any]]) -> None:
        """A 2 MiB record between two good ones: skipped with a warning naming the file, its index and the limit."""
        huge = {**example_records[1], "requestParameters": {"policy": "x" * (2 * MiB)}}
        log_file = tmp_path / "trail.json.gz"
        write_log(log_file, [example_records[0], huge, example_records[2]])
        with capture_logs() as logs:
            source = CloudTrailDirectory(paths=[tmp_path], follow=False)
            got = read_all(source, 2)
        assert sorted(got) == sorted([example_records[0]["eventID"], example_records[2]["eventID"]])
        [warning] = events_of(logs, "cloudtrail_records_too_large")
        assert (warning["object"], warning["first_record"], warning["count"]) == (str(log_file), "1", 1)
        assert f"over max_event_bytes ({DEFAULT_MAX_EVENT_BYTES} bytes)" in warning["reason"]
        assert not events_of(logs, "cloudtrail_records_skipped")
        metrics = source.metrics()
        assert (metrics["records_read"], metrics["records_skipped_too_large"]) == (2, 1)


    def test_record_nested_too_deep_to_measure_skipped(self, tmp_path: Path,
                                                       example_records: list[dict[str, Any]]) -> None:
        """A record nested 300 levels deep parses but cannot be written back as JSON to be measured: it is skipped as
        invalid, and neither the file nor the watcher fails over it. (The file is made longer than max_event_bytes,
        or its records would not be measured at all.)"""
        deep: Any = "bottom"
        for _ in range(300):
            deep = {"k": deep}
        records = [{**example_records[0], "requestParameters": deep}, example_records[1]]
        (tmp_path / "trail.json").write_text(json.dumps({"Records": records}))  # orjson would refuse to write it
        with capture_logs() as logs:
            source = CloudTrailDirectory(paths=[tmp_path], follow=False, limits=ObjectLimits(max_event_bytes=1024))
            assert read_all(source, 1) == [example_records[1]["eventID"]]
        [warning] = events_of(logs, "cloudtrail_records_skipped")
        assert (warning["first_record"], warning["count"]) == ("0", 1) and "nested too deep" in warning["reason"]
        assert source.failure() is None and source.metrics()["records_skipped_invalid"] == 1


# --- entries that are no regular file -------------------------------------------------------------------------------

class TestNotRegularFiles:
    def test_fifo_and_socket_named_json_never_block(self, tmp_path: Path,
                                                    example_records: list[dict[str, Any]]) -> None:
        """A FIFO and a socket named `*.json`, sorted before a log file: the file is read within a poll, each entry
        is warned about once over many polls, and files dropped later are still read."""
        os.mkfifo(tmp_path / "a.json")
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(tmp_path / "b.json"))
        expected = write_log(tmp_path / "c.json.gz", example_records[:10])
        interval_s = 0.2
        source = CloudTrailDirectory(paths=[tmp_path], poll_interval_s=interval_s)
        try:
            with capture_logs() as logs, running(source) as consumer:
                started = time.monotonic()
                assert sorted(consumer.wait_for(len(expected))) == sorted(expected)
                assert time.monotonic() - started < interval_s + 1.0
                polls_pass(5, interval_s)
                expected |= write_log(tmp_path / "d.json.gz", example_records[10:20])
                assert sorted(consumer.wait_for(len(expected))) == sorted(expected)
                assert not source.wait_finished(0)
        finally:
            server.close()
        warnings = events_of(logs, "cloudtrail_not_regular_file")
        assert sorted((w["file"], w["kind"]) for w in warnings) == [
            (str(tmp_path / "a.json"), "FIFO"), (str(tmp_path / "b.json"), "socket")]
        assert source.metrics()["files_skipped_not_regular"] == 2

    def test_one_pass_over_a_fifo_ends(self, tmp_path: Path) -> None:
        """Without follow, the watcher ends instead of waiting in open() for a writer that never comes."""
        os.mkfifo(tmp_path / "x.json")
        source = CloudTrailDirectory(paths=[tmp_path], follow=False)
        assert read_all(source, 0) == []

    def test_file_swapped_for_a_fifo_after_the_scan_is_not_waited_on(self, tmp_path: Path) -> None:
        """The open after the scan is non-blocking and checks it got the file scanned: a FIFO swapped in between
        is left for the next poll (which skips it) instead of hanging the watcher in open()."""
        log_file = tmp_path / "x.json"
        log_file.write_bytes(b'{"Records": []}')
        source = CloudTrailDirectory(paths=[tmp_path])
        scanned = source._scan()[str(log_file)]
        log_file.unlink()
        os.mkfifo(log_file)
        reader = threading.Thread(target=source._read, args=((str(log_file), scanned.st_size, scanned.st_mtime_ns),
                                                             scanned), daemon=True)
        reader.start()
        reader.join(2.0)
        assert not reader.is_alive()
        assert source.metrics()["files_read"] == 0

    @pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
    @pytest.mark.parametrize("follow_outside", [False, True])
    def test_dev_zero_never_streamed(self, tmp_path: Path, example_records: list[dict[str, Any]],
                                     follow_outside: bool) -> None:
        """`x.json -> /dev/zero` and a device node named `y.json`: neither is read, one warning each, memory flat.

        The link leads out of the directory, so by default it is not followed at all; allowed to, it is found
        to be a device."""
        (tmp_path / "x.json").symlink_to("/dev/zero")
        os.mknod(tmp_path / "y.json", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero's numbers
        expected = write_log(tmp_path / "z.json.gz", example_records)
        interval_s = 0.05
        before = reset_peak()
        source = CloudTrailDirectory(paths=[tmp_path], poll_interval_s=interval_s,
                                     follow_symlinks_outside=follow_outside)
        with capture_logs() as logs, running(source) as consumer:
            assert sorted(consumer.wait_for(len(expected))) == sorted(expected)
            polls_pass(10, interval_s)
        assert memory_mib()["VmHWM"] - before < SLACK_MIB
        not_regular = {(w["file"], w["kind"]) for w in events_of(logs, "cloudtrail_not_regular_file")}
        outside = [(w["file"], w["target"]) for w in events_of(logs, "cloudtrail_symlink_outside")]
        device = (str(tmp_path / "y.json"), "character device")
        if follow_outside:
            assert not outside
            assert not_regular == {device, (str(tmp_path / "x.json"), "character device")}
        else:
            assert outside == [(str(tmp_path / "x.json"), "/dev/zero")]
            assert not_regular == {device}
        assert len(events_of(logs, "cloudtrail_not_regular_file")) == len(not_regular)
        metrics = source.metrics()
        assert (metrics["files_skipped_not_regular"], metrics["symlinks_skipped_outside"]) == (
            len(not_regular), len(outside))
        assert metrics["files_read"] == 1


# --- symbolic links -------------------------------------------------------------------------------------------------

class TestSymlinks:
    @pytest.fixture()
    def layout(self, tmp_path: Path, example_records: list[dict[str, Any]]) -> dict[str, Any]:
        """A watched directory reached through a link, holding a link to a file inside it and one to a file outside."""
        trail = tmp_path / "trail"
        inside = write_log(trail / ".store" / "real.json.gz", example_records[:5])  # dot folders are not scanned
        (trail / "in.json.gz").symlink_to(trail / ".store" / "real.json.gz")
        outside = write_log(tmp_path / "elsewhere" / "secret.json.gz", example_records[5:9])
        (trail / "out.json.gz").symlink_to(tmp_path / "elsewhere" / "secret.json.gz")
        (tmp_path / "watched").symlink_to(trail)
        return {"watched": tmp_path / "watched", "inside": inside, "outside": outside,
                "target": str(tmp_path / "elsewhere" / "secret.json.gz")}

    def test_link_out_of_the_directory_not_followed(self, layout: dict[str, Any]) -> None:
        interval_s = 0.05
        source = CloudTrailDirectory(paths=[layout["watched"]], poll_interval_s=interval_s)
        with capture_logs() as logs, running(source) as consumer:
            assert sorted(consumer.wait_for(len(layout["inside"]))) == sorted(layout["inside"])
            polls_pass(10, interval_s)
            assert sorted(consumer.event_ids) == sorted(layout["inside"])
        warnings = events_of(logs, "cloudtrail_symlink_outside")
        assert [(w["file"], w["target"]) for w in warnings] == [
            (str(layout["watched"] / "out.json.gz"), layout["target"])]
        assert source.metrics()["symlinks_skipped_outside"] == 1

    def test_link_out_of_the_directory_followed_when_configured(self, layout: dict[str, Any]) -> None:
        expected = layout["inside"] | layout["outside"]
        with capture_logs() as logs:
            source = CloudTrailDirectory(paths=[layout["watched"]], follow=False, follow_symlinks_outside=True)
            assert sorted(read_all(source, len(expected))) == sorted(expected)
        assert not events_of(logs, "cloudtrail_symlink_outside")


# --- SQS: an announced object goes through the same bounded decode ------------------------------------------------

@pytest.mark.server
def test_sqs_skips_a_bomb_and_reads_the_other_object(aws_endpoint: str, tmp_path: Path,
                                                     example_records: list[dict[str, Any]]) -> None:
    """A CloudTrail notification naming a bomb and a log file: the bomb is skipped as too large, the file's records
    arrive and the message is deleted (a too large object is no reason to redeliver it)."""
    s3 = boto3.client("s3", endpoint_url=aws_endpoint, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=aws_endpoint, region_name="us-east-1")
    bucket = f"trail-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    queue_url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    prefix = "AWSLogs/111122223333/CloudTrail/us-east-1/2024/08/01/"
    write_bomb(tmp_path / "bomb.json.gz", 16)
    s3.put_object(Bucket=bucket, Key=prefix + "0-bomb.json.gz", Body=(tmp_path / "bomb.json.gz").read_bytes())
    s3.put_object(Bucket=bucket, Key=prefix + "1-next.json.gz",
                  Body=gzip.compress(orjson.dumps({"Records": example_records})))
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(
        {"s3Bucket": bucket, "s3ObjectKey": [prefix + "0-bomb.json.gz", prefix + "1-next.json.gz"]}))
    consumer = SqsTrailConsumer(queue_url=queue_url, wait_time_s=1, limits=ObjectLimits(max_object_bytes=MiB),
                                aws=AwsSettings(endpoint_url=aws_endpoint, region="us-east-1"))
    expected = {record["eventID"] for record in example_records}
    with capture_logs() as logs, running(consumer) as queue:
        assert sorted(queue.wait_for(len(expected))) == sorted(expected)
        assert eventually(lambda: consumer.metrics()["messages_deleted"] == 1)
    [warning] = events_of(logs, "cloudtrail_object_too_large")
    assert warning["object"] == f"s3://{bucket}/{prefix}0-bomb.json.gz"
    assert (consumer.metrics()["objects_too_large"], consumer.metrics()["messages_failed"]) == (1, 0)
