"""The ring buffer reader against a real BPF ring buffer: a tiny probe writes numbered records of varied sizes into
a one-page ring when traced processes call getppid, and every record must come out whole, in order, once."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from sources.kernel import bcc_setup
from sources.kernel.ring_reader import HEADER_SIZE, CallbackReader, RecordReader, RingReader
from tests.support.kernel import require_probe

pytestmark = [pytest.mark.root, pytest.mark.bpf]

FILL = 240
#: getppid writes a record of 16..255 bytes (cycling, so that records end at every 8-byte offset of the one-page
#: ring); getpgid reserves one of 256 bytes and holds it BUSY ~50 µs before committing it, while other CPUs write on
#: (or discards it, one in four).
PROGRAM = f"""
struct record {{
    u64 seq;
    u32 pid;
    u32 size;
    u8 fill[{FILL}];
}};
struct pattern {{
    u8 fill[{FILL}];
}};

BPF_RINGBUF_OUTPUT(ring, 1);
BPF_ARRAY(pattern, struct pattern, 1);
BPF_ARRAY(counters, u64, 3);  /* 0: records numbered, 1: refused by the full ring, 2: discarded */
BPF_ARRAY(wake_every, u64, 1);  /* a record in this many wakes the reader; 0: none does */
BPF_HASH(traced, u32, u8, 64);

/* The next record's number, or 0 when the caller is not traced. */
static __always_inline u64 number(u32 tgid) {{
    u32 zero = 0;
    u64 *numbered = counters.lookup(&zero);
    if (!traced.lookup(&tgid) || !numbered) return 0;
    return __sync_fetch_and_add(numbered, 1) + 1;
}}

static __always_inline u64 wake_flag(u64 seq) {{
    u32 zero = 0;
    u64 *every = wake_every.lookup(&zero);
    return (every && *every && seq % *every == 0) ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}}

static __always_inline void count(u32 index) {{
    u64 *value = counters.lookup(&index);
    if (value) __sync_fetch_and_add(value, 1);
}}

TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {{
    u32 tgid = bpf_get_current_pid_tgid() >> 32, zero = 0;
    struct pattern *p = pattern.lookup(&zero);
    struct record r;
    u64 seq = number(tgid);
    if (!seq || !p) return 0;
    bpf_probe_read_kernel(r.fill, sizeof(r.fill), p->fill);
    r.seq = seq;
    r.pid = tgid;
    u32 size = 16 + (seq * 37) % {FILL};
    asm volatile("%0 &= 255" : "+r"(size));  /* a bound the verifier sees: size < sizeof(r) */
    r.size = size;
    if (ring.ringbuf_output(&r, size, wake_flag(seq)) != 0) count(1);
    return 0;
}}

TRACEPOINT_PROBE(syscalls, sys_enter_getpgid) {{
    u32 tgid = bpf_get_current_pid_tgid() >> 32, zero = 0;
    struct pattern *p = pattern.lookup(&zero);
    u64 seq = number(tgid);
    if (!seq || !p) return 0;
    struct record *r = ring.ringbuf_reserve(sizeof(struct record));
    if (!r) {{
        count(1);
        return 0;
    }}
    r->seq = seq;
    r->pid = tgid;
    r->size = sizeof(struct record);
    bpf_probe_read_kernel(r->fill, sizeof(r->fill), p->fill);
    if (seq % 4 == 0) {{
        ring.ringbuf_discard(r, 0);
        count(2);
        return 0;
    }}
    u64 until = bpf_ktime_get_ns() + 50000;
    for (int i = 0; i < 2000 && bpf_ktime_get_ns() < until; i++) {{
    }}
    ring.ringbuf_submit(r, wake_flag(seq));
    return 0;
}}
"""
PATTERN = bytes((i * 7 + 3) % 251 for i in range(FILL))
MAX_BATCH = 5


@dataclass(frozen=True)
class Sample:
    seq: int
    pid: int
    size: int


@dataclass
class TinyProbe:
    bpf: Any
    reader: RecordReader

    @property
    def ring_size(self) -> int:
        return int(self.bpf[b"ring"].max_entries)

    def trace(self, pid: int) -> None:
        self.bpf[b"traced"][ctypes.c_uint32(pid)] = ctypes.c_uint8(1)

    def wake_every(self, records: int) -> None:
        self.bpf[b"wake_every"][ctypes.c_int(0)] = ctypes.c_uint64(records)

    def counters(self) -> tuple[int, int, int]:
        """(records numbered, refused by the full ring, discarded) since load."""
        table = self.bpf[b"counters"]
        return table[ctypes.c_int(0)].value, table[ctypes.c_int(1)].value, table[ctypes.c_int(2)].value


@pytest.fixture(params=["mapped", "libbpf"])
def probe(request: pytest.FixtureRequest) -> Iterator[TinyProbe]:
    """The tiny probe read by the mapped reader (x86) and by libbpf's callback (the other machines)."""
    require_probe()
    bcc, _headers, _available = bcc_setup.prepare()
    bpf = bcc.BPF(text=PROGRAM.encode(), cflags=["-w"])
    table = bpf[b"pattern"]
    table[ctypes.c_int(0)] = table.Leaf.from_buffer_copy(PATTERN)
    ring = bpf[b"ring"]
    reader: RecordReader = (RingReader(ring.map_fd, ring.max_entries, max_batch=MAX_BATCH)
                            if request.param == "mapped" else CallbackReader(bpf, ring, max_batch=MAX_BATCH))
    try:
        yield TinyProbe(bpf, reader)  # waking no reader until a test sets wake_every
    finally:
        reader.close()
        bpf.cleanup()


def _sample(raw: bytes) -> Sample:
    """The record's numbers, after checking that every byte of it is the one the probe wrote."""
    sample = Sample(int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:12], "little"),
                    int.from_bytes(raw[12:16], "little"))
    assert len(raw) == sample.size, f"record {sample.seq} of {sample.size} bytes came as {len(raw)}"
    assert raw[16:] == PATTERN[:sample.size - 16], f"record {sample.seq} holds bytes the probe did not write"
    return sample


def _drain(reader: RecordReader) -> list[Sample]:
    """What the one-page ring holds, taken in batches (fewer than a thousand: it holds 256 records at most)."""
    samples: list[Sample] = []
    for _ in range(1000):
        batch = reader.poll(0)
        if not batch:
            return samples
        assert len(batch) <= MAX_BATCH
        samples.extend(_sample(raw) for raw in batch)
    raise AssertionError("the ring never ran empty: records came back more than once")


def _wrapping(samples: list[Sample], ring_size: int) -> int:
    """How many of `samples` (all the ring ever held, from its start) run past the end of the ring."""
    position, wrapped = 0, 0
    for sample in samples:
        start = position + HEADER_SIZE
        end = start + sample.size
        wrapped += start // ring_size != (end - 1) // ring_size
        position += (sample.size + HEADER_SIZE + 7) & ~7
    return wrapped


def test_records_come_whole_in_order_once_across_batches_and_wraps(probe: TinyProbe) -> None:
    probe.trace(os.getpid())
    samples: list[Sample] = []
    for round_number in range(600):
        for _ in range(1 + round_number % 9):  # up to 9 records: more than a batch, less than the ring
            os.getppid()
        samples.extend(_drain(probe.reader))
    written, refused, _discarded = probe.counters()
    assert refused == 0
    assert [s.seq for s in samples] == list(range(1, written + 1))
    assert written == sum(1 + n % 9 for n in range(600))
    assert _wrapping(samples, probe.ring_size) > 50, "too few records ran past the end of the ring to test it"


def test_a_poll_that_times_out_returns_the_records_written_without_a_wakeup(probe: TinyProbe) -> None:
    probe.trace(os.getpid())
    writer = threading.Timer(0.05, os.getppid)
    started = time.monotonic()
    writer.start()
    batch = probe.reader.poll(400)
    waited = time.monotonic() - started
    writer.join()
    assert [_sample(raw).seq for raw in batch] == [1]
    assert waited >= 0.35, "the poll returned before its timeout although the probe never woke it"


def test_a_wakeup_ends_the_wait_with_every_record_written_before_it(probe: TinyProbe) -> None:
    probe.trace(os.getpid())
    probe.wake_every(3)
    writer = threading.Timer(0.05, lambda: [os.getppid() for _ in range(3)])
    started = time.monotonic()
    writer.start()
    batch = probe.reader.poll(10_000)
    waited = time.monotonic() - started
    writer.join()
    assert [_sample(raw).seq for raw in batch] == [1, 2, 3]
    assert waited < 5


WRITER = """
import os, sys
sys.stdin.readline()  # traced from here on, until killed
while True:
    os.getppid()
    os.getpgid(0)
"""
#: Records the reader must take while the writers write, and the time it has to: a loaded machine gives the reader
#: less of a CPU, so it reads for longer rather than fewer.
READ_BESIDE_WRITERS = 1_000
READ_BUDGET_S = 30.0


def test_records_read_while_writers_hold_one_busy_come_whole_in_their_order(probe: TinyProbe) -> None:
    """Writers on the other CPUs (one CPU is left to the reader) keep a record BUSY ~50 µs now and then while the
    reader takes what is committed: every record comes whole, each writer's in its order, once; a record either
    arrives or was counted refused or discarded."""
    writers = [subprocess.Popen([sys.executable, "-c", WRITER], stdin=subprocess.PIPE)
               for _ in range(max(1, len(os.sched_getaffinity(0)) - 1))]
    raws: list[bytes] = []
    try:
        for writer in writers:
            probe.trace(writer.pid)
        for writer in writers:
            assert writer.stdin is not None
            writer.stdin.close()
        deadline = time.monotonic() + READ_BUDGET_S
        while len(raws) < READ_BESIDE_WRITERS and time.monotonic() < deadline:
            raws.extend(probe.reader.poll(0))
    finally:
        # A program run ends before the kill is delivered: every record numbered is written, refused or discarded.
        for writer in writers:
            writer.kill()
            writer.wait()
    assert len(raws) >= READ_BESIDE_WRITERS, \
        f"the reader took {len(raws)} records beside the writers in {READ_BUDGET_S:.0f} s: too few to test it"
    samples = [_sample(raw) for raw in raws] + _drain(probe.reader)
    written, refused, discarded = probe.counters()
    assert len(samples) + refused + discarded == written and discarded > 0
    assert len({s.seq for s in samples}) == len(samples)
    for writer in writers:
        seqs = [s.seq for s in samples if s.pid == writer.pid]
        assert seqs == sorted(seqs), f"writer {writer.pid}: records out of order"


@pytest.mark.parametrize("probe", ["mapped"], indirect=True)  # the mapped reader's own mappings
def test_closing_the_reader_unmaps_the_ring(probe: TinyProbe) -> None:
    """A source restarted on each rules reload must not keep the old ring mapped (twice its size each time)."""
    ring = probe.bpf[b"ring"]
    extra = RingReader(ring.map_fd, ring.max_entries, max_batch=1)
    mapped = _ring_mappings()
    extra.close()
    assert len(_ring_mappings()) == len(mapped) - 2


def _ring_mappings() -> list[str]:
    with open("/proc/self/maps") as maps:
        return [line for line in maps if "anon_inode:bpf-map" in line]
