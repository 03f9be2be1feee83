"""CloudWatch Logs for the EKS audit input: pages of `FilterLogEvents` over a cluster's apiserver audit streams, and
the marks saying which of their events were read.

EKS writes the audit log of each apiserver instance to its own stream, `kube-apiserver-audit-<id>`, of the log group
`/aws/eks/<cluster>/cluster`; within a stream, events come in timestamp order. So a stream's progress is its newest
read timestamp and the ids of its events read at that very millisecond (more may share it). The next query starts at
the oldest stream's timestamp; a stream whose newest read event is `STREAM_HORIZON_MS` older than the group's newest
is forgotten, so that the streams of replaced apiservers neither hold the query back nor fill the checkpoint (a
forgotten stream's events are all older than the next query's start).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from agent.atomic_file import read_state, write_state

log = structlog.get_logger(__name__)

#: The streams of the apiserver audit log in an EKS cluster's log group.
STREAM_PREFIX = "kube-apiserver-audit"
#: How far a stream's newest read event may lag behind the group's newest before the stream is forgotten.
STREAM_HORIZON_MS = 60_000
_FORMAT_VERSION = 1


def log_group(cluster: str) -> str:
    """The log group EKS writes a cluster's control plane logs to."""
    return f"/aws/eks/{cluster}/cluster"


def audit_pages(client: Any, group: str, *, start_ms: int, limit: int) -> Iterator[list[dict[str, Any]]]:
    """The audit stream events of `group` from `start_ms` on, a page per `FilterLogEvents` call, following nextToken
    to the last page. AWS errors raise from the call that failed."""
    request: dict[str, Any] = {"logGroupName": group, "logStreamNamePrefix": STREAM_PREFIX, "startTime": start_ms,
                               "limit": limit}
    while True:
        page = client.filter_log_events(**request)
        # The prefix is checked here too: an endpoint that ignores logStreamNamePrefix (moto) must not feed others.
        yield [event for event in page.get("events", ()) if str(event.get("logStreamName", "")).startswith(
            STREAM_PREFIX)]
        token = page.get("nextToken")
        if not token:
            return
        request["nextToken"] = token


@dataclass(frozen=True, slots=True)
class StreamMark:
    """A stream read up to `timestamp_ms`, of whose events at that millisecond those in `event_ids` were read."""

    timestamp_ms: int
    event_ids: frozenset[str]


@dataclass(frozen=True, slots=True)
class Marks:
    """What was read of a log group: per stream its mark; `since_ms` is where reading starts while none is known."""

    since_ms: int
    streams: Mapping[str, StreamMark]


class Reading:
    """The reader thread's marks, updated event by event; `snapshot()` is what a batch hands over to the checkpoint."""

    def __init__(self, marks: Marks) -> None:
        self._since_ms = marks.since_ms
        self._streams = {name: (mark.timestamp_ms, set(mark.event_ids)) for name, mark in marks.streams.items()}

    def __len__(self) -> int:
        return len(self._streams)

    def floor_ms(self) -> int:
        """Where the next query starts: no unread event of a known stream is older."""
        return min((timestamp for timestamp, _ids in self._streams.values()), default=self._since_ms)

    def is_read(self, stream: str, timestamp_ms: int, event_id: str) -> bool:
        known = self._streams.get(stream)
        if known is None:
            return False
        newest, ids = known
        return timestamp_ms < newest or (timestamp_ms == newest and event_id in ids)

    def add(self, stream: str, timestamp_ms: int, event_id: str) -> None:
        """Mark an unread event (`is_read` said no) read."""
        known = self._streams.get(stream)
        if known is None or timestamp_ms > known[0]:
            self._streams[stream] = (timestamp_ms, {event_id})
        else:
            known[1].add(event_id)

    def snapshot(self) -> Marks:
        """The marks now, streams past the horizon forgotten."""
        if self._streams:
            newest = max(timestamp for timestamp, _ids in self._streams.values())
            self._streams = {name: known for name, known in self._streams.items()
                             if known[0] >= newest - STREAM_HORIZON_MS}
        return Marks(self._since_ms, {name: StreamMark(timestamp, frozenset(ids))
                                      for name, (timestamp, ids) in self._streams.items()})


def load_marks(path: Path, group: str) -> Marks | None:
    """The marks saved at `path` for `group`; None when there are none, or (logged) they cannot be used."""
    document = read_state(path, version=_FORMAT_VERSION)
    if not document:
        return None
    if document.get("log_group") != group:
        log.warning("checkpoint_unreadable", file=str(path),
                    reason=f"saved for log group {document.get('log_group')!r}, not {group!r}")
        return None
    try:
        streams = {str(name): StreamMark(int(entry["timestamp_ms"]), frozenset(str(i) for i in entry["event_ids"]))
                   for name, entry in document["streams"].items()}
        return Marks(int(document["since_ms"]), streams)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        log.warning("checkpoint_unreadable", file=str(path), reason=repr(err))
        return None


def write_marks(group: str, path: Path, marks: Marks) -> None:
    """Replace the checkpoint at `path` atomically with `marks` of `group`."""
    streams = {name: {"timestamp_ms": mark.timestamp_ms, "event_ids": sorted(mark.event_ids)}
               for name, mark in marks.streams.items()}
    write_state(path, {"log_group": group, "since_ms": marks.since_ms, "streams": streams}, version=_FORMAT_VERSION)
