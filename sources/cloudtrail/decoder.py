"""Turns parsed CloudTrail documents (log files or bare arrays of records) into `aws_cloudtrail` events."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from datetime import date
from typing import Any

from agent.errors import DecodeError
from agent.event import Event
from agent.generic_fields import TimeOutOfRange, checked_event_time
from agent.location import Location

SOURCE = "aws_cloudtrail"
_INSIGHT = "AwsCloudTrailInsight"
# Keys every CloudTrail record has and no Kubernetes audit event has; used to recognise bare arrays.
_RECORD_KEYS = ("eventVersion", "eventTime", "eventSource", "eventName", "eventType", "userIdentity")
_AUDIT_KEYS = ("kind", "auditID")

# RFC 3339 as AWS writes it: 2014-03-06T21:22:54Z, optionally with fractional seconds or an offset.
_TIME_RE = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9})\d*)?(?:[Zz]|([+-])(\d\d):(\d\d))",
    re.ASCII,
)
_NS_PER_S = 1_000_000_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_ABSENT = object()
_NOT_RFC3339 = "is not an RFC 3339 time"
#: A rejected record: its metrics reason (`invalid` unless worth telling apart) and its message.
_Rejection = tuple[str, str]
_NO_EVENT_TIME: _Rejection = ("missing_event_time", "CloudTrail record has no eventTime")
_NO_EVENT_TYPE: _Rejection = ("missing_event_type", "CloudTrail record has no eventType")


def parse_event_time(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time an event may have; ValueError when it is not one.

    A well-formed time outside Falco's event clock raises TimeOutOfRange. Fractional digits past
    the ninth are dropped; a leap second (`:60`) is rejected, as Go's time.Parse rejects it.
    """
    match = _TIME_RE.fullmatch(text)
    if match is None:
        raise ValueError(_NOT_RFC3339)
    year, month, day, hour, minute, second, fraction, sign, offset_h, offset_m = match.groups()
    days = _epoch_days(year, month, day)
    if days is None or hour > "23" or minute > "59" or second > "59":
        raise ValueError(_NOT_RFC3339)
    seconds = days * 86400 + int(hour) * 3600 + int(minute) * 60 + int(second)
    if sign is not None:
        if offset_h > "23" or offset_m > "59":
            raise ValueError(_NOT_RFC3339)
        offset = int(offset_h) * 3600 + int(offset_m) * 60
        seconds -= offset if sign == "+" else -offset
    nanos = int(fraction.ljust(9, "0")) if fraction else 0
    return checked_event_time(seconds * _NS_PER_S + nanos)


@functools.lru_cache(maxsize=1024)
def _epoch_days(year: str, month: str, day: str) -> int | None:
    """Days from 1970-01-01 to a date given as digit strings; cached as a log file's records share days."""
    try:
        return date(int(year), int(month), int(day)).toordinal() - _EPOCH_ORDINAL
    except ValueError:  # no such month or day, or year 0
        return None


_JSON_KINDS: dict[type, str] = {
    type(None): "null", bool: "boolean", int: "number", float: "number", str: "string", list: "array",
    dict: "object",
}


def _json_kind(value: Any) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    return _JSON_KINDS.get(type(value), type(value).__name__)


def _is_record_like(value: Any) -> bool:
    if not isinstance(value, dict) or any(key in value for key in _AUDIT_KEYS):
        return False
    return any(key in value for key in _RECORD_KEYS)


class CloudTrailDecoder:
    """Decodes CloudTrail documents into events, one per record, skipping bad records with a DecodeError.

    Like the upstream plugin, a record needs `eventTime` and `eventType`, and Insight records
    (`eventType` AwsCloudTrailInsight) are skipped without an error. The counters say how many
    events were produced (`decoded`), how many Insight records were skipped (`skipped_insight`)
    and how many records were rejected with a DecodeError (`rejected`). Not thread-safe.
    """

    source = SOURCE

    def __init__(self, *, hostname: str = "") -> None:
        self.hostname = hostname
        self.decoded = 0
        self.skipped_insight = 0
        self.rejected = 0

    def matches(self, document: Any) -> bool:
        """True for a log file (`{"Records": ...}`) and for an array whose first object is a record."""
        if isinstance(document, dict):
            return "Records" in document
        if isinstance(document, list):
            first_object = next((item for item in document if isinstance(item, dict)), None)
            return _is_record_like(first_object)
        return False

    def events(self, document: Any, *, origin: str) -> Iterator[Event | DecodeError]:
        """Yield an event per record in file order; each bad record yields a DecodeError instead."""
        if isinstance(document, dict):
            records = document.get("Records", _ABSENT)
            if not isinstance(records, list):
                self.rejected += 1
                what = "missing" if records is _ABSENT else _json_kind(records)
                yield DecodeError(
                    f"CloudTrail log file: 'Records' is {what}, not an array of records",
                    Location(file=origin, item_kind="key", item_name="Records"),
                )
                return
        elif isinstance(document, list):
            records = document
        else:
            self.rejected += 1
            yield DecodeError(
                f"CloudTrail input is {_json_kind(document)}, not a log file or an array of records",
                Location(file=origin),
            )
            return
        for index, record in enumerate(records):
            decoded = self._decode(record)
            if decoded is None:
                continue
            if isinstance(decoded, tuple):
                self.rejected += 1
                reason, message = decoded
                yield DecodeError(message, Location(file=origin, item_kind="record", item_name=str(index)),
                                  reason=reason)
                continue
            self.decoded += 1
            yield decoded

    def _decode(self, record: Any) -> Event | _Rejection | None:
        """The event for one record, why it is rejected, or None for a skipped Insight record."""
        if not isinstance(record, dict):
            return "invalid", f"CloudTrail record is {_json_kind(record)}, not an object"
        event_time = record.get("eventTime")
        if event_time is None:
            return _NO_EVENT_TIME
        if record.get("eventType") is None:
            return _NO_EVENT_TYPE
        if record["eventType"] == _INSIGHT:
            self.skipped_insight += 1
            return None
        if not isinstance(event_time, str):
            return "invalid", f"CloudTrail record eventTime is {_json_kind(event_time)}, not a time string"
        try:
            ts_ns = parse_event_time(event_time)
        except TimeOutOfRange as err:
            return err.reason, f"CloudTrail record eventTime {event_time!r} {err}"
        except ValueError as err:
            return "invalid", f"CloudTrail record eventTime {event_time!r} {err}"
        name = record.get("eventName")
        return Event(
            source=SOURCE,
            ts_ns=ts_ns,
            payload=record,
            type=name if isinstance(name, str) else "",
            hostname=self.hostname,
        )
