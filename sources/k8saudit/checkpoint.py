"""Persist how far each audit log file was read, but only once the consumer acknowledged the events up to there.

A position names a file by identity (st_dev, st_ino), not by path, so that a file renamed by rotation is
recognised under its new name. Since inode numbers are reused once a file is deleted, a position also holds a
digest of the file's first bytes; a file whose head no longer matches is read from the start.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Generic, TypeVar

import structlog

from agent.atomic_file import read_state, write_state
from agent.event import Event
from agent.source import EventSink
from agent.source_worker import Stopped
from sources.cloudtrail.checkpoint import hand_over

log = structlog.get_logger(__name__)

Identity = tuple[int, int]

#: How many leading bytes of a file identify it besides its inode; an audit line is longer, so the digest
#: covers a unique auditID.
HEAD_BYTES = 256
_FORMAT_VERSION = 1

PositionsT = TypeVar("PositionsT")


def head_digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class FilePosition:
    """Where reading of one file resumes: `offset` is the byte after the last line handed over (or rejected).

    `line` counts the lines before `offset`, for log messages; `head` digests the first `head_len` bytes.
    """

    dev: int
    ino: int
    path: str
    offset: int
    line: int = 0
    head_len: int = 0
    head: str = ""

    @property
    def identity(self) -> Identity:
        return (self.dev, self.ino)

    def is_same_file(self, fd: int, size: int) -> bool:
        """Whether the open file `fd` of `size` bytes is still the file this position was taken in."""
        if size < self.offset:
            return False  # truncated (copytruncate while we were stopped) or another file on a reused inode
        if self.head_len == 0:
            return True
        return head_digest(os.pread(fd, self.head_len, 0)) == self.head

    def as_json(self) -> dict[str, object]:
        return {"dev": self.dev, "ino": self.ino, "path": self.path, "offset": self.offset, "line": self.line,
                "head_len": self.head_len, "head": self.head}


def load_positions(path: Path) -> dict[Identity, FilePosition]:
    """The positions saved at `path`; empty when there is none, or (logged) when it cannot be read.

    A checkpoint we cannot read means starting over, which repeats events rather than losing them.
    """
    document = read_state(path, version=_FORMAT_VERSION)
    if not document:
        return {}
    positions: dict[Identity, FilePosition] = {}
    entries = document.get("files")
    if not isinstance(entries, list):
        log.warning("checkpoint_unreadable", file=str(path), reason="no 'files' array")
        return {}
    for entry in entries:
        try:
            position = FilePosition(
                dev=int(entry["dev"]), ino=int(entry["ino"]), path=str(entry["path"]), offset=int(entry["offset"]),
                line=int(entry.get("line", 0)), head_len=int(entry.get("head_len", 0)),
                head=str(entry.get("head", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            log.warning("checkpoint_entry_ignored", file=str(path), reason=repr(err))
            continue
        positions[position.identity] = position
    return positions


def find_unfinished(positions: Iterable[FilePosition]) -> list[tuple[FilePosition, str]]:
    """Saved files that grew past their saved offset, with their path now: the saved one, or a new name in
    the same folder when rotation renamed them while we were stopped."""
    listings: dict[str, dict[Identity, tuple[str, int]]] = {}
    found: list[tuple[FilePosition, str]] = []
    for position in positions:
        try:
            st = os.stat(position.path)
            now: tuple[str, int] | None = None
            if (st.st_dev, st.st_ino) == position.identity:
                now = (position.path, st.st_size)
        except OSError:
            pass  # renamed away and nothing new created yet, or removed
        if now is None:
            folder = os.path.dirname(position.path) or "."
            if folder not in listings:
                listings[folder] = _identities_in(folder)
            now = listings[folder].get(position.identity)
        if now is not None and now[1] > position.offset:
            found.append((position, now[0]))
    return found


def _identities_in(folder: str) -> dict[Identity, tuple[str, int]]:
    """Path and size of each regular file in `folder`, by identity."""
    found: dict[Identity, tuple[str, int]] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        found[(st.st_dev, st.st_ino)] = (entry.path, st.st_size)
                except OSError:
                    continue  # removed between listing and stat
    except OSError as err:
        log.warning("checkpoint_folder_unreadable", file=folder, reason=err.strerror)
    return found


def write_positions(path: Path, positions: Sequence[FilePosition]) -> None:
    """Replace the checkpoint at `path` atomically: readers see the old or the new content, never a mix."""
    write_state(path, {"files": [p.as_json() for p in positions]}, version=_FORMAT_VERSION)


class CheckpointWriter(Generic[PositionsT]):
    """Writes the positions of a batch once it and every batch handed over before it were acknowledged.

    The positions are whatever the reader says it reached (file positions here, CloudWatch stream marks for EKS);
    `write(path, positions)` replaces the file atomically.

    The reader registers each batch's positions before handing the batch over and gets a sequence number;
    the consumer's `on_done` acknowledges it. Positions are written only up to the longest acknowledged
    prefix, so that a batch finished early by another consumer thread never covers one still being evaluated.
    Thread-safe.
    """

    def __init__(self, path: Path | None, write: Callable[[Path, PositionsT], None]) -> None:
        self.path = path
        self._write = write
        self.writes = 0
        self.write_failures = 0
        self._lock = threading.Lock()
        self._next_seq = 0
        self._pending: dict[int, PositionsT] = {}
        self._acknowledged: set[int] = set()

    def register(self, positions: PositionsT) -> int:
        """Remember the positions a batch reaches; the returned number is passed to `acknowledge`."""
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
            self._pending[seq] = positions
            return seq

    def hand_over(self, sink: EventSink, events: Sequence[Event], positions: PositionsT,
                  stopping: threading.Event) -> None:
        """Put one batch (maybe empty: it then only saves progress) into `sink`, its `positions` written once it and
        every earlier batch are acknowledged; Stopped, the positions forgotten, when the reader stops or the queue
        closes first."""
        seq = self.register(positions)
        if not hand_over(sink, events, partial(self.acknowledge, seq), stopping):
            self.cancel(seq)
            raise Stopped

    def cancel(self, seq: int) -> None:
        """Forget a batch that was never handed over (the reader stopped); only the last one may be cancelled."""
        with self._lock:
            self._pending.pop(seq, None)
            self._acknowledged.discard(seq)

    def acknowledge(self, seq: int) -> None:
        """Called from the consumer's `on_done`: persist positions up to the longest acknowledged prefix."""
        with self._lock:
            self._acknowledged.add(seq)
            reached: PositionsT | None = None
            while self._pending:
                first = next(iter(self._pending))  # dicts keep insertion order, which is sequence order
                if first not in self._acknowledged:
                    break
                reached = self._pending.pop(first)
                self._acknowledged.discard(first)
            if reached is None or self.path is None:
                return
            try:
                self._write(self.path, reached)
            except OSError as err:
                # The consumer must go on; the next acknowledged batch writes a later position.
                self.write_failures += 1
                log.warning("checkpoint_write_failed", file=str(self.path), reason=str(err))
                return
            self.writes += 1
