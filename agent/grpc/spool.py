"""The on-disk alert spool: numbered records in segment files, bounded by size and age.

Layout: `<dir>/<first_seq:020d>.seg` segment files, each an 8-byte magic followed by records
`[u32 length][u64 seq][u32 crc32][payload]` (little endian; the CRC covers length, seq and
payload), and `<dir>/seq.hwm`, a bound no issued sequence number has reached. The bound is
reserved in blocks and fsynced before use and set exactly on a clean close, so sequence numbers
keep growing across restarts and are never reused, even when a crash lost the unsynced tail.

One writer (the fan-out, under its lock) appends; any number of threads read. Bounds are
enforced by deleting whole segments, oldest first, never the one being written. Data is fsynced
every `fsync_interval_s` by a background thread (0: after every append; None: never, left to
the OS). A torn or corrupt tail of the last segment is truncated at open with a warning.
"""

from __future__ import annotations

import bisect
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import structlog

from agent.atomic_file import replace_atomically

__all__ = ["Spool", "SpoolHole"]

log = structlog.get_logger(__name__)

MAGIC = b"FASPOOL1"
_HEAD = struct.Struct("<IQI")
_LENSEQ = struct.Struct("<IQ")
_MAX_RECORD_BYTES = 16 * 1024 * 1024
SEQ_BLOCK = 65536
_HWM_FILE = "seq.hwm"


@dataclass(frozen=True, slots=True)
class SpoolHole:
    """Sequence numbers a read wanted but the spool no longer holds (dropped by its bounds)."""

    first_seq: int
    last_seq: int

    @property
    def missed(self) -> int:
        return self.last_seq - self.first_seq + 1


@dataclass(slots=True)
class _Segment:
    first_seq: int
    path: Path
    size: int  # bytes readers may read: whole records only
    last_seq: int  # first_seq - 1 while empty
    last_write_s: float


def _record(seq: int, payload: bytes) -> bytes:
    lenseq = _LENSEQ.pack(len(payload), seq)
    return lenseq + struct.pack("<I", zlib.crc32(payload, zlib.crc32(lenseq))) + payload


def _scan(f: BinaryIO, limit: int | None = None) -> Iterator[tuple[int, int, bytes]]:
    """Valid records from the current position as (offset, seq, payload); stops at the first bad one."""
    offset = f.tell()
    while limit is None or offset < limit:
        head = f.read(_HEAD.size)
        if len(head) < _HEAD.size:
            return
        length, seq, crc = _HEAD.unpack(head)
        if length > _MAX_RECORD_BYTES:
            return
        payload = f.read(length)
        if len(payload) < length or zlib.crc32(payload, zlib.crc32(head[:12])) != crc:
            return
        yield offset, seq, payload
        offset += _HEAD.size + length


class Spool:
    """Numbered alert records on disk; `append` from one thread, `read` from any."""

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = 256 * 1024 * 1024,
                 max_age_s: float = 7 * 86400.0, segment_bytes: int | None = None,
                 fsync_interval_s: float | None = 1.0) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.segment_bytes = segment_bytes or max(64 * 1024, min(16 * 1024 * 1024, max_bytes // 8))
        self._fsync_interval_s = fsync_interval_s
        self._lock = threading.Lock()  # segment list and sizes, shared with readers
        self._write_lock = threading.Lock()  # appends, rolls and expiry
        self._last_expire_s = 0.0
        self._segments: list[_Segment] = []
        self._firsts: list[int] = []
        self._writer: BinaryIO | None = None
        self._dirty = False
        self._closed = False
        self.dropped_segments = 0
        self._open()
        self._stop = threading.Event()
        self._syncer = threading.Thread(target=self._sync_loop, name="spool-sync", daemon=True)
        self._syncer.start()

    # -- opening -------------------------------------------------------------------------------

    def _open(self) -> None:
        paths = sorted(self.directory.glob("*.seg"))
        for path in paths:
            try:
                first = int(path.stem)
            except ValueError:
                log.warning("spool_file_ignored", file=str(path))
                continue
            stat = path.stat()
            self._segments.append(_Segment(first, path, stat.st_size, first - 1, stat.st_mtime))
        for before, after in zip(self._segments, self._segments[1:], strict=False):
            before.last_seq = after.first_seq - 1  # exact unless a crash lost numbers in between
        recovered = 1
        if self._segments:
            self._recover_last(self._segments[-1])
            recovered = self._segments[-1].last_seq + 1
        self._hwm = self._read_hwm()
        self.next_seq = max(recovered, self._hwm)
        if self.next_seq > recovered:
            log.warning("spool_seq_skipped", first_skipped=recovered, next_seq=self.next_seq,
                        reason="unclean shutdown: numbers issued before the crash are never reused")
        last = self._segments[-1] if self._segments else None
        if last is None or last.last_seq + 1 != self.next_seq:
            last = self._new_segment(self.next_seq)
        self._writer = open(last.path, "ab", buffering=0)  # noqa: SIM115 - lives until close()
        self._firsts = [s.first_seq for s in self._segments]
        self._enforce_bounds(time.time())
        log.info("spool_opened", dir=str(self.directory), segments=len(self._segments),
                 first_seq=self.first_seq, next_seq=self.next_seq)

    def _recover_last(self, seg: _Segment) -> None:
        with open(seg.path, "r+b") as f:
            if f.read(len(MAGIC)) != MAGIC:
                log.warning("spool_segment_reset", file=str(seg.path), reason="bad magic")
                f.seek(0)
                f.truncate()
                f.write(MAGIC)
                seg.size = len(MAGIC)
                return
            good = len(MAGIC)
            expected = seg.first_seq
            for offset, seq, payload in _scan(f):
                if seq < expected:  # numbers only grow; a failed write may have skipped some
                    break
                good = offset + _HEAD.size + len(payload)
                expected += 1
            if good < seg.size:
                log.warning("spool_tail_truncated", file=str(seg.path), offset=good, dropped_bytes=seg.size - good)
                f.truncate(good)
                os.fsync(f.fileno())
            seg.size = good
            seg.last_seq = expected - 1

    def _read_hwm(self) -> int:
        try:
            return int((self.directory / _HWM_FILE).read_text().strip() or "0")
        except FileNotFoundError:
            return 0
        except ValueError:
            log.warning("spool_hwm_unreadable", file=str(self.directory / _HWM_FILE))
            return 0

    def _write_hwm(self, value: int) -> None:
        replace_atomically(self.directory / _HWM_FILE, f"{value}\n".encode())
        self._hwm = value

    def _new_segment(self, first_seq: int) -> _Segment:
        path = self.directory / f"{first_seq:020d}.seg"
        with open(path, "wb") as f:
            f.write(MAGIC)
        seg = _Segment(first_seq, path, len(MAGIC), first_seq - 1, time.time())
        self._segments.append(seg)
        self._firsts.append(first_seq)
        return seg

    # -- writing -------------------------------------------------------------------------------

    @property
    def first_seq(self) -> int:
        """The oldest retained sequence number; `next_seq` when the spool holds none."""
        with self._lock:
            for seg in self._segments:
                if seg.last_seq >= seg.first_seq:
                    return seg.first_seq
            return self.next_seq

    @property
    def last_seq(self) -> int:
        """The newest sequence number issued (0 before the first)."""
        return self.next_seq - 1

    def append(self, seq: int, payload: bytes) -> None:
        """Store the record numbered `seq`, which must be `next_seq`; rolls and trims as needed.

        On OSError the number is still used up (never reissued) and the error is raised.
        """
        with self._write_lock:
            if seq != self.next_seq:
                raise ValueError(f"spool expects seq {self.next_seq}, got {seq}")
            if self._closed:
                raise RuntimeError("spool is closed")
            data = _record(seq, payload)
            now = time.time()
            active = self._segments[-1]
            try:
                if seq >= self._hwm:
                    self._write_hwm(seq + SEQ_BLOCK)
                if active.size + len(data) > self.segment_bytes and active.last_seq >= active.first_seq:
                    self._roll(seq, now)
                    active = self._segments[-1]
                assert self._writer is not None
                self._writer.write(data)
            except OSError:
                self.next_seq = seq + 1
                self._truncate_to(active)
                raise
            with self._lock:
                active.size += len(data)
                active.last_seq = seq
                active.last_write_s = now
                self.next_seq = seq + 1
            self._dirty = True
            if self._fsync_interval_s == 0:
                os.fsync(self._writer.fileno())

    def _truncate_to(self, seg: _Segment) -> None:
        """Cut a partly written record so that the records after it stay readable."""
        try:
            os.truncate(seg.path, seg.size)
        except OSError as exc:
            log.warning("spool_truncate_failed", file=str(seg.path), error=str(exc))

    def _roll(self, first_seq: int, now: float) -> None:
        assert self._writer is not None
        if self._fsync_interval_s is not None:
            os.fsync(self._writer.fileno())
        self._writer.close()
        with self._lock:
            seg = self._new_segment(first_seq)
        self._writer = open(seg.path, "ab", buffering=0)  # noqa: SIM115 - lives until close()
        self._enforce_bounds(now)

    def _enforce_bounds(self, now: float) -> None:
        """Drop whole segments, oldest first, while over the size bound or older than the age bound."""
        with self._lock:
            while len(self._segments) > 1:
                oldest = self._segments[0]
                total = sum(s.size for s in self._segments)
                if total <= self.max_bytes and now - oldest.last_write_s <= self.max_age_s:
                    break
                self._segments.pop(0)
                self._firsts.pop(0)
                self.dropped_segments += 1
                oldest.path.unlink(missing_ok=True)
                log.info("spool_segment_dropped", file=oldest.path.name, first_seq=oldest.first_seq,
                         last_seq=oldest.last_seq, reason="size" if total > self.max_bytes else "age")

    def expire(self, now: float | None = None) -> None:
        """Apply the age bound now, also to the segment being written (the sync thread calls it)."""
        now = time.time() if now is None else now
        with self._write_lock:
            if self._closed:
                return
            self._last_expire_s = now
            active = self._segments[-1]
            if active.last_seq >= active.first_seq and now - active.last_write_s > self.max_age_s:
                self._roll(self.next_seq, now)
            else:
                self._enforce_bounds(now)

    def sync(self) -> None:
        """fsync the segment being written if anything was appended since the last sync."""
        if self._dirty and self._writer is not None and not self._writer.closed:
            self._dirty = False
            os.fsync(self._writer.fileno())

    def _sync_loop(self) -> None:
        interval_s = self._fsync_interval_s or 1.0
        expire_every_s = max(1.0, min(60.0, self.max_age_s / 10))
        while not self._stop.wait(interval_s):
            try:
                if self._fsync_interval_s:
                    self.sync()
                if time.time() - self._last_expire_s >= expire_every_s:
                    self.expire()
            except (OSError, ValueError) as exc:  # the writer was closed or rolled under us
                log.warning("spool_maintenance_failed", error=str(exc))

    def close(self) -> None:
        """Sync, record the exact next sequence number, release the files. Idempotent."""
        if self._closed:
            return
        self._stop.set()
        self._syncer.join()
        with self._write_lock:
            self._closed = True
            if self._writer is not None:
                os.fsync(self._writer.fileno())
                self._writer.close()
            self._write_hwm(self.next_seq)
        log.info("spool_closed", dir=str(self.directory), next_seq=self.next_seq)

    # -- reading -------------------------------------------------------------------------------

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return sum(s.size for s in self._segments)

    def read(self, after_seq: int, *, until_seq: int | None = None) -> Iterator[tuple[int, bytes] | SpoolHole]:
        """Records with after_seq < seq <= until_seq (default: the newest now), in order.

        A `SpoolHole` stands in for numbers in that range that the bounds already dropped.
        """
        with self._lock:
            until = self.next_seq - 1 if until_seq is None else min(until_seq, self.next_seq - 1)
            start = max(0, bisect.bisect_right(self._firsts, after_seq + 1) - 1)
            snapshot = [(s.first_seq, s.path, s.size, s.last_seq) for s in self._segments[start:]]
        want = after_seq + 1
        for first, path, size, last in snapshot:
            if want > until:
                return
            if last < want:
                continue
            if want < first:
                yield SpoolHole(want, min(first - 1, until))
                want = first
            try:
                f = open(path, "rb")  # noqa: SIM115 - closed below, also when the reader stops early
            except FileNotFoundError:  # dropped since the snapshot
                yield SpoolHole(want, min(last, until))
                want = last + 1
                continue
            with f:
                f.seek(len(MAGIC))
                for _, seq, payload in _scan(f, size):
                    if seq > until:
                        return
                    if seq >= want:
                        if seq > want:  # numbers used up by failed writes
                            yield SpoolHole(want, seq - 1)
                        yield seq, payload
                        want = seq + 1
            if want <= min(last, until):  # damaged records, or numbers a crash lost before a restart
                log.info("spool_records_missing", file=path.name, first_seq=want, last_seq=min(last, until))
                yield SpoolHole(want, min(last, until))
                want = min(last, until) + 1
        if want <= until:
            yield SpoolHole(want, until)
