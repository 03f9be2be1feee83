"""The `evt.*` fields every source has: number, times, source, hostname, plugin name and info."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache

from agent.event import Event
from agent.fields import Extractor, FieldFlag, FieldSpec, FieldType, Value

#: Relative times (`evt.reltime*`) count from the moment the agent process started.
PROCESS_START_NS = time.time_ns()
#: Falco keeps an event's time as uint64 nanoseconds since the epoch; a decoder refuses any time outside.
EVENT_TIME_MAX_NS = (1 << 64) - 1
EVENT_TIME_RANGE = "1970-01-01T00:00:00Z to 2554-07-21T23:34:33.709551615Z"
_NS_PER_S = 1_000_000_000
# What datetime raises for a time before year 1 or after 9999, or one the C library cannot convert.
_OFF_THE_CALENDAR = (ValueError, OverflowError, OSError)


class TimeOutOfRange(ValueError):
    """A well-formed time that Falco's event clock cannot hold; `reason` is its metrics code."""

    reason = "time_out_of_range"


def checked_event_time(ts_ns: int) -> int:
    """`ts_ns` when it is a time an event may have; TimeOutOfRange says the range otherwise."""
    if 0 <= ts_ns <= EVENT_TIME_MAX_NS:
        return ts_ns
    raise TimeOutOfRange(f"is outside the event times Falco can hold ({EVENT_TIME_RANGE})")


def _simple(fn: Extractor) -> Callable[[str | None], Extractor]:
    return lambda _arg: fn


@lru_cache(maxsize=4096)
def _local_seconds(seconds: int, fmt: str) -> str:
    return datetime.fromtimestamp(seconds).astimezone().strftime(fmt)


@lru_cache(maxsize=4096)
def _utc_seconds(seconds: int) -> str:
    # isoformat, not strftime: the C library's %Y writes year 1 as "1", not "0001".
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat()[:19]


def _stamp(ts_ns: int, seconds_text: Callable[[int], str], suffix: str = "") -> str:
    """The seconds as `seconds_text` writes them, then nine digits of nanoseconds and `suffix`.

    Alerts of one burst share their second, so `seconds_text` is cached. A time the calendar cannot
    show (before year 1 or after 9999, as a subscriber may receive) is written as its nanoseconds
    since the epoch, what `evt.rawtime` prints: exact, where raising would lose the alert.
    """
    seconds, nanos = divmod(ts_ns, _NS_PER_S)
    try:
        return f"{seconds_text(seconds)}.{nanos:09d}{suffix}"
    except _OFF_THE_CALENDAR:
        return str(ts_ns)


def format_time(ts_ns: int) -> str:
    """Local wall-clock time with nanoseconds, as `%evt.time` prints it."""
    return _stamp(ts_ns, _local_clock)


def format_iso8601(ts_ns: int) -> str:
    """UTC time with nanoseconds and a numeric offset, as `%evt.time.iso8601` prints it."""
    return _stamp(ts_ns, _utc_seconds, "+0000")


def format_json_time(ts_ns: int) -> str:
    """UTC time with exactly nine fractional digits and `Z`, as the JSON alert's `time` key."""
    return _stamp(ts_ns, _utc_seconds, "Z")


def _local_clock(seconds: int) -> str:
    return _local_seconds(seconds, "%H:%M:%S")


def _local_date_clock(seconds: int) -> str:
    return _local_seconds(seconds, "%Y-%m-%d %H:%M:%S")


def _local_text(ts_ns: int, fmt: str) -> str:
    """Local time to the second in `fmt`; off the calendar, the nanoseconds, as `_stamp` writes them."""
    try:
        return _local_seconds(ts_ns // _NS_PER_S, fmt)
    except _OFF_THE_CALENDAR:
        return str(ts_ns)


def _datetime(ts_ns: int) -> str:
    return _stamp(ts_ns, _local_date_clock)


#: The generic fields every event has a value for.
_ON_EVERY_EVENT = frozenset({"evt.rawtime", "evt.rawtime.s", "evt.rawtime.ns", "evt.source"})


def generic_fields(
    *, plugin_name: str | None = None, plugin_info: Extractor | None = None
) -> list[FieldSpec]:
    """The generic field specs; a plugin-style source names itself and may describe its events."""

    def reltime(ev: Event) -> Value:
        return max(ev.ts_ns - PROCESS_START_NS, 0)

    specs = [
        ("evt.num", FieldType.UINT64, "sequence number the source gave the event", lambda ev: ev.num),
        ("evt.time", FieldType.CHARBUF, "event time as local HH:MM:SS with nanoseconds",
         lambda ev: format_time(ev.ts_ns)),
        ("evt.time.s", FieldType.CHARBUF, "event time as local HH:MM:SS",
         lambda ev: _local_text(ev.ts_ns, "%H:%M:%S")),
        ("evt.time.iso8601", FieldType.CHARBUF, "event time in ISO 8601, UTC, with nanoseconds",
         lambda ev: format_iso8601(ev.ts_ns)),
        ("evt.datetime", FieldType.CHARBUF, "local date and time with nanoseconds",
         lambda ev: _datetime(ev.ts_ns)),
        ("evt.datetime.s", FieldType.CHARBUF, "local date and time to the second",
         lambda ev: _local_text(ev.ts_ns, "%Y-%m-%d %H:%M:%S")),
        ("evt.rawtime", FieldType.ABSTIME, "event time in nanoseconds since the epoch", lambda ev: ev.ts_ns),
        ("evt.rawtime.s", FieldType.ABSTIME, "whole seconds of the event time",
         lambda ev: ev.ts_ns // 1_000_000_000),
        ("evt.rawtime.ns", FieldType.ABSTIME, "nanosecond part of the event time",
         lambda ev: ev.ts_ns % 1_000_000_000),
        ("evt.reltime", FieldType.RELTIME, "nanoseconds from agent start to the event", reltime),
        ("evt.reltime.s", FieldType.RELTIME, "whole seconds from agent start to the event",
         lambda ev: reltime(ev) // 1_000_000_000),
        ("evt.reltime.ns", FieldType.RELTIME, "nanosecond part of the time since agent start",
         lambda ev: reltime(ev) % 1_000_000_000),
        ("evt.pluginname", FieldType.CHARBUF, "name of the plugin this source stands in for",
         lambda _ev: plugin_name),
        ("evt.plugininfo", FieldType.CHARBUF, "one-line summary of the event given by its source",
         plugin_info or (lambda _ev: None)),
        ("evt.source", FieldType.CHARBUF, "name of the event's source", lambda ev: ev.source),
        ("evt.is_async", FieldType.BOOL, "whether the event was injected asynchronously",
         lambda _ev: False),
        ("evt.asynctype", FieldType.CHARBUF, "type of an asynchronous event", lambda _ev: None),
        ("evt.hostname", FieldType.CHARBUF, "host the agent runs on", lambda ev: ev.hostname or None),
    ]
    return [
        FieldSpec(name, ftype, desc, _simple(fn), flags=FieldFlag.ALWAYS if name in _ON_EVERY_EVENT else FieldFlag.NONE)
        for name, ftype, desc, fn in specs
    ]
