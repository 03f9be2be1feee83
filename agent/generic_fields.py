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


def _simple(fn: Extractor) -> Callable[[str | None], Extractor]:
    return lambda _arg: fn


@lru_cache(maxsize=4096)
def _local_seconds(seconds: int, fmt: str) -> str:
    return datetime.fromtimestamp(seconds).astimezone().strftime(fmt)


@lru_cache(maxsize=4096)
def _utc_seconds(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


# Alerts of one burst share their second: the per-second text is cached, nanoseconds appended.
def format_time(ts_ns: int) -> str:
    """Local wall-clock time with nanoseconds, as `%evt.time` prints it."""
    return f"{_local_seconds(ts_ns // 1_000_000_000, '%H:%M:%S')}.{ts_ns % 1_000_000_000:09d}"


def format_iso8601(ts_ns: int) -> str:
    """UTC time with nanoseconds and a numeric offset, as `%evt.time.iso8601` prints it."""
    return f"{_utc_seconds(ts_ns // 1_000_000_000)}.{ts_ns % 1_000_000_000:09d}+0000"


def format_json_time(ts_ns: int) -> str:
    """UTC time with exactly nine fractional digits and `Z`, as the JSON alert's `time` key."""
    return f"{_utc_seconds(ts_ns // 1_000_000_000)}.{ts_ns % 1_000_000_000:09d}Z"


def _local_text(ts_ns: int, fmt: str) -> str:
    return _local_seconds(ts_ns // 1_000_000_000, fmt)


def _datetime(ts_ns: int) -> str:
    return f"{_local_text(ts_ns, '%Y-%m-%d %H:%M:%S')}.{ts_ns % 1_000_000_000:09d}"


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
        FieldSpec(name, ftype, desc, _simple(fn), flags=FieldFlag.NONE)
        for name, ftype, desc, fn in specs
    ]
