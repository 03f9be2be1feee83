"""Tests for sources/k8saudit/files.py: audit log files in, k8s_audit batches out, each event exactly once."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from agent.errors import AgentError, DecodeError
from agent.event import Event
from agent.event_queue import EventQueue
from sources.k8saudit.decoder import K8sAuditDecoder
from sources.k8saudit.files import AuditLogFiles
from tests.support.queue_consumer import eventually

WAIT_S = 5.0


def audit_line(audit_id: str, *, verb: str = "list") -> bytes:
    """One kube-apiserver audit log line with a unique auditID."""
    event = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": audit_id,
        "stage": "ResponseComplete", "requestURI": "/api/v1/namespaces/default/pods", "verb": verb,
        "user": {"username": "alice", "groups": ["system:authenticated"]},
        "sourceIPs": ["10.0.0.12"], "userAgent": "kubectl/v1.31.0 (linux/amd64) kubernetes/9646fed",
        "objectRef": {"resource": "pods", "namespace": "default", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": "2026-11-29T10:00:00.000000Z",
        "stageTimestamp": "2026-11-29T10:00:00.000000Z",
    }
    return orjson.dumps(event) + b"\n"


def ids(prefix: str, count: int, start: int = 0) -> list[str]:
    return [f"{prefix}-{n:04d}" for n in range(start, start + count)]


def append(path: Path, audit_ids: list[str]) -> None:
    with path.open("ab") as out:
        out.write(b"".join(audit_line(i) for i in audit_ids))


class Consumer:
    """The engine's side of the queue: takes batches, records auditIDs, then acknowledges with on_done."""

    def __init__(self, queue: EventQueue, *, is_acking: bool = True) -> None:
        self.queue = queue
        self.is_acking = is_acking
        self.audit_ids: list[str] = []
        self.batches = 0
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            batch = self.queue.get(timeout_s=0.05)
            if batch is None:
                continue
            with self._changed:
                self.audit_ids.extend(e.payload["auditID"] for e in batch.events)
                self.batches += 1
                self._changed.notify_all()
            if self.is_acking and batch.on_done is not None:
                batch.on_done()

    def wait_for(self, count: int, timeout_s: float = WAIT_S) -> list[str]:
        with self._changed:
            self._changed.wait_for(lambda: len(self.audit_ids) >= count, timeout_s)
            return list(self.audit_ids)

    def stop(self) -> None:
        """Stop after the batch in hand; batches still queued are drained and acknowledged too."""
        self._stopping.set()
        self._thread.join(WAIT_S)
        while (batch := self.queue.get(timeout_s=0)) is not None:
            self.audit_ids.extend(e.payload["auditID"] for e in batch.events)
            if self.is_acking and batch.on_done is not None:
                batch.on_done()


@contextmanager
def running(source: AuditLogFiles, *, capacity: int = 10_000) -> Iterator[Consumer]:
    """Run `source` into a real EventQueue drained by a Consumer; stop both, source first, on the way out."""
    queue = EventQueue(capacity)
    consumer = Consumer(queue)
    source.start(queue)
    try:
        yield consumer
    finally:
        source.stop()
        consumer.stop()


def following(paths: list[Path], **options: object) -> AuditLogFiles:
    return AuditLogFiles(paths=paths, follow=True, poll_interval_s=0.01, **options)  # type: ignore[arg-type]


class DecoderWithABug(K8sAuditDecoder):
    """The real decoder with a bug that strikes once, at the line of `audit_id`: the reader thread dies there."""

    def __init__(self, audit_id: str) -> None:
        super().__init__()
        self.audit_id: str | None = audit_id

    def events(self, document: Any, *, origin: str) -> Iterable[Event | DecodeError]:
        if document.get("auditID") == self.audit_id:
            self.audit_id = None
            raise RuntimeError("decoder bug")
        return super().events(document, origin=origin)


class TestReading:
    def test_file_read_in_order(self, tmp_path: Path) -> None:
        """Every line of a file becomes one event, in file order, and the counters say so."""
        log_file = tmp_path / "audit.log"
        expected = ids("a", 20)
        append(log_file, expected)
        source = AuditLogFiles(paths=[log_file], follow=False, batch_events=7, hostname="node-1")
        with running(source) as consumer:
            assert source.wait_finished(WAIT_S)
            assert consumer.wait_for(20) == expected
        metrics = source.metrics()
        assert metrics["lines_read"] == 20
        assert metrics["events"] == 20
        assert metrics["bytes_read"] == log_file.stat().st_size
        assert metrics["files_open"] == 0

    def test_events_carry_source_hostname_and_verb(self, tmp_path: Path) -> None:
        """Events are k8s_audit events with the configured hostname, typed by their verb."""
        log_file = tmp_path / "audit.log"
        log_file.write_bytes(audit_line("h-1", verb="create"))
        queue = EventQueue(100)
        source = AuditLogFiles(paths=[log_file], follow=False, hostname="node-1")
        source.start(queue)
        batch = queue.get(timeout_s=WAIT_S)
        source.stop()
        assert batch is not None
        (event,) = batch.events
        assert (event.source, event.hostname, event.type) == ("k8s_audit", "node-1", "create")

    def test_directory_read_oldest_first(self, tmp_path: Path) -> None:
        """A directory is read file by file, oldest mtime first, only its *.log, *.json and *.jsonl files."""
        older, newer, newest = tmp_path / "b.log", tmp_path / "a.jsonl", tmp_path / "c.json"
        append(older, ids("old", 3))
        append(newer, ids("new", 3))
        append(newest, ids("newest", 3))
        (tmp_path / "notes.txt").write_text("not an audit log\n")
        for age, path in enumerate([newest, newer, older]):
            os.utime(path, (1_700_000_000 - age * 60, 1_700_000_000 - age * 60))
        source = AuditLogFiles(paths=[tmp_path], follow=False)
        with running(source) as consumer:
            assert source.wait_finished(WAIT_S)
            assert consumer.wait_for(9) == ids("old", 3) + ids("new", 3) + ids("newest", 3)
        assert source.metrics()["rejected_invalid_json"] == 0

    def test_last_line_without_newline_read_when_not_following(self, tmp_path: Path) -> None:
        """Without follow, a final line lacking its newline is still an event."""
        log_file = tmp_path / "audit.log"
        log_file.write_bytes(audit_line("n-1") + audit_line("n-2").rstrip(b"\n"))
        source = AuditLogFiles(paths=[log_file], follow=False)
        with running(source) as consumer:
            assert source.wait_finished(WAIT_S)
            assert consumer.wait_for(2) == ["n-1", "n-2"]

    def test_bad_lines_counted_and_logged_while_the_rest_goes_on(self, tmp_path: Path) -> None:
        """Invalid JSON, non-audit objects and events without stageTimestamp are counted by reason, logged once."""
        log_file = tmp_path / "audit.log"
        no_stamp = orjson.loads(audit_line("x"))
        del no_stamp["stageTimestamp"]
        log_file.write_bytes(
            audit_line("g-1") + b'{"kind": "Event", "auditID": \n' + audit_line("g-2")
            + b'{"Records": []}\n' + b"\n" + orjson.dumps(no_stamp) + b"\n" + audit_line("g-3")
        )
        source = AuditLogFiles(paths=[log_file], follow=False)
        with capture_logs() as logs, running(source) as consumer:
            assert source.wait_finished(WAIT_S)
            assert consumer.wait_for(3) == ["g-1", "g-2", "g-3"]
        rejected = [(e["line"], e["reason"]) for e in logs if e["event"] == "audit_line_rejected"]
        assert rejected == [(2, "invalid_json"), (4, "not_audit_event"), (6, "missing_stage_timestamp")]
        assert all(e["file"] == str(log_file) for e in logs if e["event"] == "audit_line_rejected")
        metrics = source.metrics()
        assert (metrics["rejected_invalid_json"], metrics["rejected_not_audit_event"],
                metrics["rejected_missing_stage_timestamp"]) == (1, 1, 1)
        assert metrics["events"] == 3

    def test_overlong_line_rejected(self, tmp_path: Path) -> None:
        """A line longer than the limit is rejected as too long and reading goes on after it."""
        log_file = tmp_path / "audit.log"
        log_file.write_bytes(audit_line("l-1") + b"x" * 5000 + b"\n" + audit_line("l-2"))
        source = AuditLogFiles(paths=[log_file], follow=False, max_line_bytes=1024)
        with running(source) as consumer:
            assert source.wait_finished(WAIT_S)
            assert consumer.wait_for(2) == ["l-1", "l-2"]
        assert source.metrics()["rejected_line_too_long"] == 1

    def test_missing_path_fatal_without_follow(self, tmp_path: Path) -> None:
        """Reading recorded files that do not exist fails at start, naming the path."""
        source = AuditLogFiles(paths=[tmp_path / "absent.log"], follow=False)
        with pytest.raises(AgentError, match="not found") as info:
            source.start(EventQueue(10))
        assert "absent.log" in str(info.value)

    @pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
    def test_unreadable_file_skipped(self, tmp_path: Path) -> None:
        """A file that cannot be opened is logged with its reason and the others are still read."""
        locked, readable = tmp_path / "a.log", tmp_path / "b.log"
        append(locked, ids("locked", 2))
        append(readable, ids("ok", 2))
        locked.chmod(0)
        source = AuditLogFiles(paths=[locked, readable], follow=False)
        with capture_logs() as logs, running(source) as consumer:
            assert source.wait_finished(WAIT_S)
            assert consumer.wait_for(2) == ids("ok", 2)
        assert [e["file"] for e in logs if e["event"] == "audit_file_unreadable"] == [str(locked)]


class TestFollowing:
    def test_appended_lines_read(self, tmp_path: Path) -> None:
        """Lines appended while following are delivered as they arrive."""
        log_file = tmp_path / "audit.log"
        append(log_file, ids("f", 5))
        source = following([log_file])
        with running(source) as consumer:
            assert consumer.wait_for(5) == ids("f", 5)
            append(log_file, ids("f", 5, start=5))
            assert consumer.wait_for(10) == ids("f", 10)

    def test_file_appearing_later_read(self, tmp_path: Path) -> None:
        """A path missing at start is not fatal while following: the file is read once it appears."""
        log_file = tmp_path / "audit.log"
        source = following([log_file])
        with running(source) as consumer:
            append(log_file, ids("late", 3))
            assert consumer.wait_for(3) == ids("late", 3)

    def test_partial_line_waits_for_its_newline(self, tmp_path: Path) -> None:
        """A line still being written is neither consumed nor rejected until its newline arrives."""
        log_file = tmp_path / "audit.log"
        second = audit_line("p-2")
        log_file.write_bytes(audit_line("p-1") + second[:100])
        source = following([log_file])
        with running(source) as consumer:
            assert consumer.wait_for(1) == ["p-1"]
            assert eventually(lambda: source.metrics()["bytes_read"] == log_file.stat().st_size)
            assert source.metrics()["lines_read"] == 1
            with log_file.open("ab") as out:
                out.write(second[100:])
            assert consumer.wait_for(2) == ["p-1", "p-2"]
        assert sum(v for k, v in source.metrics().items() if k.startswith("rejected_")) == 0

    def test_rotation_by_rename(self, tmp_path: Path) -> None:
        """Across repeated rename rotations, lines written just before each rename arrive once, in order."""
        log_file = tmp_path / "audit.log"
        append(log_file, ids("r", 10))
        source = following([log_file], batch_events=4)
        with running(source) as consumer:
            assert consumer.wait_for(10) == ids("r", 10)
            written = 10
            for rotation in range(3):
                append(log_file, ids("r", 5, start=written))  # may still be unread when renamed
                log_file.rename(tmp_path / f"audit-2026-11-29T10-0{rotation}-00.000.log")
                append(log_file, ids("r", 5, start=written + 5))
                written += 10
                assert consumer.wait_for(written) == ids("r", written)
            assert eventually(lambda: source.metrics()["files_open"] == 1)

    def test_rotation_by_rename_in_watched_directory(self, tmp_path: Path) -> None:
        """In a watched directory, the renamed file is finished first and not read again under its new name."""
        log_file = tmp_path / "audit.log"
        append(log_file, ids("d", 6))
        source = following([tmp_path])
        with running(source) as consumer:
            assert consumer.wait_for(6) == ids("d", 6)
            append(log_file, ids("d", 4, start=6))
            log_file.rename(tmp_path / "audit-2026-11-29T10-00-00.000.log")
            append(log_file, ids("d", 5, start=10))
            assert consumer.wait_for(15) == ids("d", 15)
            assert eventually(lambda: source.metrics()["files_open"] == 2)
            append(log_file, ids("d", 1, start=15))
            assert consumer.wait_for(16) == ids("d", 16)

    def test_copytruncate(self, tmp_path: Path) -> None:
        """When the file is copied away and truncated in place, reading restarts at its beginning."""
        log_file = tmp_path / "audit.log"
        append(log_file, ids("c", 10))
        source = following([log_file])
        with running(source) as consumer:
            assert consumer.wait_for(10) == ids("c", 10)
            (tmp_path / "audit.log.1").write_bytes(log_file.read_bytes())
            with log_file.open("r+b") as out:
                out.truncate(0)
            append(log_file, ids("c", 3, start=10))
            assert consumer.wait_for(13) == ids("c", 13)


class TestCheckpoint:
    def test_written_only_after_on_done(self, tmp_path: Path) -> None:
        """The checkpoint appears only when the consumer acknowledges the batch, at the byte after it."""
        log_file, checkpoint = tmp_path / "audit.log", tmp_path / "state" / "checkpoint.json"
        append(log_file, ids("w", 3))
        queue = EventQueue(100)
        source = AuditLogFiles(paths=[log_file], follow=False, checkpoint_path=checkpoint)
        source.start(queue)
        try:
            batch = queue.get(timeout_s=WAIT_S)
            assert source.wait_finished(WAIT_S)
        finally:
            source.stop()
        assert batch is not None and len(batch.events) == 3
        assert not checkpoint.exists()
        assert source.metrics()["checkpoint_writes"] == 0
        assert batch.on_done is not None
        batch.on_done()
        (entry,) = orjson.loads(checkpoint.read_bytes())["files"]
        st = log_file.stat()
        assert (entry["dev"], entry["ino"], entry["path"], entry["offset"]) == (
            st.st_dev, st.st_ino, str(log_file), st.st_size)
        assert source.metrics()["checkpoint_writes"] == 1
        assert [p.name for p in checkpoint.parent.iterdir()] == ["checkpoint.json"]

    def test_checkpoint_never_passes_an_unacknowledged_batch(self, tmp_path: Path) -> None:
        """Batches taken but never acknowledged are read again after a restart; acknowledged ones are not."""
        log_file, checkpoint = tmp_path / "audit.log", tmp_path / "checkpoint.json"
        append(log_file, ids("u", 30))
        queue = EventQueue(100)
        first = AuditLogFiles(paths=[log_file], follow=False, checkpoint_path=checkpoint, batch_events=10)
        first.start(queue)
        batches = [queue.get(timeout_s=WAIT_S) for _ in range(3)]
        first.stop()
        acks = [b.on_done for b in batches if b is not None and b.on_done is not None]
        assert len(acks) == len(batches)
        acks[0]()
        acks[2]()  # out of order: must not cover batch 2
        second = AuditLogFiles(paths=[log_file], follow=False, checkpoint_path=checkpoint)
        with running(second) as consumer:
            assert second.wait_finished(WAIT_S)
            assert consumer.wait_for(20) == ids("u", 20, start=10)

    def test_restart_resumes_exactly_once(self, tmp_path: Path) -> None:
        """A graceful stop and start neither loses nor repeats an event, lines written while stopped included."""
        log_file, checkpoint = tmp_path / "audit.log", tmp_path / "checkpoint.json"
        append(log_file, ids("s", 30))
        first = following([log_file], checkpoint_path=checkpoint, batch_events=7)
        with running(first) as before:
            append(log_file, ids("s", 10, start=30))
            before.wait_for(40)
        append(log_file, ids("s", 10, start=40))
        second = following([log_file], checkpoint_path=checkpoint, batch_events=7)
        with running(second) as after:
            after.wait_for(10)
        assert before.audit_ids + after.audit_ids == ids("s", 50)

    def test_restart_after_rotation_while_stopped(self, tmp_path: Path) -> None:
        """A file rotated while stopped is finished from its saved offset under its new name, then the new file."""
        log_file, checkpoint = tmp_path / "audit.log", tmp_path / "state.json"
        append(log_file, ids("t", 20))
        first = following([log_file], checkpoint_path=checkpoint)
        with running(first) as consumer:
            before = consumer.wait_for(20)
        append(log_file, ids("t", 5, start=20))
        log_file.rename(tmp_path / "audit-2026-11-29T11-00-00.000.log")
        append(log_file, ids("t", 5, start=25))
        second = following([log_file], checkpoint_path=checkpoint)
        with running(second) as consumer:
            after = consumer.wait_for(10)
        assert before + after == ids("t", 30)
        assert second.metrics()["checkpoint_writes"] >= 1

    def test_rotated_file_resumed_twice(self, tmp_path: Path) -> None:
        """A rotated file left half read by a second run is finished by a third, under its rotated name."""
        log_file, checkpoint = tmp_path / "audit.log", tmp_path / "checkpoint.json"
        append(log_file, ids("m", 20))
        with running(following([log_file], checkpoint_path=checkpoint)) as first:
            first.wait_for(20)
        append(log_file, ids("m", 5, start=20))
        log_file.rename(tmp_path / "audit-2026-11-29T13-00-00.000.log")
        append(log_file, ids("m", 3, start=25))
        queue = EventQueue(2)
        second = following([log_file], checkpoint_path=checkpoint, batch_events=2)
        second.start(queue)
        try:
            batch = queue.get(timeout_s=WAIT_S)
            assert batch is not None and batch.on_done is not None
            batch.on_done()
        finally:
            second.stop()
        acknowledged = [e.payload["auditID"] for e in batch.events]
        with running(following([log_file], checkpoint_path=checkpoint)) as third:
            third.wait_for(6)
        assert first.audit_ids + acknowledged + third.audit_ids == ids("m", 28)

    def test_directory_restart_after_rotation_while_stopped(self, tmp_path: Path) -> None:
        """In a watched directory, a file already read and since renamed is not read again after a restart."""
        logs, checkpoint = tmp_path / "logs", tmp_path / "checkpoint.json"
        logs.mkdir()
        log_file = logs / "audit.log"
        append(log_file, ids("v", 8))
        first = following([logs], checkpoint_path=checkpoint)
        with running(first) as consumer:
            before = consumer.wait_for(8)
        log_file.rename(logs / "audit-2026-11-29T12-00-00.000.log")
        append(log_file, ids("v", 4, start=8))
        second = following([logs], checkpoint_path=checkpoint)
        with running(second) as consumer:
            after = consumer.wait_for(4)
            assert eventually(lambda: second.metrics()["files_open"] == 2)
        assert before + after == ids("v", 12)

    def test_file_truncated_while_stopped_read_from_start(self, tmp_path: Path) -> None:
        """A file whose saved offset no longer fits (copytruncate while stopped) is read from its start."""
        log_file, checkpoint = tmp_path / "audit.log", tmp_path / "checkpoint.json"
        append(log_file, ids("z", 10))
        first = following([log_file], checkpoint_path=checkpoint)
        with running(first) as consumer:
            assert consumer.wait_for(10) == ids("z", 10)
        with log_file.open("r+b") as out:
            out.truncate(0)
        append(log_file, ids("z", 12, start=10))  # longer than before: only the head digest tells
        second = following([log_file], checkpoint_path=checkpoint)
        with running(second) as consumer:
            assert consumer.wait_for(12) == ids("z", 12, start=10)

    def test_stop_returns_with_a_full_queue(self, tmp_path: Path) -> None:
        """Stop returns promptly while the reader waits for room, and nothing unacknowledged is checkpointed."""
        log_file, checkpoint = tmp_path / "audit.log", tmp_path / "checkpoint.json"
        append(log_file, ids("q", 10))
        queue = EventQueue(1)
        source = AuditLogFiles(paths=[log_file], follow=True, checkpoint_path=checkpoint, batch_events=1)
        source.start(queue)
        assert eventually(lambda: queue.depth == 1 and source.metrics()["events"] >= 2)
        began = time.monotonic()
        source.stop()
        assert time.monotonic() - began < 2.0
        assert source.wait_finished(0)
        assert not checkpoint.exists()
        restarted = following([log_file], checkpoint_path=checkpoint)
        with running(restarted) as consumer:
            assert consumer.wait_for(10) == ids("q", 10)

    def test_reader_started_again_after_a_bug_resumes_after_the_batches_it_handed_over(self, tmp_path: Path) -> None:
        """A reader killed by a bug and started again (as the supervisor does) goes on after its last batch handed
        over, which may still be queued, not from the checkpoint that lags behind it: every event exactly once."""
        log_file, checkpoint = tmp_path / "audit.log", tmp_path / "checkpoint.json"
        append(log_file, ids("f", 50))
        queue = EventQueue(1000)
        source = following([log_file], checkpoint_path=checkpoint, batch_events=10,
                           decoder=DecoderWithABug("f-0025"))
        source.start(queue)
        assert source.wait_finished(WAIT_S) and source.failure() == "RuntimeError: decoder bug"
        assert queue.depth == 20 and not checkpoint.exists()  # two batches queued, none acknowledged
        source.stop()
        source.start(queue)
        consumer = Consumer(queue)
        try:
            assert consumer.wait_for(50) == ids("f", 50)
            assert source.metrics()["checkpoint_writes"] > 0
        finally:
            source.stop()
            consumer.stop()
        assert consumer.audit_ids == ids("f", 50)
