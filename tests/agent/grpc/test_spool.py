"""The on-disk spool: numbering across restarts, range reads, bounds, crash recovery."""

from __future__ import annotations

import os
import time
from pathlib import Path

from structlog.testing import capture_logs

from agent.grpc.spool import SEQ_BLOCK, Spool, SpoolHole


def _fill(spool: Spool, count: int, size: int = 100) -> list[int]:
    seqs = []
    for _ in range(count):
        seq = spool.next_seq
        spool.append(seq, f"{seq}:".encode().ljust(size, b"x"))
        seqs.append(seq)
    return seqs


def _read(spool: Spool, after: int = 0) -> list[int | SpoolHole]:
    return [r if isinstance(r, SpoolHole) else r[0] for r in spool.read(after)]


class TestNumbering:
    def test_numbers_start_at_one_and_continue_after_restart(self, tmp_path: Path) -> None:
        """A reopened spool keeps its records and issues the next number, not 1 again."""
        spool = Spool(tmp_path)
        assert _fill(spool, 3) == [1, 2, 3]
        spool.close()
        spool = Spool(tmp_path)
        try:
            assert spool.next_seq == 4
            assert _fill(spool, 2) == [4, 5]
            assert _read(spool) == [1, 2, 3, 4, 5]
        finally:
            spool.close()

    def test_unclean_stop_never_reuses_numbers(self, tmp_path: Path) -> None:
        """Without a clean close the spool skips to its reserved bound, so no number is issued twice."""
        spool = Spool(tmp_path)
        _fill(spool, 3)
        spool._stop.set()  # simulate a crash: no close(), so the bound stays reserved
        with capture_logs() as logs:
            reopened = Spool(tmp_path)
        try:
            assert reopened.next_seq == 1 + SEQ_BLOCK
            assert any(e["event"] == "spool_seq_skipped" for e in logs)
            _fill(reopened, 1)
            assert _read(reopened) == [1, 2, 3, SpoolHole(4, SEQ_BLOCK), SEQ_BLOCK + 1]
        finally:
            reopened.close()


class TestReading:
    def test_read_returns_the_range_after_a_number(self, tmp_path: Path) -> None:
        """Reads start after the given number, also across segment files, and stop at the newest."""
        spool = Spool(tmp_path, segment_bytes=1000)
        try:
            _fill(spool, 40)
            assert len(list(tmp_path.glob("*.seg"))) > 3
            assert _read(spool, 25) == list(range(26, 41))
            assert [s for s, _ in spool.read(10, until_seq=12)] == [11, 12]  # type: ignore[misc]
            assert _read(spool, 40) == []
        finally:
            spool.close()

    def test_payloads_come_back_byte_for_byte(self, tmp_path: Path) -> None:
        """What was appended is what is read."""
        spool = Spool(tmp_path)
        try:
            spool.append(1, b"\x00\x01binary\xff")
            assert list(spool.read(0)) == [(1, b"\x00\x01binary\xff")]
        finally:
            spool.close()


class TestBounds:
    def test_oldest_segments_are_dropped_over_the_size_bound(self, tmp_path: Path) -> None:
        """The spool stays near its byte bound; reads before the oldest kept record report a hole."""
        spool = Spool(tmp_path, max_bytes=5000, segment_bytes=1000)
        try:
            _fill(spool, 200)
            assert spool.size_bytes <= 5000 + 1000
            first = spool.first_seq
            assert first > 1
            records = _read(spool)
            assert records[0] == SpoolHole(1, first - 1)
            assert records[1:] == list(range(first, 201))
        finally:
            spool.close()

    def test_segments_older_than_the_age_bound_are_dropped(self, tmp_path: Path) -> None:
        """Expiry removes old segments, the one being written included, and numbering goes on."""
        spool = Spool(tmp_path, max_age_s=60, segment_bytes=1000)
        try:
            _fill(spool, 30)
            spool.expire(now=time.time() + 3600)
            assert spool.first_seq == 31
            assert _read(spool) == [SpoolHole(1, 30)]
            assert _fill(spool, 1) == [31]
        finally:
            spool.close()


class TestRecovery:
    def test_corrupt_tail_is_truncated_with_a_warning(self, tmp_path: Path) -> None:
        """A torn last record after a crash is cut off at open; the records before it survive."""
        spool = Spool(tmp_path)
        _fill(spool, 5)
        spool.close()
        segment = sorted(tmp_path.glob("*.seg"))[-1]
        good_size = segment.stat().st_size
        with open(segment, "ab") as f:
            f.write(b"\x40\x00\x00\x00\x06\x00\x00\x00\x00\x00\x00\x00torn")
        with capture_logs() as logs:
            reopened = Spool(tmp_path)
        try:
            assert [e for e in logs if e["event"] == "spool_tail_truncated"]
            assert segment.stat().st_size == good_size
            assert _read(reopened) == [1, 2, 3, 4, 5]
            assert _fill(reopened, 1) == [6]
        finally:
            reopened.close()

    def test_flipped_byte_in_the_last_record_is_dropped(self, tmp_path: Path) -> None:
        """A CRC mismatch ends the valid part of the last segment."""
        spool = Spool(tmp_path)
        _fill(spool, 3)
        spool.close()
        segment = sorted(tmp_path.glob("*.seg"))[-1]
        data = bytearray(segment.read_bytes())
        data[-1] ^= 0xFF
        segment.write_bytes(bytes(data))
        os.utime(segment)
        with capture_logs():
            reopened = Spool(tmp_path)
        try:
            assert _read(reopened) == [1, 2, SpoolHole(3, 3)]
            assert reopened.next_seq == 4  # the number of the lost record is not reused
        finally:
            reopened.close()
