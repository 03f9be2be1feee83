"""Watch local directories and files for CloudTrail log files and feed each new file's records to the sink once.

For a trail synced with `aws s3 sync`, or a folder where log files are dropped: every `.json` and `.json.gz`
file below a watched directory (recursively, dot files aside), and every file named directly. A file is read
once it is complete: its size and mtime unchanged between two polls, or its mtime older than one poll interval.
A file is known by path, size and mtime_ns; once the consumer acknowledged its records it is recorded in the
checkpoint, so a restart does not read it again, and a file rewritten later is read again as a new file.

Only regular files are read, so that no entry can block the watcher or stream into it forever: a FIFO, socket
or device (or a link to one, such as `/dev/zero`) is skipped with one warning, and the open is non-blocking in
case one is swapped in after the scan. A symbolic link is followed only when its target is inside a watched
path, unless `follow_symlinks_outside`. A file over the object limits is skipped and remembered as done like
any rejected file (see `objects.py`); touching it (a new mtime) makes it be read again.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from agent.atomic_file import prepare_folder, read_state
from agent.errors import AgentError
from agent.location import Location
from agent.source import EventSink
from agent.source_worker import SourceWorker, Stopped, WorkerSource
from sources.cloudtrail.checkpoint import FORMAT_VERSION, CheckpointWriter, ReadTally, hand_over
from sources.cloudtrail.decoder import SOURCE, CloudTrailDecoder
from sources.cloudtrail.objects import DEFAULT_LIMITS, ObjectLimits, read_object

log = structlog.get_logger(__name__)

LOG_SUFFIXES = (".json.gz", ".json")

#: A file version: path, size in bytes, mtime in ns.
FileKey = tuple[str, int, int]
#: What an entry that is not a regular file is, for the warning that skips it.
_FILE_KINDS = {stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket", stat.S_IFCHR: "character device",
               stat.S_IFBLK: "block device", stat.S_IFDIR: "directory"}


class CloudTrailDirectory(WorkerSource):
    """LiveSource reading CloudTrail log files; one thread scans every `poll_interval_s` and reads new files.

    Without `follow` it reads every file there once, without waiting for files to settle, and ends.
    """

    name = SOURCE

    def __init__(self, *, paths: Sequence[str | Path], follow: bool = True, poll_interval_s: float = 1.0,
                 checkpoint_path: Path | None = None, hostname: str = "", limits: ObjectLimits = DEFAULT_LIMITS,
                 follow_symlinks_outside: bool = False) -> None:
        self._paths = [os.path.abspath(p) for p in paths]
        self._follow = follow
        self._limits = limits
        self._follow_symlinks_outside = follow_symlinks_outside
        self._poll_interval_s = poll_interval_s
        self._checkpoint_path = checkpoint_path
        self._ignored = {os.path.abspath(checkpoint_path)} if checkpoint_path else set()
        self._hostname = hostname
        self._lock = threading.Lock()
        #: Acknowledged files: path -> (size, mtime_ns) of the version read.
        self._done: dict[str, tuple[int, int]] = {}
        self._in_flight: set[FileKey] = set()
        self._checkpoint = CheckpointWriter(checkpoint_path, self._snapshot)
        self._tally = ReadTally()
        # Scanner-thread state: what each file looked like on the previous poll, and what was warned about.
        self._previous: dict[str, tuple[int, int]] = {}
        self._warned: set[tuple[str, object]] = set()
        self._read_errors = 0
        self._not_regular = 0
        self._links_outside = 0
        self._worker = SourceWorker("cloudtrail-files", join_timeout_s=5.0)
        self._stopping = self._worker.stopping
        self._sink: EventSink | None = None

    # --- LiveSource -------------------------------------------------------------------------------------------

    def start(self, sink: EventSink) -> None:
        """Load the checkpoint and start watching; a missing path is fatal only when not following."""
        self._worker.check_idle()
        if not self._follow:
            missing = [p for p in self._paths if not os.path.exists(p)]
            if missing:
                raise AgentError("CloudTrail log path not found", Location(file=missing[0]))
        if self._checkpoint_path is not None:
            prepare_folder(self._checkpoint_path)
            self._load(self._checkpoint_path)
        self._sink = sink
        self._worker.start(self._run)

    def metrics(self) -> dict[str, Any]:
        metrics = self._tally.as_metrics()
        with self._lock:
            metrics["files_pending"] = len(self._in_flight)
        metrics["read_errors"] = self._read_errors
        metrics["files_skipped_not_regular"] = self._not_regular
        metrics["symlinks_skipped_outside"] = self._links_outside
        metrics["checkpoint_writes"] = self._checkpoint.writes
        metrics["checkpoint_write_failures"] = self._checkpoint.write_failures
        return metrics

    # --- checkpoint -------------------------------------------------------------------------------------------

    def _load(self, path: Path) -> None:
        files = read_state(path, version=FORMAT_VERSION).get("files", [])
        if not isinstance(files, list):
            log.warning("checkpoint_ignored", file=str(path), reason="no 'files' array")
            return
        for entry in files:
            try:
                self._done[str(entry["path"])] = (int(entry["size"]), int(entry["mtime_ns"]))
            except (KeyError, TypeError, ValueError) as err:
                log.warning("checkpoint_entry_ignored", file=str(path), reason=repr(err))

    def _snapshot(self) -> dict[str, Any]:
        with self._lock:
            files = [{"path": path, "size": size, "mtime_ns": mtime_ns}
                     for path, (size, mtime_ns) in sorted(self._done.items())]
        return {"files": files}

    def _mark_done(self, key: FileKey) -> None:
        with self._lock:
            self._in_flight.discard(key)
            self._done[key[0]] = (key[1], key[2])

    # --- watcher thread ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                self._poll()
                if not self._follow or self._stopping.wait(self._poll_interval_s):
                    break
        except Stopped:
            pass

    def _warn_once(self, event: str, key: object, **context: Any) -> bool:
        """Log `event` the first time it happens to `key`; whether it did now."""
        if (event, key) in self._warned:
            return False
        self._warned.add((event, key))
        log.warning(event, **context)
        return True

    def _poll(self) -> None:
        """Read every complete file not done nor in hand, in path order (CloudTrail names sort by time)."""
        found = self._scan()
        now_ns = time.time_ns()
        settle_ns = int(self._poll_interval_s * 1e9)
        with self._lock:
            # Forget files that are gone, so that the checkpoint does not grow forever.
            for path in [path for path in self._done if path not in found and not os.path.exists(path)]:
                del self._done[path]
        versions = {path: (st.st_size, st.st_mtime_ns) for path, st in found.items()}
        for path, version in sorted(versions.items()):
            if self._stopping.is_set():
                raise Stopped
            key = (path, *version)
            with self._lock:
                if self._done.get(path) == version or key in self._in_flight:
                    continue
            is_complete = (not self._follow or self._previous.get(path) == version
                           or now_ns - version[1] > settle_ns)
            if is_complete:
                self._read(key, found[path])
        self._previous = versions

    def _scan(self) -> dict[str, os.stat_result]:
        """The stat of every candidate file under the watched paths now (of its target, for a link)."""
        found: dict[str, os.stat_result] = {}
        # Where links may lead: the watched paths as they really are (a watched folder may be a link itself).
        inside = [os.path.realpath(root) for root in self._paths]
        for root in self._paths:
            if os.path.isdir(root):
                for folder, dirs, names in os.walk(root, onerror=partial(self._walk_failed, root)):
                    dirs[:] = [d for d in dirs if not d.startswith(".")]
                    for name in names:
                        if not name.startswith(".") and name.endswith(LOG_SUFFIXES):
                            self._note(os.path.join(folder, name), found, inside)
            elif os.path.exists(root):
                self._note(root, found, inside)
            else:
                # With follow the path may appear later (the first sync has not run yet).
                self._warn_once("cloudtrail_path_missing", root, file=root)
        return found

    def _walk_failed(self, root: str, err: OSError) -> None:
        self._warn_once("cloudtrail_dir_unreadable", err.filename, file=err.filename or root, reason=err.strerror)

    def _note(self, path: str, found: dict[str, os.stat_result], inside: Sequence[str]) -> None:
        """Add `path` when it is a regular file, or a link to one that stays inside the watched paths (unless
        links may lead outside); an entry skipped is warned about once."""
        if path in self._ignored:
            return
        try:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                target = os.path.realpath(path)
                if not self._follow_symlinks_outside and not any(
                        target == root or target.startswith(root.rstrip(os.sep) + os.sep) for root in inside):
                    if self._warn_once("cloudtrail_symlink_outside", path, file=path, target=target):
                        self._links_outside += 1
                    return
                st = os.stat(path)
        except OSError:
            return  # removed between listing and stat, or a link to nothing
        if not stat.S_ISREG(st.st_mode):
            kind = _FILE_KINDS.get(stat.S_IFMT(st.st_mode), "special file")
            if self._warn_once("cloudtrail_not_regular_file", path, file=path, kind=kind):
                self._not_regular += 1
            return
        found[path] = st

    def _read(self, key: FileKey, scanned: os.stat_result) -> None:
        """Decode one file and hand its events over; a file that cannot be read is retried on the next poll."""
        path = key[0]
        decoder = CloudTrailDecoder(hostname=self._hostname)
        try:
            # O_NONBLOCK: were the file swapped for a FIFO since the scan, open() must not wait for a writer.
            with open(os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK), "rb") as file:
                if not _is_same(os.fstat(file.fileno()), scanned):
                    return  # replaced since the scan (maybe by no regular file): the next poll looks again
                decoded = read_object(file, name=path, decoder=decoder, limits=self._limits)
                if not _is_same(os.fstat(file.fileno()), scanned):
                    return  # written to while read: the next poll sees it settle
        except OSError as err:
            self._read_errors += 1
            self._warn_once("cloudtrail_file_unreadable", key, file=path, reason=err.strerror)
            return
        self._tally.count(decoded, decoder)
        with self._lock:
            self._in_flight.add(key)
        # A rejected file goes over as an empty batch: acknowledged, it is done and not read again.
        on_done = partial(self._checkpoint.acknowledge, partial(self._mark_done, key))
        assert self._sink is not None
        if not hand_over(self._sink, decoded.events, on_done, self._stopping):
            with self._lock:
                self._in_flight.discard(key)
            raise Stopped


def _is_same(now: os.stat_result, scanned: os.stat_result) -> bool:
    """Whether an open file is the one scanned, unchanged."""
    return ((now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns)
            == (scanned.st_dev, scanned.st_ino, scanned.st_size, scanned.st_mtime_ns))
