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
from agent.errors import DecodeError
from agent.event import Event
from agent.event_queue import QueueClosed
from agent.source import EventSink
from sources.cloudtrail.decoder import CloudTrailDecoder
from sources.cloudtrail.objects import TOO_LARGE, DecodedObject

log = structlog.get_logger(__name__)

FORMAT_VERSION = 1
#: Why a record of a readable object produced no event.
SKIP_REASONS = ("insight", "missing_event_time", "missing_event_type", "time_out_of_range", "invalid", TOO_LARGE)
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

    The hot path does not log per record: a rejected object logs one warning (`cloudtrail_object_too_large`
    for one over `max_object_bytes`), an object with bad records logs one summary, and one more for its records
    over `max_event_bytes`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.files_read = 0
        self.records_read = 0
        self.objects_rejected = 0
        self.objects_too_large = 0
        self.skipped = dict.fromkeys(SKIP_REASONS, 0)
        self._newest_ts_ns = 0

    def count(self, decoded: DecodedObject, decoder: CloudTrailDecoder) -> None:
        """Count one decoded object; `decoder` is the one that decoded it and nothing else."""
        newest = max((event.ts_ns for event in decoded.events), default=0)
        is_rejected = decoded.is_corrupt
        is_too_large = is_rejected and decoded.errors[0].reason == TOO_LARGE
        with self._lock:
            self.files_read += 1
            self.records_read += len(decoded.events)
            self.skipped["insight"] += decoder.skipped_insight
            if is_rejected:
                self.objects_rejected += 1
                self.objects_too_large += is_too_large
            else:
                for error in decoded.errors:
                    self.skipped[error.reason] += 1
            self._newest_ts_ns = max(self._newest_ts_ns, newest)
        if is_rejected:
            event = "cloudtrail_object_too_large" if is_too_large else "cloudtrail_object_rejected"
            log.warning(event, object=decoded.name, reason=decoded.errors[0].message)
            return
        _summarise("cloudtrail_records_too_large", decoded.name,
                   [error for error in decoded.errors if error.reason == TOO_LARGE])
        _summarise("cloudtrail_records_skipped", decoded.name,
                   [error for error in decoded.errors if error.reason != TOO_LARGE])

    def as_metrics(self) -> dict[str, Any]:
        """files_read, records_read, records_skipped_<reason>, objects_rejected (of which objects_too_large) and
        lag_s (None before any event)."""
        with self._lock:
            metrics: dict[str, Any] = {"files_read": self.files_read, "records_read": self.records_read}
            metrics.update({f"records_skipped_{reason}": count for reason, count in self.skipped.items()})
            metrics["objects_rejected"] = self.objects_rejected
            metrics["objects_too_large"] = self.objects_too_large
            newest = self._newest_ts_ns
        metrics["lag_s"] = time.time() - newest / _NS_PER_S if newest else None
        return metrics


def _summarise(event: str, name: str, errors: Sequence[DecodeError]) -> None:
    """One warning for the skipped records of an object: how many, the first one and why."""
    if errors:
        first = errors[0]
        log.warning(event, object=name, count=len(errors),
                    first_record=first.location.item_name if first.location else None, reason=first.message)
