"""Deliver a CloudTrail input's objects to the sink and persist what the consumer acknowledged.

The S3 poller and the directory watcher share this: an object's events go to the sink as one batch whose
`on_done` marks the object done; each acknowledgement updates the input's state and rewrites its checkpoint
atomically, one writer at a time, so that a later write always holds every acknowledgement of an earlier one.
`ReadTally` counts what was read, by the same rules for both inputs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from agent.atomic_file import write_state
from agent.event import Event
from agent.event_queue import QueueClosed
from agent.source import EventSink
from sources.cloudtrail.decoder import CloudTrailDecoder
from sources.cloudtrail.objects import DecodedObject

log = structlog.get_logger(__name__)

FORMAT_VERSION = 1
#: Why a record of a readable object produced no event.
SKIP_REASONS = ("insight", "missing_event_time", "missing_event_type", "invalid")
#: A put waits at most this long before re-checking the stop flag, so that stop never hangs on a full queue.
PUT_WAIT_S = 0.1
_NS_PER_S = 1_000_000_000


class CheckpointWriter:
    """Applies an acknowledgement to the input's state, then writes a snapshot of that state. Thread-safe.

    `snapshot` returns the document to persist (without "version"); it and every `apply` run under this
    writer's lock, so writes happen in acknowledgement order and none is lost to a concurrent one.
    """

    def __init__(self, path: Path | None, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self.writes = 0
        self.write_failures = 0
        self._snapshot = snapshot
        self._lock = threading.Lock()

    def acknowledge(self, apply: Callable[[], None]) -> None:
        """Called from a batch's `on_done`: record the work as done, and persist it when there is a file."""
        with self._lock:
            apply()
            if self.path is None:
                return
            try:
                write_state(self.path, self._snapshot(), version=FORMAT_VERSION)
            except OSError as err:
                # The consumer must go on; the next acknowledgement writes the state again.
                self.write_failures += 1
                log.warning("checkpoint_write_failed", file=str(self.path), reason=str(err))
                return
            self.writes += 1


def hand_over(sink: EventSink, events: Sequence[Event], on_done: Callable[[], None],
              stopping: threading.Event) -> bool:
    """Put one object's events (maybe none: the batch then only acknowledges) into the sink.

    False when the input stopped or the queue closed first; the object is then not done and is read again.
    """
    while not stopping.is_set():
        try:
            if sink.put(events, on_done, timeout_s=PUT_WAIT_S):
                return True
        except QueueClosed:
            return False
    return False


class ReadTally:
    """Counters of objects and records read by one CloudTrail input, and the newest event time. Thread-safe.

    The hot path does not log per record: a rejected object logs one warning, an object with bad records
    logs one summary.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.files_read = 0
        self.records_read = 0
        self.objects_rejected = 0
        self.skipped = dict.fromkeys(SKIP_REASONS, 0)
        self._newest_ts_ns = 0

    def count(self, decoded: DecodedObject, decoder: CloudTrailDecoder) -> None:
        """Count one decoded object; `decoder` is the one that decoded it and nothing else."""
        newest = max((event.ts_ns for event in decoded.events), default=0)
        reasons = [error.reason for error in decoded.errors]
        is_rejected = decoded.is_corrupt
        with self._lock:
            self.files_read += 1
            self.records_read += len(decoded.events)
            self.skipped["insight"] += decoder.skipped_insight
            if is_rejected:
                self.objects_rejected += 1
            else:
                for reason in reasons:
                    self.skipped[reason] += 1
            self._newest_ts_ns = max(self._newest_ts_ns, newest)
        if is_rejected:
            log.warning("cloudtrail_object_rejected", object=decoded.name, reason=decoded.errors[0].message)
        elif decoded.errors:
            first = decoded.errors[0]
            log.warning("cloudtrail_records_skipped", object=decoded.name, count=len(decoded.errors),
                        first_record=first.location.item_name if first.location else None, reason=first.message)

    def as_metrics(self) -> dict[str, Any]:
        """files_read, records_read, records_skipped_<reason>, objects_rejected and lag_s (None before any event)."""
        with self._lock:
            metrics: dict[str, Any] = {"files_read": self.files_read, "records_read": self.records_read}
            metrics.update({f"records_skipped_{reason}": count for reason, count in self.skipped.items()})
            metrics["objects_rejected"] = self.objects_rejected
            newest = self._newest_ts_ns
        metrics["lag_s"] = time.time() - newest / _NS_PER_S if newest else None
        return metrics
