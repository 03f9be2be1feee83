"""The live kernel source: the BPF probe, decoding, the user-space state, and events to the engine.

One thread drains the ring buffer, applies each record to the process/fd state (every record, so
the state stays right) and hands the engine only the events whose type some rule can use. When
the engine falls behind, `put` waits and the ring buffer fills: the kernel then counts what it
could not write, and the drop meter turns that into notices for the "syscall event drop" alert.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from agent.event import Event
from agent.source import DropNotice, EventSink
from agent.source_worker import SourceWorker, WorkerSource
from sources.kernel.dns_names import DOMAIN_NAMES
from sources.kernel.drops import DropMeter
from sources.kernel.prefilter import PrefilterPlan, encode, filtered_syscalls
from sources.kernel.probe import KernelProbe
from sources.kernel.probe_program import DEFAULT_SNAPLEN, WATCHED_FILES_MAX
from sources.kernel.record import SyscallRecord
from sources.kernel.state.fd_events import OPEN_TYPES
from sources.kernel.syscalls import BUFFER_SYSCALLS, STATE_SYSCALLS, SYSCALLS
from sources.kernel.watched_files import WatchedFiles, WatchedScanner
from sources.kernel.wire import RecordDecoder, close_fields

log = structlog.get_logger(__name__)

#: How long a poll waits: the probe wakes the reader only every WAKEUP_EVERY records of a CPU, so this bounds how
#: late a lone record is read.
_POLL_MS = 20
_FORWARD_REFRESH_S = 2.0
#: The fields that read an I/O buffer: the probe copies buffers only for the event types of rules naming one.
BUFFER_FIELDS = frozenset({"evt.buffer", "evt.rawarg.data", "evt.arg.data"})


class SyscallState(Protocol):
    """The user-space state: every record updates it; it returns the event rules see, if any."""

    #: The event types `apply` returns events of (None: all); the source sets what the rules can use.
    forwarded: frozenset[str] | None
    #: The files the rules name: an open of one is named so whatever link reached it.
    watched_files: WatchedFiles

    @property
    def opens_named_by_inode(self) -> int: ...

    def apply(self, record: SyscallRecord) -> Event | None: ...

    def apply_close(self, tid: int, pid: int, res: int, fd: int) -> bool: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class KernelSettings:
    ring_buffer_pages: int = 4096
    extra_syscalls: tuple[str, ...] = ()
    kernel_headers: str = ""
    drop_threshold: float = 0.0
    drop_alert_interval_s: float = 30.0
    snaplen: int = DEFAULT_SNAPLEN


def buffers_to_copy(buffer_types: frozenset[str] | None, capturing: Iterable[str]) -> frozenset[str]:
    """The syscalls whose I/O buffer the probe copies: those of `buffer_types` (None: any) it captures."""
    wanted = BUFFER_SYSCALLS if buffer_types is None else buffer_types & BUFFER_SYSCALLS
    return frozenset(wanted & set(capturing))


def syscalls_to_capture(rule_types: frozenset[str] | None, extra: Iterable[str] = ()) -> frozenset[str]:
    """What the probe must attach: the event types rules can use (None: all), the state's, and extras."""
    wanted = set(SYSCALLS) if rule_types is None else (rule_types & set(SYSCALLS))
    return frozenset(wanted | STATE_SYSCALLS | set(extra))


#: The event types the prefilter can keep in the kernel: opens, and the closes of what it kept.
FILTERABLE = frozenset(OPEN_TYPES | {"close"})


def take_records(raws: list[bytes], decode: Callable[[bytes], SyscallRecord], state: SyscallState,
                 counts: dict[str, int]) -> list[Event]:
    """Apply every record to `state`: the events some rule can use (the state makes no others). A record that
    cannot be decoded or applied is counted in `counts` (decode_errors, state_errors) and skipped."""
    batch: list[Event] = []
    apply_close = state.apply_close
    for raw in raws:
        # Most closes only free a descriptor: they need no record decoded.
        closed = close_fields(raw)
        if closed is not None and apply_close(*closed):
            continue
        try:
            record = decode(raw)
        except ValueError as exc:
            counts["decode_errors"] += 1
            log.warning("kernel_record_undecodable", error=str(exc))
            continue
        try:
            event = state.apply(record)
        except Exception:
            # A state bug on one record must not stop syscall capture.
            counts["state_errors"] += 1
            log.exception("kernel_state_failed", type=record.type, tid=record.tid)
            continue
        if event is not None:
            batch.append(event)
    return batch


class KernelSource(WorkerSource):
    """LiveSource for syscalls. `rule_types` gives the `evt.type` values the loaded rules can match
    (None: any) and `buffer_types` those of the rules that read I/O buffers (BUFFER_FIELDS), both read at
    each start; `new_state` builds a seeded state each start. `prefilter` gives what the loaded rules need of
    opens (None: keep none in the kernel), followed on reload by map updates."""

    name = "kernel"

    def __init__(self, settings: KernelSettings, *, rule_types: Callable[[], frozenset[str] | None],
                 new_state: Callable[[], SyscallState],
                 buffer_types: Callable[[], frozenset[str] | None] = frozenset,
                 prefilter: Callable[[], PrefilterPlan | None] = lambda: None) -> None:
        self.settings = settings
        self._prefilter = prefilter
        self._plan: PrefilterPlan | None = None
        #: The open syscalls the prefilter now keeps some of in the kernel.
        self.filtering: frozenset[str] = frozenset()
        self._filtered: dict[str, int] = {}
        self._rule_types = rule_types
        self._buffer_types = buffer_types
        self._new_state = new_state
        self._state: SyscallState | None = None
        self._worker = SourceWorker("kernel-source")
        self._probe: KernelProbe | None = None
        self._decoder = RecordDecoder()
        self._meter = DropMeter(threshold=settings.drop_threshold,
                                alert_interval_s=settings.drop_alert_interval_s)
        self._notices: deque[DropNotice] = deque(maxlen=64)
        self._lock = threading.Lock()
        self._counts = {"records": 0, "events": 0, "decode_errors": 0, "state_errors": 0}
        self._kernel_counters = {"lost": 0, "no_enter": 0, "revealed": 0}
        self.capturing: frozenset[str] = frozenset()
        #: The syscalls whose I/O buffers the loaded probe copies.
        self.buffers: frozenset[str] = frozenset()
        self._buffers_wanted: frozenset[str] = frozenset()
        self._forward: frozenset[str] | None = frozenset()
        self._forward_checked = 0.0
        self._scanner: WatchedScanner | None = None
        self._watched = WatchedFiles({})

    def start(self, sink: EventSink) -> None:
        self._worker.check_idle()
        types = self._rule_types()
        self.capturing = syscalls_to_capture(types, self.settings.extra_syscalls)
        self.buffers = self._buffers_wanted = buffers_to_copy(self._buffer_types(), self.capturing)
        self._forward = types
        self._forward_checked = time.monotonic()
        # A new probe counts its losses from zero.
        self._meter = DropMeter(threshold=self.settings.drop_threshold,
                                alert_interval_s=self.settings.drop_alert_interval_s)
        # The probe first: records of processes started while /proc is read are then not missed.
        probe = KernelProbe(self.capturing, ring_buffer_pages=self.settings.ring_buffer_pages,
                            headers=self.settings.kernel_headers, buffers=self.buffers, snaplen=self.settings.snaplen)
        self._probe = probe
        self._plan = None
        self._filtered = dict.fromkeys(sorted(FILTERABLE & set(probe.syscalls)), 0)
        self._scanner = WatchedScanner(limit=WATCHED_FILES_MAX)
        self._watched = WatchedFiles({})
        try:
            self._apply_prefilter(probe)
            state = self._state = self._new_state()
        except Exception:
            probe.close()
            self._probe = None
            raise
        state.forwarded = types
        state.watched_files = self._watched
        # The names `fd.*ip.name` checks compare with resolve in the background while the source runs.
        DOMAIN_NAMES.start()
        self._worker.start(lambda: self._run(probe, state, sink), cleanup=self._cleanup)

    def _run(self, probe: KernelProbe, state: SyscallState, sink: EventSink) -> None:
        stopping = self._worker.stopping
        while not stopping.is_set():
            batch = self._take(probe.poll(_POLL_MS), state)
            while batch and not stopping.is_set():
                if sink.put(batch, timeout_s=0.5):
                    self._counts["events"] += len(batch)
                    break
                # The engine is behind and the ring buffer fills: keep counting what the kernel loses.
                self._check_drops(probe)
            self._check_drops(probe)
            self._refresh_forward(probe)
        # What the kernel wrote before the stop still reaches the engine (its queue outlives the sources).
        batch = self._take(probe.poll(0), state)
        if batch and sink.put(batch, timeout_s=2.0):
            self._counts["events"] += len(batch)

    def _apply_prefilter(self, probe: KernelProbe) -> None:
        """Load the prefilter of the rules now loaded into the probe's maps, when it changed."""
        plan = self._prefilter()
        if plan is self._plan:
            return
        self._plan = plan
        encoded = encode(plan if plan is not None else PrefilterPlan.passing_all("no prefilter"))
        probe.set_prefilter(encoded)
        self.filtering = filtered_syscalls(encoded) & set(probe.syscalls)
        log.info("kernel_prefilter_loaded", filtering=sorted(self.filtering), paths=len(encoded.paths),
                 passing_all={name: reason for name, reason in (plan.reasons if plan else {}).items()
                              if name in probe.syscalls})
        if probe.file_ids and self._scanner is not None:
            named = (plan.named, plan.named_prefixes) if plan is not None else (frozenset(), frozenset())
            self._watch(probe, self._scanner.scan_now(*named))

    def _watch(self, probe: KernelProbe, found: WatchedFiles) -> None:
        """Watch the files a scan found: the probe lets their opens out, the state names them."""
        probe.set_watched(found.ids())
        if found.incomplete and found.incomplete != self._watched.incomplete:
            log.warning("watched_files_incomplete", prefixes=list(found.incomplete), limit=WATCHED_FILES_MAX,
                        hint="files under these prefixes past the limit are known by path only: a link to one "
                             "is not followed; narrow the rules' path prefixes")
        self._watched = found
        if self._state is not None:
            self._state.watched_files = found

    def _refresh_forward(self, probe: KernelProbe) -> None:
        """Follow rule reloads: forward what the rules now use and reload the prefilter (what they need beyond
        the attached syscalls takes a restart of the source, which is said once)."""
        now = time.monotonic()
        if now - self._forward_checked < _FORWARD_REFRESH_S:
            return
        self._forward_checked = now
        self._apply_prefilter(probe)
        rescanned = self._scanner.poll() if self._scanner is not None and probe.file_ids else None
        if rescanned is not None:
            self._watch(probe, rescanned)
        buffers = buffers_to_copy(self._buffer_types(), self.capturing)
        if buffers != self._buffers_wanted:
            self._buffers_wanted = buffers
            if buffers - self.buffers:
                log.warning("kernel_buffers_need_restart", syscalls=sorted(buffers - self.buffers),
                            hint="the reloaded rules read I/O buffers the probe does not copy; restart the agent "
                                 "to capture them")
        types = self._rule_types()
        if types == self._forward:
            return
        self._forward = types
        if self._state is not None:
            self._state.forwarded = types
        missing = sorted((set(SYSCALLS) if types is None else types & set(SYSCALLS)) - self.capturing)
        if missing:
            log.warning("kernel_syscalls_need_restart", syscalls=missing,
                        hint="the reloaded rules use syscalls not attached; restart the agent to capture them")

    def _take(self, raws: list[bytes], state: SyscallState) -> list[Event]:
        """Decode and apply every record; the events some rule can use (the state makes no others)."""
        batch = take_records(raws, self._decoder.decode, state, self._counts)
        self._counts["records"] += len(raws)
        self._meter.delivered(len(raws))
        return batch

    def _check_drops(self, probe: KernelProbe) -> None:
        if not self._meter.due():
            return  # reading the per-CPU counters costs a map walk per CPU: once a second is enough
        self._kernel_counters = probe.counters()
        self._filtered = probe.filtered(self._filtered)
        notice = self._meter.tick(self._kernel_counters["lost"])
        if notice is not None:
            log.warning("syscall_event_drop", lost=notice.lost, delivered=notice.delivered,
                        worst_ratio=round(notice.worst_ratio, 4), lost_total=notice.lost_total)
            with self._lock:
                self._notices.append(notice)

    def drop_notices(self) -> list[DropNotice]:
        """Drop notices not yet turned into alerts (the runtime raises "syscall event drop" for each)."""
        with self._lock:
            notices = list(self._notices)
            self._notices.clear()
        return notices

    def _cleanup(self) -> None:
        if self._probe is not None:
            # Detaching ~100 tracepoints takes seconds of RCU waits: the agent's drain and flush need not
            # wait for it. Not a daemon (the default when started from the daemon worker), so the process
            # ends only once the programs are detached, before BCC's own exit-time cleanup runs.
            threading.Thread(target=self._probe.close, name="kernel-probe-close", daemon=False).start()
            self._probe = None
        if self._state is not None:
            self._state.close()
            self._state = None
        if self._scanner is not None:
            self._scanner.close()
            self._scanner = None
        DOMAIN_NAMES.stop()

    def metrics(self) -> dict[str, Any]:
        return {
            **self._counts,
            "kernel_lost": self._kernel_counters["lost"],
            "kernel_exit_without_enter": self._kernel_counters["no_enter"],
            # Kept opens sent late because their descriptor was then used as a directory.
            "kernel_prefilter_revealed": self._kernel_counters["revealed"],
            "lost_last_second": self._meter.lost_last_second,
            "records_last_second": self._meter.delivered_last_second,
            "syscalls_captured": len(self.capturing),
            "buffers_copied": len(self.buffers),
            "kernel_prefilter_syscalls": len(self.filtering),
            "watched_files": len(self._watched.names),
            "opens_named_by_inode": self._state.opens_named_by_inode if self._state is not None else 0,
            **{f"kernel_filtered_{name}": count for name, count in self._filtered.items()},
        }
