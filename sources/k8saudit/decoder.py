"""Turn parsed Kubernetes audit JSON (one Event, an EventList, an array, an AKS export) into `k8s_audit` events."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from agent.errors import DecodeError
from agent.event import Event
from agent.generic_fields import EVENT_TIME_MAX_NS, TimeOutOfRange, checked_event_time
from agent.json_fields import json_type_name
from agent.location import Location
from sources.k8saudit.envelope import audit_event_of, envelope_records, is_envelope, is_record

SOURCE_NAME = "k8s_audit"

# Fallback for every RFC 3339 form the fast path does not take: 1-9 fractional digits or none,
# `Z` or a numeric offset, lowercase separators.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_SHOWN_MAX = 60
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def _epoch_ns(
    year: int, month: int, day: int, hour: int, minute: int, second: int, nanos: int, offset_s: int
) -> int:
    """Nanoseconds since the epoch; ValueError names the out-of-range part."""
    if not 1 <= month <= 12:
        raise ValueError(f"month {month} out of range")
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= day <= (_DAYS_IN_MONTH[month] if month != 2 or leap else 28):
        raise ValueError(f"day {day} out of range")
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError("time of day out of range")
    seconds = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset_s
    return seconds * 1_000_000_000 + nanos


#: The time of each second (its `YYYY-MM-DDTHH:MM:SS.` text) parsed lately: an API server writes many events a
#: second, and an event of a second already seen needs only its microseconds read.
_SECONDS: dict[str, int] = {}
_SECONDS_KEPT = 64
_LAST_MICROSECOND_NS = 999_999_000


def parse_timestamp_ns(stamp: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time an event may have; ValueError says what is wrong.

    A well-formed time outside Falco's event clock raises TimeOutOfRange. The apiserver writes
    `YYYY-MM-DDTHH:MM:SS.ffffffZ`; for exactly that shape the C-coded `datetime.fromisoformat`
    checks and converts it (microseconds are all it holds, exactly), once per second seen lately.
    """
    if len(stamp) == 27 and stamp[26] == "Z":
        second_ns = _SECONDS.get(stamp[:20])
        micros = stamp[20:26]
        if second_ns is not None and micros.isdigit() and micros.isascii():
            return second_ns + int(micros) * 1000
        # One slice checks the separators at 4, 7, 10, 13, 16 and 19.
        if stamp[4:20:3] == "--T::.":
            try:
                parsed = datetime.fromisoformat(stamp)
            except ValueError:
                pass  # the general parser below explains what is wrong
            else:
                # The offset's parts in integer arithmetic: exact, and cheaper than dividing by a microsecond.
                since = parsed - _EPOCH
                second_ns = (since.days * 86400 + since.seconds) * 1_000_000_000
                if 0 <= second_ns <= EVENT_TIME_MAX_NS - _LAST_MICROSECOND_NS:
                    if len(_SECONDS) >= _SECONDS_KEPT:
                        _SECONDS.clear()
                    _SECONDS[stamp[:20]] = second_ns
                    return second_ns + since.microseconds * 1000
                return checked_event_time(second_ns + since.microseconds * 1000)  # may raise TimeOutOfRange
    match = _RFC3339.fullmatch(stamp)
    if match is None:
        raise ValueError("expected an RFC 3339 time such as 2024-01-31T12:00:00.000000Z")
    year, month, day, hour, minute, second, fraction, _zulu, sign, off_h, off_m = match.groups()
    nanos = int(fraction.ljust(9, "0")) if fraction else 0
    offset_s = 0
    if sign is not None:
        offset_s = (int(off_h) * 3600 + int(off_m) * 60) * (-1 if sign == "-" else 1)
    return checked_event_time(
        _epoch_ns(int(year), int(month), int(day), int(hour), int(minute), int(second), nanos, offset_s))


def _shown(value: Any) -> str:
    """A JSON value for an error message: strings quoted, the rest as compact JSON, cut short."""
    if isinstance(value, str):
        shown = repr(value)
    else:
        try:
            shown = orjson.dumps(value).decode()
        except TypeError:
            shown = repr(value)
    return shown if len(shown) <= _SHOWN_MAX else shown[: _SHOWN_MAX - 3] + "..."


def _is_cloudtrail_record(item: Any) -> bool:
    return isinstance(item, dict) and ("eventVersion" in item or "eventSource" in item)


def _looks_like_audit_event(item: Any) -> bool:
    return isinstance(item, dict) and ("kind" in item or "auditID" in item or "stageTimestamp" in item)


class K8sAuditDecoder:
    """Decoder of recorded audit logs: one event per audit `Event`, a DecodeError per bad item."""

    source = SOURCE_NAME

    def __init__(self, *, hostname: str = "") -> None:
        self.hostname = hostname

    def matches(self, document: Any) -> bool:
        """Whether the document is an audit Event, an EventList, an array of events or an AKS export.

        Any object with a `kind` matches, so that a malformed one is rejected with a reason
        rather than reported as unrecognised; CloudTrail logs (`{"Records": [...]}`) never match.
        """
        if isinstance(document, dict):
            if "Records" in document:
                return False
            return (
                "kind" in document
                or ("auditID" in document and "stageTimestamp" in document)
                or is_envelope(document)
            )
        if isinstance(document, list):
            if any(_is_cloudtrail_record(item) for item in document):
                return False
            return any(_looks_like_audit_event(item) for item in document) or is_envelope(document)
        return False

    def events(self, document: Any, *, origin: str) -> Iterable[Event | DecodeError]:
        """An event per audit event of the document, or a DecodeError naming its index.

        AKS diagnostic records (alone, in a `records` batch or in an array) are unwrapped first;
        records of other diagnostic categories give nothing.
        """
        if document.__class__ is dict and document.get("kind") == "Event":
            # What an API server sends, one event per document: neither an envelope nor an EventList, and no
            # generator to make for it. Only its time is checked on the way; `_event` says what is wrong with it.
            stamp = document.get("stageTimestamp")
            if stamp.__class__ is str:
                try:
                    ts_ns = parse_timestamp_ns(stamp)
                except ValueError:
                    pass
                else:
                    verb = document.get("verb")
                    # `_made`, written out: the one event of most documents, made without a call.
                    return (Event(SOURCE_NAME, ts_ns, document, verb if verb.__class__ is str else "", self.hostname,
                                  0, {}),)
            return (self._event(document, origin, 0),)
        return self._listed_events(document, origin)

    def _listed_events(self, document: Any, origin: str) -> Iterator[Event | DecodeError]:
        records = envelope_records(document)
        if isinstance(records, DecodeError):
            yield DecodeError(records.message, Location(file=origin, item_kind="document"), reason=records.reason)
            return
        if records is not None:
            items = records
            is_batch = True
        elif isinstance(document, dict) and document.get("kind") == "EventList":
            listed = document.get("items")
            if not isinstance(listed, list):
                yield DecodeError(
                    f"not a Kubernetes audit EventList: 'items' is {_shown(listed)}, expected an array",
                    Location(file=origin, item_kind="document"), reason="not_audit_event",
                )
                return
            items = listed
            is_batch = False
        elif isinstance(document, list):
            items = document
            is_batch = False
        else:
            items = [document]
            is_batch = False
        for index, item in enumerate(items):
            if is_batch or is_record(item):
                unwrapped = audit_event_of(item, origin=origin, index=index)
                if unwrapped is None:
                    continue
                if isinstance(unwrapped, DecodeError):
                    yield unwrapped
                    continue
                item = unwrapped
            yield self._event(item, origin, index)

    def _made(self, item: dict[str, Any], ts_ns: int) -> Event:
        verb = item.get("verb")
        # Its cache given, not made by the field's factory: a call less per event.
        return Event(SOURCE_NAME, ts_ns, item, verb if verb.__class__ is str else "", self.hostname, 0, {})

    def _event(self, item: Any, origin: str, index: int) -> Event | DecodeError:
        problem = _problem(item)
        if problem is None:
            try:
                ts_ns = parse_timestamp_ns(item["stageTimestamp"])
            except TimeOutOfRange as err:
                problem = err.reason, f"stageTimestamp {_shown(item['stageTimestamp'])} {err}"
            except ValueError as err:
                shown = _shown(item["stageTimestamp"])
                problem = "malformed_stage_timestamp", f"malformed stageTimestamp {shown}: {err}"
            else:
                return self._made(item, ts_ns)
        reason, message = problem
        return DecodeError(message, Location(file=origin, item_kind="record", item_name=str(index)), reason=reason)


def _problem(item: Any) -> tuple[str, str] | None:
    """(reason, message) saying why an item cannot be an audit event, or None when its shape is right."""
    if not isinstance(item, dict):
        return "not_audit_event", f"not a Kubernetes audit event: expected a JSON object, got {json_type_name(item)}"
    kind = item.get("kind", "Event")
    if kind != "Event":
        return "not_audit_event", f"not a Kubernetes audit event: 'kind' is {_shown(kind)}, expected 'Event'"
    if "stageTimestamp" not in item:
        return "missing_stage_timestamp", "missing stageTimestamp"
    if not isinstance(item["stageTimestamp"], str):
        return ("malformed_stage_timestamp",
                f"malformed stageTimestamp {_shown(item['stageTimestamp'])}: expected a string")
    return None
