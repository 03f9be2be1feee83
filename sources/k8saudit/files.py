"""Tail kube-apiserver audit log files (one JSON audit Event per line) across rotation, as the `k8s_audit` source.

Files are tracked by identity (st_dev, st_ino). A file renamed away by rotation keeps its open descriptor and is
read to its end before the new file at the path; a file that shrinks below the read offset (copytruncate) is read
again from the start. Each batch carries the positions it reaches; `CheckpointWriter` persists them only once the
consumer acknowledged the batch (its events evaluated, their alerts written and synced), so that a restart resumes
after the last acknowledged batch and no event is lost.

That is at-least-once, not exactly-once: alerts and checkpoint are separate files, and no write changes both at
once. When the agent dies (SIGKILL) after some alerts of a batch were written and before its checkpoint was, the
restart evaluates that one batch again: the events of at most `BATCH_EVENTS` lines give their alerts twice.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog

from agent.atomic_file import prepare_folder
from agent.errors import AgentError, DecodeError
from agent.event import Event
from agent.location import Location
from agent.source import EventSink, RecordDecoder
from agent.source_worker import SourceWorker, Stopped, WorkerSource
from sources.k8saudit.checkpoint import (
    HEAD_BYTES,
    CheckpointWriter,
    FilePosition,
    Identity,
    find_unfinished,
    head_digest,
    load_positions,
    write_positions,
)
from sources.k8saudit.decoder import SOURCE_NAME, K8sAuditDecoder

log = structlog.get_logger(__name__)

#: Files of a watched directory that are read; rotated apiserver logs keep the `.log` suffix.
LOG_SUFFIXES = (".log", ".json", ".jsonl")
REJECT_REASONS = ("invalid_json", "not_audit_event", "missing_stage_timestamp", "malformed_stage_timestamp",
                  "time_out_of_range", "bad_envelope", "line_too_long", "decode_error")
_CHUNK_BYTES = 1 << 20
#: A batch ends with the line that brings it to this many events, so it holds the events of at most this many lines:
#: the most a restart after SIGKILL evaluates twice. Each batch costs a checkpoint write (two fsyncs) and a sync of
#: the file output; batches of 100 made catching up with a backlog ~1.5x slower.
BATCH_EVENTS = 500
#: Positions of files no longer open that the checkpoint keeps, so that a rotated file met again is not re-read.
_KNOWN_MAX = 64


@dataclass(slots=True)
class _Tail:
    """One open file. `offset` is where the next unconsumed line starts; bytes up to `read_pos` were read.

    `partial` holds the read bytes of an incomplete last line (offset + len(partial) == read_pos), except
    while `is_skipping` a line longer than the limit, whose bytes are dropped as they come.
    """

    identity: Identity
    path: str
    fd: int
    offset: int = 0
    line: int = 0
    read_pos: int = 0
    partial: bytes = b""
    is_skipping: bool = False
    is_rotated: bool = False
    head_len: int = 0
    head: str = ""

    def position(self) -> FilePosition:
        return FilePosition(self.identity[0], self.identity[1], self.path, self.offset, self.line,
                            self.head_len, self.head)


def _reason(error: DecodeError) -> str:
    """The metrics key of a decoder rejection: the decoder's own reason when it is one this reader counts."""
    return error.reason if error.reason in REJECT_REASONS else "decode_error"


class AuditLogFiles(WorkerSource):
    """LiveSource reading audit log files and directories; one reader thread feeds the sink.

    `paths` are files or directories (every *.log, *.json, *.jsonl file in it, oldest first by mtime then
    name). With `follow` the reader keeps polling every `poll_interval_s` for new lines and files; without
    it, it reads what is there, a last line without newline included, and ends.
    """

    name = SOURCE_NAME

    def __init__(self, *, paths: Sequence[str | Path], follow: bool = True, checkpoint_path: Path | None = None,
                 poll_interval_s: float = 0.25, batch_events: int = BATCH_EVENTS, hostname: str = "",
                 decoder: RecordDecoder | None = None, max_line_bytes: int = 16 << 20) -> None:
        self._paths = [os.fspath(p) for p in paths]
        self._follow = follow
        self._checkpoint_path = checkpoint_path
        self._poll_interval_s = poll_interval_s
        self._batch_events = max(1, batch_events)
        self._decoder: RecordDecoder = decoder or K8sAuditDecoder(hostname=hostname)
        self._max_line_bytes = max_line_bytes
        self._checkpoint = CheckpointWriter[tuple[FilePosition, ...]](checkpoint_path, write_positions)
        self._ignored = {os.path.abspath(checkpoint_path)} if checkpoint_path else set()
        self._worker = SourceWorker("k8saudit-files", join_timeout_s=5.0)
        self._stopping = self._worker.stopping
        self._sink: EventSink | None = None
        # Reader-thread state: files open in reading order, and saved positions of files not open.
        self._tails: dict[Identity, _Tail] = {}
        self._known: dict[Identity, FilePosition] = {}
        self._batch: list[Event] = []
        self._last_sent: tuple[FilePosition, ...] = ()
        self._warned: set[tuple[str, object]] = set()
        self._lines_read = 0
        self._events = 0
        self._bytes_read = 0
        self._rejected = dict.fromkeys(REJECT_REASONS, 0)

    # --- LiveSource -------------------------------------------------------------------------------------------

    def start(self, sink: EventSink) -> None:
        """Start the reader at the checkpoint; a missing path is fatal only when not following.

        Started again (after a bug killed the reader), it goes on where its last batch handed over ends: that batch
        may still be queued, so the checkpoint lags behind it; what it read and never handed over is read again.
        """
        self._worker.check_idle()
        if not self._follow:
            missing = [p for p in self._paths if not os.path.exists(p)]
            if missing:
                raise AgentError("audit log path not found", Location(file=missing[0]))
        if self._checkpoint_path is not None:
            prepare_folder(self._checkpoint_path)
        self._batch = []
        if self._last_sent:
            self._known = {position.identity: position for position in self._last_sent}
        elif self._checkpoint_path is not None:
            self._known = load_positions(self._checkpoint_path)
        else:
            self._known = {}
        self._sink = sink
        self._worker.start(self._run, cleanup=self._close_tails)

    def metrics(self) -> dict[str, Any]:
        counters: dict[str, Any] = {"lines_read": self._lines_read, "events": self._events,
                                    "bytes_read": self._bytes_read}
        counters.update({f"rejected_{reason}": count for reason, count in self._rejected.items()})
        counters["files_open"] = len(self._tails)
        counters["checkpoint_writes"] = self._checkpoint.writes
        counters["checkpoint_write_failures"] = self._checkpoint.write_failures
        return counters

    # --- reader thread ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._open_unfinished()
            while True:
                self._discover()
                self._read_all()
                self._flush()
                if not self._follow or self._stopping.wait(self._poll_interval_s):
                    break
        except Stopped:
            pass

    def _close_tails(self) -> None:
        for tail in list(self._tails.values()):
            self._drop(tail)  # keeps its position, so that a restart does not read it again

    def _warn_once(self, event: str, key: object, **context: Any) -> None:
        if (event, key) not in self._warned:
            self._warned.add((event, key))
            log.warning(event, **context)

    def _open_unfinished(self) -> None:
        """Open saved files with unread lines that discovery will not list: rotated away from a watched path.

        They are older than whatever is now at the watched paths, so they are read first.
        """
        listed = {os.path.abspath(path) for root in self._paths for path in self._candidates(root)}
        for position, path in find_unfinished(self._known.values()):
            if os.path.abspath(path) not in listed:
                log.info("audit_file_resumed", file=path, previous=position.path, offset=position.offset)
                self._open(path, is_resuming=True)

    def _candidates(self, root: str) -> list[str]:
        """The files `root` stands for now, in reading order."""
        if os.path.isdir(root):
            found: list[tuple[float, str, str]] = []
            try:
                with os.scandir(root) as entries:
                    for entry in entries:
                        if (entry.name.startswith(".") or not entry.name.endswith(LOG_SUFFIXES)
                                or os.path.abspath(entry.path) in self._ignored):
                            continue
                        try:
                            found.append((entry.stat().st_mtime, entry.name, entry.path))
                        except OSError:
                            continue  # removed between listing and stat
            except OSError as err:
                self._warn_once("audit_dir_unreadable", root, file=root, reason=err.strerror)
                return []
            return [path for _mtime, _name, path in sorted(found)]
        if os.path.exists(root):
            self._warned.discard(("audit_path_missing", root))
            return [root]
        # With follow the file may appear later (first start, or between rename and create of a rotation).
        self._warn_once("audit_path_missing", root, file=root)
        return []

    def _discover(self) -> None:
        """Open new files, note renames, notice truncation, and mark files no longer under a path as rotated."""
        seen: set[Identity] = set()
        for root in self._paths:
            for path in self._candidates(root):
                try:
                    st = os.stat(path)
                except OSError:
                    continue  # gone since listing; the next poll sees where it went
                if not stat.S_ISREG(st.st_mode):
                    continue
                identity = (st.st_dev, st.st_ino)
                tail = self._tails.get(identity)
                if tail is None:
                    tail = self._open(path)
                    if tail is None:
                        continue
                    identity = tail.identity
                elif st.st_size < tail.read_pos:
                    log.info("audit_file_truncated", file=path, size=st.st_size, offset=tail.read_pos)
                    tail.offset = tail.read_pos = tail.line = tail.head_len = 0
                    tail.partial, tail.head, tail.is_skipping = b"", "", False
                tail.path = path
                seen.add(identity)
        for identity, tail in self._tails.items():
            if identity not in seen and not tail.is_rotated:
                log.info("audit_file_rotated", file=tail.path, offset=tail.offset)
            tail.is_rotated = identity not in seen

    def _open(self, path: str, *, is_resuming: bool = False) -> _Tail | None:
        """Start tracking the file at `path`, resuming at its saved position when it is the same file.

        With `is_resuming`, a file that is not the saved one is left alone: it is no watched file.
        """
        try:
            # O_NONBLOCK: a FIFO swapped in after the stat must not hang the reader in open().
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as err:
            self._warn_once("audit_file_unreadable", path, file=path, reason=err.strerror)
            return None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None
        identity = (st.st_dev, st.st_ino)
        if identity in self._tails:  # replaced between stat and open by a file we already track
            os.close(fd)
            return self._tails[identity]
        tail = _Tail(identity, path, fd)
        saved = self._known.pop(identity, None)
        try:
            is_same = saved is not None and saved.is_same_file(fd, st.st_size)
        except OSError:
            is_same = False
        if is_resuming and not is_same:
            if saved is not None:
                self._known[identity] = saved
            os.close(fd)
            return None
        if saved is not None and is_same:
            tail.offset = tail.read_pos = saved.offset
            tail.line, tail.head_len, tail.head = saved.line, saved.head_len, saved.head
        elif saved is not None:
            log.info("checkpoint_position_stale", file=path, offset=saved.offset, size=st.st_size)
        log.info("audit_file_opened", file=path, offset=tail.offset)
        self._tails[identity] = tail
        return tail

    def _drop(self, tail: _Tail) -> None:
        """Close a file; its position stays known so that meeting it again does not read it twice."""
        os.close(tail.fd)
        del self._tails[tail.identity]
        self._known[tail.identity] = tail.position()
        while len(self._known) > _KNOWN_MAX:
            del self._known[next(iter(self._known))]

    def _read_all(self) -> None:
        for tail in list(self._tails.values()):
            if self._stopping.is_set():
                raise Stopped
            try:
                self._read(tail, is_final=tail.is_rotated or not self._follow)
            except OSError as err:
                self._warn_once("audit_file_read_failed", tail.identity, file=tail.path, reason=err.strerror)
                self._drop(tail)
                continue
            if tail.is_rotated:
                log.info("audit_file_finished", file=tail.path, offset=tail.offset, lines=tail.line)
                self._drop(tail)

    def _read(self, tail: _Tail, *, is_final: bool) -> None:
        """Consume the complete lines of `tail` up to its end; `is_final` consumes a last line without newline."""
        while True:
            if self._stopping.is_set():
                raise Stopped
            data = os.pread(tail.fd, _CHUNK_BYTES, tail.read_pos)
            if not data:
                break
            self._bytes_read += len(data)
            base = tail.read_pos - len(tail.partial)  # file offset of buf[0]
            buf = tail.partial + data if tail.partial else data
            tail.read_pos += len(data)
            if tail.head_len < HEAD_BYTES:
                # Appended files never change their first bytes: they identify the file beyond a reused inode.
                tail.head_len = min(HEAD_BYTES, tail.read_pos)
                tail.head = head_digest(os.pread(tail.fd, tail.head_len, 0))
            start = 0
            while (newline := buf.find(b"\n", start)) >= 0:
                if tail.is_skipping:
                    tail.is_skipping = False  # the end of a line already rejected as too long
                elif newline - start > self._max_line_bytes:
                    self._reject(tail, "line_too_long", f"longer than {self._max_line_bytes} bytes")
                else:
                    self._consume(tail, buf[start:newline])
                tail.offset = base + newline + 1
                tail.line += 1
                start = newline + 1
                if len(self._batch) >= self._batch_events:
                    self._flush()
            rest = buf[start:]
            if not tail.is_skipping and len(rest) > self._max_line_bytes:
                self._reject(tail, "line_too_long", f"longer than {self._max_line_bytes} bytes")
                tail.is_skipping = True
            tail.partial = b"" if tail.is_skipping else rest
        if is_final and (tail.partial or tail.is_skipping):
            if tail.partial:
                self._consume(tail, tail.partial)
            tail.offset, tail.line = tail.read_pos, tail.line + 1
            tail.partial, tail.is_skipping = b"", False

    def _consume(self, tail: _Tail, line: bytes) -> None:
        """Decode one line into the pending batch, or count and log why it is rejected."""
        if not line.strip():
            return
        self._lines_read += 1
        try:
            document = orjson.loads(line)
        except orjson.JSONDecodeError as err:
            self._reject(tail, "invalid_json", str(err))
            return
        if not self._decoder.matches(document):
            self._reject(tail, "not_audit_event", "not a Kubernetes audit event")
            return
        is_logged = False
        for item in self._decoder.events(document, origin=tail.path):
            if isinstance(item, DecodeError):
                self._reject(tail, _reason(item), item.message, is_logged=is_logged)
                is_logged = True
            else:
                self._batch.append(item)
                self._events += 1

    def _reject(self, tail: _Tail, reason: str, detail: str, *, is_logged: bool = False) -> None:
        self._rejected[reason] += 1
        if not is_logged:
            log.warning("audit_line_rejected", file=tail.path, line=tail.line + 1, reason=reason, detail=detail)

    def _flush(self) -> None:
        """Hand the pending batch over with the positions it reaches; an empty one only to save progress.

        Positions go to the checkpoint from the batch's `on_done` alone. A batch not handed over because of
        a stop is forgotten, and nothing after it is handed over, so no saved position ever skips its events.
        """
        positions = tuple(tail.position() for tail in self._tails.values()) + tuple(self._known.values())
        if not self._batch and positions == self._last_sent:
            return
        events, self._batch = self._batch, []
        assert self._sink is not None
        self._checkpoint.hand_over(self._sink, events, positions, self._stopping)
        self._last_sent = positions
