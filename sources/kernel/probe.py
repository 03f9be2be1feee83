"""The loaded BPF programs: compile with BCC, attach to tracepoints, drain the ring buffer, read counters."""

from __future__ import annotations

import ctypes
import os
import platform
import threading
import time
from collections.abc import Iterable
from typing import Any

import structlog

from sources.kernel import bcc_setup
from sources.kernel.btf import BtfError, member_layout
from sources.kernel.prefilter import PATH_KEY, EncodedFilter
from sources.kernel.probe_program import (
    BTF_MEMBERS,
    COUNTER_LOST,
    COUNTER_NO_ENTER,
    COUNTER_REVEALED,
    DEFAULT_SNAPLEN,
    FILTER_FACTS_AT,
    FILTER_PER_TYPE,
    FILTER_SUFFIXES_AT,
    REGISTERS,
    generate,
)
from sources.kernel.ring_reader import open_reader
from sources.kernel.syscalls import SYSCALLS
from sources.kernel.wire import TYPE_IDS

log = structlog.get_logger(__name__)

MAX_BATCH = 2048


class KernelProbe:
    """Captures `syscalls` (Falco event names) plus process lifecycle into raw ring buffer records.

    `poll()` returns the raw records that arrived; decoding is the caller's. Syscalls the running
    kernel has no tracepoints for are left out and listed in `missing`.
    """

    def __init__(self, syscalls: Iterable[str], *, ring_buffer_pages: int, headers: str = "",
                 self_pid: int | None = None, buffers: Iterable[str] = (), snaplen: int = DEFAULT_SNAPLEN) -> None:
        bcc, self.headers, available = bcc_setup.prepare(headers)
        wanted = sorted(set(syscalls))
        self.missing = tuple(n for n in wanted if SYSCALLS[n].syscall not in available)
        self.syscalls = tuple(n for n in wanted if SYSCALLS[n].syscall in available)
        started = time.monotonic()
        self.buffers = tuple(sorted(set(buffers) & set(self.syscalls)))
        def compiled(offsets: dict[str, int] | None) -> Any:
            source = generate(self.syscalls, ring_buffer_pages=ring_buffer_pages, buffers=self.buffers,
                              snaplen=snaplen, btf_offsets=offsets)
            # Approximate headers redefine a few macros clang already knows; that is harmless.
            return bcc.BPF(text=source.encode(), cflags=["-Wno-macro-redefined", "-w"])

        # What the kernel's verifier may refuse, most first: the registers at exit (bpf_task_pt_regs, 5.15),
        # then the typed loads of the file ids (5.11); without either the probe reads no kernel struct.
        found = btf_offsets()
        tries: list[dict[str, int] | None] = [None]
        if found is not None and REGISTERS[0] in found:
            tries.insert(0, {name: offset for name, offset in found.items() if name not in REGISTERS})
        if found is not None:
            tries.insert(0, found)
        for offsets in tries:
            try:
                self._bpf = compiled(offsets)
                break
            except Exception as exc:
                if offsets is None:
                    raise bcc_setup.KernelUnavailable(
                        f"BCC could not compile or load the probe against {self.headers}: {exc}; "
                        "check that BPF is allowed (root, CAP_BPF, no lockdown) and the headers are a merged tree"
                    ) from exc
                log.warning("kernel_btf_reads_refused", reason=str(exc).splitlines()[0],
                            hint="the probe retries without them: " + (
                                "opens and closes keep their enter programs" if REGISTERS[0] in offsets else
                                "links to the files rules name are not followed on this kernel"))
        #: Whether opens report their file's device and inode (and watched files pass the prefilter).
        self.file_ids = offsets is not None
        self.compile_s = time.monotonic() - started
        _release_compiler_memory()
        self._watched: frozenset[tuple[int, int]] = frozenset()
        me = ctypes.c_uint32(os.getpid() if self_pid is None else self_pid)
        self._bpf[b"self_tgid"][ctypes.c_int(0)] = me
        self._ring = open_reader(self._bpf, self._bpf[b"events"], max_batch=MAX_BATCH)
        log.info("kernel_probe_loaded", syscalls=len(self.syscalls), missing=list(self.missing),
                 buffers=list(self.buffers),
                 compile_s=round(self.compile_s, 2), headers=str(self.headers))

    def poll(self, timeout_ms: int) -> list[bytes]:
        """Wait up to `timeout_ms` for records and return those ready, at most MAX_BATCH (the rest wait for the
        next poll, so that under a flood a poll still returns and holds a bounded batch)."""
        return self._ring.poll(timeout_ms)

    def counters(self) -> dict[str, int]:
        """Totals since load: records lost because the ring buffer was full, exits seen without their enter, kept
        opens sent when their descriptor was used as a directory."""
        table = self._bpf[b"counters"]
        return {
            "lost": sum(table[ctypes.c_int(COUNTER_LOST)]),
            "no_enter": sum(table[ctypes.c_int(COUNTER_NO_ENTER)]),
            "revealed": sum(table[ctypes.c_int(COUNTER_REVEALED)]),
        }

    def set_prefilter(self, encoded: EncodedFilter) -> None:
        """Load the prefilter's maps. Every open passes while they change (filtering is off first and on last),
        so a reload never keeps in the kernel an open the new rules might match."""
        settings = self._bpf[b"filter_settings"]
        for name in TYPE_IDS:
            settings[ctypes.c_int(TYPE_IDS[name] * FILTER_PER_TYPE)] = ctypes.c_uint64(0)
        _load_trie(self._bpf[b"filter_paths"], encoded.paths)
        _load_trie(self._bpf[b"filter_suffixes"], encoded.suffixes)
        settings[ctypes.c_int(FILTER_SUFFIXES_AT)] = ctypes.c_uint64(1 if encoded.suffixes else 0)
        for combination, bits in enumerate(encoded.fact_bits):
            settings[ctypes.c_int(FILTER_FACTS_AT + combination)] = ctypes.c_uint64(bits)
        for name, (_enabled, any_path, own) in encoded.per_syscall.items():
            base = TYPE_IDS[name] * FILTER_PER_TYPE
            settings[ctypes.c_int(base + 1)] = ctypes.c_uint64(any_path)
            settings[ctypes.c_int(base + 2)] = ctypes.c_uint64(own)
        for name, (enabled, _any, _own) in encoded.per_syscall.items():
            if enabled:
                settings[ctypes.c_int(TYPE_IDS[name] * FILTER_PER_TYPE)] = ctypes.c_uint64(1)

    def set_watched(self, ids: frozenset[tuple[int, int]]) -> None:
        """Make the watched-files map hold exactly `ids` (device, inode): opens of them leave the kernel whatever
        their path. New ones are added before old ones go, so a file both scans name is never unwatched."""
        if not self.file_ids:
            return
        table = self._bpf[b"watched_files"]
        for dev, ino in ids - self._watched:
            table[_file_id(table, dev, ino)] = ctypes.c_uint8(1)
        for dev, ino in self._watched - ids:
            del table[_file_id(table, dev, ino)]
        self._watched = ids

    def filtered(self, names: Iterable[str]) -> dict[str, int]:
        """Per event type of `names`, the records the prefilter kept in the kernel since load."""
        table = self._bpf[b"filtered"]
        return {name: sum(table[ctypes.c_int(TYPE_IDS[name])]) for name in names}

    def close(self) -> None:
        self._ring.close()
        # Each detach waits for an RCU grace period; detached together they share them. Plain threads,
        # since this may run while the interpreter shuts down (executors refuse work then).
        detaching = [threading.Thread(target=self._bpf.detach_tracepoint, args=(name,))
                     for name in list(self._bpf.tracepoint_fds)]
        for thread in detaching:
            thread.start()
        for thread in detaching:
            thread.join()
        self._bpf.cleanup()


def _file_id(table: Any, dev: int, ino: int) -> Any:
    key = table.Key()
    key.dev, key.ino = dev, ino
    return key


def btf_offsets() -> dict[str, int] | None:
    """The offsets of BTF_MEMBERS in the running kernel, from its BTF; None (said once in the log) when it
    has none or they are not what the probe reads: opens then report no device and inode."""
    wanted = {name: member for name, member in BTF_MEMBERS.items()
              if platform.machine() == "x86_64" or name not in REGISTERS}
    try:
        layout = member_layout((struct, member) for struct, member, _size in wanted.values())
    except BtfError as exc:
        log.warning("kernel_file_ids_unavailable", reason=str(exc),
                    hint="links to the files rules name are not followed; a kernel with BTF "
                         "(CONFIG_DEBUG_INFO_BTF=y) lets the probe read them")
        return None
    offsets = {}
    for name, (struct, member, size) in wanted.items():
        found = layout[(struct, member)]
        if found.size != size:
            log.warning("kernel_file_ids_unavailable", reason=f"{struct}.{member} is {found.size} bytes, not {size}",
                        hint="links to the files rules name are not followed on this kernel")
            return None
        offsets[name] = found.offset
    return offsets


def _load_trie(trie: Any, entries: tuple[tuple[bytes, int], ...]) -> None:
    """Make a BCC LPM trie hold exactly `entries` (key bytes as prefixes, value bits)."""
    wanted = dict(entries)
    for key in list(trie.keys()):
        if bytes(key.path)[: key.prefixlen // 8] not in wanted:
            del trie[key]
    for raw, bits in wanted.items():
        key = trie.Key()
        key.prefixlen = len(raw) * 8
        ctypes.memmove(ctypes.addressof(key) + type(key).path.offset, raw, min(len(raw), PATH_KEY))
        trie[key] = ctypes.c_uint64(bits)


_MADV_PAGEOUT = 21
_COMPILER_LIBRARIES = ("libLLVM", "libclang")


def _release_compiler_memory() -> None:
    """Give back what compiling cost: ~80 MB of LLVM and clang code pages and freed heap stay resident
    after BCC compiled the program, and are not needed again until the next compile (a restart)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.malloc_trim(0)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        with open("/proc/self/maps") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return
    for line in lines:
        fields = line.split()
        if len(fields) > 5 and any(name in fields[5] for name in _COMPILER_LIBRARIES):
            start, end = (int(bound, 16) for bound in fields[0].split("-"))
            libc.madvise(start, end - start, _MADV_PAGEOUT)  # advisory: a refusal changes nothing


def probe_available(headers: str = "") -> str | None:
    """None when a probe can load here, else the reason (for tests and `make run` messages)."""
    try:
        bcc_setup.prepare(headers)
    except bcc_setup.KernelUnavailable as exc:
        return str(exc)
    return None

