"""A source plugin as a LiveSource: `plugin_open`, then `plugin_next_batch` on a worker thread of its own.

The worker is the only thread that calls the capture functions, and ctypes drops the GIL during each call, so a
plugin slow or blocked in `next_batch` holds up nothing else (`busy_s()` shows it to the agent's health). Each
event is copied out of the plugin's memory before the next call (the plugin may reuse it), stamped as libscap
does (a ts of all ones becomes the time of reading; a plugin id of 0 becomes the plugin's), and becomes an Event
of the plugin's event source whose payload is the raw scap event, passed back as it is for extraction.

SS_PLUGIN_TIMEOUT means "nothing now": the worker waits `timeout_wait_s` and asks again. SS_PLUGIN_EOF ends the
source normally (`failure()` stays None). SS_PLUGIN_FAILURE ends it with the plugin's error text as `failure()`,
after the events of that last batch were handed over; the supervisor then restarts it, opening the plugin again.
"""

from __future__ import annotations

import ctypes
import time
from typing import Any

import structlog

from agent.errors import AgentError
from agent.event import Event
from agent.event_queue import QueueClosed
from agent.plugins.native import abi, events
from agent.plugins.native.library import Plugin, PluginInfo, PluginLoadError
from agent.source import EventSink
from agent.source_worker import SourceWorker, Stopped, WorkerSource

log = structlog.get_logger(__name__)

#: A put waits at most this long before re-checking the stop flag, so that stop never hangs on a full queue.
_PUT_WAIT_S = 0.1
#: get_progress is asked at most this often: it is informative, and its call is not free.
_PROGRESS_EVERY_S = 1.0
_EVENT_TYPE = "pluginevent"  # what Falco's evt.type says of a plugin event


class PluginCaptureError(AgentError):
    """A source plugin failed to open or to read; the message carries the plugin's own error text."""


def check_sourcing(info: PluginInfo) -> None:
    """Refuse a plugin this host cannot read events from: one without sourcing, or without its own event source."""
    if abi.Capability.SOURCING not in info.capabilities:
        raise PluginLoadError(f"plugin {info.name} ({info.path}) has no event sourcing capability")
    if not info.id or not info.event_source:
        raise PluginLoadError(f"plugin {info.name} ({info.path}) declares no plugin id and event source of its "
                              "own; this agent reads only plugins with an event source of their own")


class PluginSource(WorkerSource):
    """LiveSource of a source plugin's events, delivered to the sink in batches of at most `batch_events`."""

    def __init__(self, plugin: Plugin, open_params: str = "", *, hostname: str = "", batch_events: int = 512,
                 timeout_wait_s: float = 0.01) -> None:
        info = plugin.info
        check_sourcing(info)
        self.name = info.event_source
        self._plugin = plugin
        self._open_params = open_params
        self._hostname = hostname
        self._batch_events = max(1, batch_events)
        self._timeout_wait_s = timeout_wait_s
        self._next_batch = plugin.library.function("next_batch")
        self._worker = SourceWorker(f"plugin-{info.name}", join_timeout_s=5.0)
        self._stopping = self._worker.stopping
        self._sink: EventSink | None = None
        self._events = 0
        self._batches = 0
        self._timeouts = 0
        self._bytes = 0
        self._progress_pct: float | None = None
        self._is_eof = False

    # --- LiveSource -------------------------------------------------------------------------------------------

    def start(self, sink: EventSink) -> None:
        """Start the worker; the plugin is opened there, so a slow `plugin_open` delays nothing either."""
        self._worker.check_idle()
        self._sink = sink
        self._is_eof = False
        self._worker.start(self._run)

    def metrics(self) -> dict[str, Any]:
        counters: dict[str, Any] = {"events": self._events, "batches": self._batches, "timeouts": self._timeouts,
                                    "bytes_read": self._bytes, "eof": int(self._is_eof)}
        if self._progress_pct is not None:
            counters["progress_pct"] = self._progress_pct
        return counters

    # --- worker thread ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        instance = self._open()
        try:
            self._read(instance)
        except Stopped:
            pass
        finally:
            self._plugin.library.function("close")(self._plugin.state, instance)

    def _open(self) -> int | None:
        rc = ctypes.c_int32(abi.Rc.FAILURE)
        instance = self._plugin.library.function("open")(self._plugin.state, self._open_params.encode(),
                                                         ctypes.byref(rc))
        if rc.value != abi.Rc.SUCCESS:
            raise PluginCaptureError(f"plugin {self._plugin.info.name} failed to open with open_params "
                                     f"{self._open_params!r}: {self._plugin.last_error()}; check open_params")
        log.info("plugin_source_opened", plugin=self._plugin.info.name, source=self.name)
        return instance

    def _read(self, instance: int | None) -> None:
        count = ctypes.c_uint32(0)
        array = ctypes.POINTER(ctypes.c_void_p)()
        count_ref, array_ref = ctypes.byref(count), ctypes.byref(array)
        state = self._plugin.state
        pending: list[Event] = []
        next_progress = 0.0
        while not self._stopping.is_set():
            count.value = 0
            rc = self._next_batch(state, instance, count_ref, array_ref)
            if count.value:
                self._batches += 1
                pending += self._events_of(array, count.value)
            if rc == abi.Rc.SUCCESS and len(pending) < self._batch_events:
                continue
            if pending:
                self._hand_over(pending)
                pending = []
            if time.monotonic() >= next_progress:
                self._progress_pct = self._progress(instance)
                next_progress = time.monotonic() + _PROGRESS_EVERY_S
            if rc == abi.Rc.SUCCESS:
                continue
            if rc == abi.Rc.TIMEOUT:
                self._timeouts += 1
                self._stopping.wait(self._timeout_wait_s)
            elif rc == abi.Rc.EOF:
                self._is_eof = True
                log.info("plugin_source_eof", plugin=self._plugin.info.name, source=self.name, events=self._events)
                return
            else:
                raise PluginCaptureError(f"plugin {self._plugin.info.name} failed to read events (rc {rc}): "
                                         f"{self._plugin.last_error()}")

    def _events_of(self, array: Any, count: int) -> list[Event]:
        """Copy the batch out of the plugin's memory, checked and stamped as libscap does."""
        out: list[Event] = []
        plugin_id = self._plugin.info.id
        for i in range(count):
            address = array[i]
            length = ctypes.c_uint32.from_address(address + 16).value  # ppm_evt_hdr.len
            raw = ctypes.string_at(address, length)
            try:
                ts, _tid, event_plugin_id = events.check_plugin_event(raw)
            except events.MalformedEvent as exc:
                raise PluginCaptureError(f"plugin {self._plugin.info.name} produced a malformed event: {exc}") from None
            if event_plugin_id != plugin_id:
                if event_plugin_id:
                    raise PluginCaptureError(f"plugin {self._plugin.info.name} produced an event of plugin id "
                                             f"{event_plugin_id}, not its own {plugin_id}")
                raw = events.with_plugin_id(raw, plugin_id)
            if ts == events.UNSET:
                ts = time.time_ns()
                raw = events.with_ts(raw, ts)
            out.append(Event(source=self.name, ts_ns=ts, payload=raw, type=_EVENT_TYPE, hostname=self._hostname))
            self._bytes += length
        self._events += count
        return out

    def _progress(self, instance: int | None) -> float | None:
        if not self._plugin.library.has("get_progress"):
            return None
        pct = ctypes.c_uint32(0)
        self._plugin.library.function("get_progress")(self._plugin.state, instance, ctypes.byref(pct))
        return pct.value / 100  # the plugin counts in hundredths of a percent

    def _hand_over(self, batch: list[Event]) -> None:
        """Queue the batch, waiting for room (backpressure) but re-checking the stop flag while waiting."""
        assert self._sink is not None
        while True:
            if self._stopping.is_set():
                raise Stopped
            try:
                if self._sink.put(batch, timeout_s=_PUT_WAIT_S):
                    return
            except QueueClosed:
                raise Stopped from None
