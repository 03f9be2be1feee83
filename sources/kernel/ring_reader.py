"""Reading a BPF ring buffer (BPF_MAP_TYPE_RINGBUF) from its memory mapping, without a callback per record.

libbpf's reader calls back into Python through ctypes once per record; under a flood those trampolines cost a
sixth of the agent. This reader maps the ring as the kernel lays it out and slices each record out as `bytes`:

- the consumer page (offset 0, one page, writable): the consumer position, which only the reader writes;
- the producer page (offset one page, read-only), then the data area mapped twice in a row, so that a record
  running past the end of the ring reads on, contiguous, from its start.

Positions are byte counts that only grow; `position & (size - 1)` is the offset in the data area. Each record
is an 8-byte header (u32 length with the BUSY and DISCARD bits on top, u32 page offset for the kernel) then its
sample; the next record starts at the header plus the length rounded up to 8 bytes.

Memory ordering. The producer reserves a record by writing its header (length | BUSY) *before* it publishes the
new producer position, and commits it by clearing BUSY with an atomic exchange (a full barrier) *after* writing
the sample. So a header read without BUSY promises that every byte of its sample is written; a header with BUSY
is being written (later records may be done already, but the ring is consumed in order: stop there). libbpf
reads the positions and the header with load-acquire; here they are plain loads, each in its own C call of the
interpreter, which is enough on x86: under TSO a load is never reordered with an earlier load (so the sample
copied after a header seen without BUSY is the committed one, and the header read after the producer position is
the one written before it), and a store never with earlier loads (so the consumer position stored after the
copies cannot let the producer overwrite a record still being read). arm64 reorders both: there the header and
producer loads would need acquire and the consumer store release, which Python cannot issue, so other machines
read through libbpf's callback (`CallbackReader`, which `open_reader` picks there). The positions go through a
memoryview of unsigned longs (the kernel's type, native order), one aligned load or store each, so neither side
can see half a position.
"""

from __future__ import annotations

import ctypes
import mmap
import platform
import select
from typing import Any, Protocol

#: Machines whose memory order (TSO) makes plain loads and stores enough (see the module docstring).
TSO_MACHINES = frozenset({"x86_64"})
PAGE = mmap.PAGESIZE
HEADER_SIZE = 8
BUSY = 1 << 31
DISCARD = 1 << 30
_LENGTH = DISCARD - 1


class RingReader:
    """Records of the ring buffer map `map_fd` of `size` bytes (its max_entries), oldest first, at most
    `max_batch` per poll; what is left stays in the ring for the next poll."""

    def __init__(self, map_fd: int, size: int, *, max_batch: int) -> None:
        if size < PAGE or size & (size - 1):
            raise ValueError(f"a ring buffer's size is a power of two of at least one page ({PAGE}), not {size}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        if platform.machine() not in TSO_MACHINES:
            raise ValueError(f"the mapped ring reader relies on x86 memory ordering, not that of {platform.machine()}")
        self._mask = size - 1
        self._max_batch = max_batch
        self._consumer_page = mmap.mmap(map_fd, PAGE, access=mmap.ACCESS_WRITE, offset=0)
        # Read-only: a stray write raises instead of faulting on the kernel's read-only mapping.
        self._ring = mmap.mmap(map_fd, PAGE + 2 * size, access=mmap.ACCESS_READ, offset=PAGE)
        self._consumer = memoryview(self._consumer_page).cast("L")
        self._producer = memoryview(self._ring)[:HEADER_SIZE].cast("L")
        self._words = memoryview(self._ring).cast("I")
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN)

    def poll(self, timeout_ms: int) -> list[bytes]:
        """The records ready, at most max_batch; when there are none, wait up to `timeout_ms` (-1: no limit) for a
        wakeup, then take what is there. The producer wakes the reader only now and then, so a wait that timed
        out may still find records."""
        records = self._take()
        if records or timeout_ms == 0:
            return records
        self._epoll.poll(timeout_ms / 1000 if timeout_ms > 0 else -1)
        return self._take()

    def _take(self) -> list[bytes]:
        records: list[bytes] = []
        append = records.append
        left = self._max_batch
        words, ring, mask = self._words, self._ring, self._mask
        header, padded, flags, length_bits = HEADER_SIZE, HEADER_SIZE + 7, BUSY | DISCARD, _LENGTH
        consumer = self._consumer[0]
        while left:
            producer = self._producer[0]
            if consumer >= producer:
                break
            # The data area is mapped twice in a row: all that lies between the positions is contiguous from here.
            at = first = PAGE + (consumer & mask)
            end = at + (producer - consumer)
            while at < end and left:
                length = words[at >> 2]
                if length & flags:
                    if length & BUSY:
                        break
                    length &= length_bits
                else:
                    append(ring[at + header:at + header + length])
                    left -= 1
                at += (length + padded) & ~7
            if at != first:
                consumer += at - first
                self._consumer[0] = consumer  # frees the space for the producer
            if at < end:
                break  # at a record not yet committed, or the batch is full
            # Caught up with the producer position read: more may have been committed since (as libbpf loops).
        return records

    def close(self) -> None:
        """Unmap the ring and stop waiting on it (before the map itself is closed)."""
        self._epoll.close()
        for view in (self._consumer, self._producer, self._words):
            view.release()
        self._consumer_page.close()
        self._ring.close()


class RecordReader(Protocol):
    def poll(self, timeout_ms: int) -> list[bytes]: ...

    def close(self) -> None: ...


class CallbackReader:
    """The ring buffer read through libbpf (BCC's `ring_buffer_poll`), which calls back once per record: for
    machines whose memory order the mapped reader cannot rely on."""

    def __init__(self, bpf: Any, table: Any, *, max_batch: int) -> None:
        self._bpf = bpf
        self._max_batch = max_batch
        self._pending: list[bytes] = []
        # Kept referenced: BCC holds only a raw pointer to the callback.
        self._callback = self._on_record
        table.open_ring_buffer(self._callback)

    def _on_record(self, _ctx: object, data: int, size: int) -> int:
        pending = self._pending
        pending.append(ctypes.string_at(data, size))
        # libbpf drains while records keep coming: a negative answer ends the poll (this record is consumed).
        return -1 if len(pending) >= self._max_batch else 0

    def poll(self, timeout_ms: int) -> list[bytes]:
        self._bpf.ring_buffer_poll(timeout_ms)
        if len(self._pending) < self._max_batch:
            # A wakeup comes only now and then: what was written without one is read now.
            self._bpf.ring_buffer_consume()
        batch, self._pending = self._pending, []
        return batch

    def close(self) -> None:
        """Nothing to release: BCC frees libbpf's reader with the program."""


def open_reader(bpf: Any, table: Any, *, max_batch: int) -> RecordReader:
    """The reader of BCC ring buffer `table`: the mapped one where the machine's memory order allows it."""
    if platform.machine() in TSO_MACHINES:
        return RingReader(table.map_fd, table.max_entries, max_batch=max_batch)
    return CallbackReader(bpf, table, max_batch=max_batch)
