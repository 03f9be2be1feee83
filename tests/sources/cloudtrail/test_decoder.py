"""Tests for sources/cloudtrail/decoder.py: CloudTrail documents in, events and decode errors out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import DecodeError
from agent.event import Event
from agent.generic_fields import TimeOutOfRange
from agent.location import Location
from sources.cloudtrail.decoder import CloudTrailDecoder, parse_event_time

REFERENCE = Path(__file__).resolve().parents[3].parent / "shared" / "reference"


def reference(relative: str) -> Path:
    path = REFERENCE / relative
    if not path.exists():
        pytest.skip(f"reference data not available: {path}")
    return path


def record(name: str = "CreateUser", **changes: Any) -> dict[str, Any]:
    base = {"eventTime": "2024-08-01T13:33:28Z", "eventType": "AwsApiCall", "eventName": name,
            "eventSource": "iam.amazonaws.com", "userIdentity": {"type": "Root", "userName": "root"}}
    return {key: value for key, value in (base | changes).items() if value is not ...}


def decode(document: Any, decoder: CloudTrailDecoder | None = None) -> list[Event | DecodeError]:
    return list((decoder or CloudTrailDecoder()).events(document, origin="trail.json"))


class TestMatches:
    @pytest.mark.parametrize(
        "document",
        [{"Records": [record()]}, {"Records": []}, {"Records": "oops"}, [record()], ["junk", record()]],
    )
    def test_cloudtrail_shapes_match(self, document: Any) -> None:
        """Log files (even with a broken Records) and bare arrays of records are claimed as CloudTrail."""
        assert CloudTrailDecoder().matches(document)

    @pytest.mark.parametrize(
        "document",
        [
            {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": "a", "verb": "get"},
            {"kind": "EventList", "items": [{"kind": "Event", "auditID": "a"}]},
            [{"kind": "Event", "auditID": "a", "stage": "ResponseComplete"}],
            [{"auditID": "a", "eventTime": "2024-01-01T00:00:00Z"}],
            [], [1, 2], "Records", None, {"eventTime": "2024-01-01T00:00:00Z"},
        ],
    )
    def test_other_shapes_do_not_match(self, document: Any) -> None:
        """Kubernetes audit events, lists of them and unrelated JSON are left to other decoders."""
        assert not CloudTrailDecoder().matches(document)

    def test_real_kubernetes_audit_samples_do_not_match(self) -> None:
        """None of the Falco k8s audit regression traces is mistaken for CloudTrail."""
        folder = reference("samples/k8s_audit/falco-regression")
        decoder = CloudTrailDecoder()
        traces = [path for path in sorted(folder.glob("*.json")) if not path.name.startswith("expected")]
        assert traces
        for path in traces:
            events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            assert not decoder.matches(events), path.name
            assert not any(decoder.matches(event) for event in events), path.name


class TestEvents:
    def test_log_file_record_becomes_an_event(self) -> None:
        """The Falco regression log file gives one StartInstances event at its eventTime."""
        path = reference("samples/cloudtrail/falco-regression/alice_start_instances.json")
        document = json.loads(path.read_text())
        decoder = CloudTrailDecoder(hostname="collector-1")
        assert decoder.matches(document)
        [event] = decode(document, decoder)
        assert isinstance(event, Event)
        assert event.source == "aws_cloudtrail"
        assert event.type == "StartInstances"
        assert event.ts_ns == 1394140974 * 1_000_000_000
        assert event.payload is document["Records"][0]
        assert event.hostname == "collector-1"
        assert event.num == 0
        assert (decoder.decoded, decoder.rejected, decoder.skipped_insight) == (1, 0, 0)

    def test_big_record_is_decoded(self) -> None:
        """A record padded to 64 KB decodes like the small one."""
        path = reference("samples/cloudtrail/falco-regression/alice_start_instances_bigevent.json")
        [event] = decode(json.loads(path.read_text()))
        assert isinstance(event, Event) and event.type == "StartInstances"

    def test_bare_arrays_of_real_records(self) -> None:
        """Every Stratus detonation file (a bare array) decodes to one event per record, in order."""
        total = 0
        for path in sorted(reference("samples/cloudtrail/stratus").glob("*.json")):
            records = json.loads(path.read_text())
            decoder = CloudTrailDecoder()
            assert decoder.matches(records), path.name
            results = decode(records, decoder)
            events = [event for event in results if isinstance(event, Event)]
            assert events == results, path.name
            assert [event.type for event in events] == [rec["eventName"] for rec in records]
            total += len(events)
        assert total == 142

    def test_insight_records_are_skipped_silently_but_counted(self) -> None:
        """Insight records produce neither events nor errors; the decoder counts them."""
        decoder = CloudTrailDecoder()
        insight = record(eventType="AwsCloudTrailInsight", eventName=..., insightDetails={"state": "Start"})
        [event] = decode({"Records": [insight, record("A"), insight]}, decoder)
        assert isinstance(event, Event) and event.type == "A"
        assert (decoder.decoded, decoder.skipped_insight, decoder.rejected) == (1, 2, 0)

    @pytest.mark.parametrize(
        ("bad", "reason"),
        [
            (record(eventType=...), "no eventType"),
            (record(eventTime=...), "no eventTime"),
            (record(eventTime=None), "no eventTime"),
            ("not a record", "is string"),
            (42, "is number"),
            ([record()], "is array"),
            (record(eventTime=1722519208), "eventTime is number"),
            (record(eventTime="2024-02-30T00:00:00Z"), "not an RFC 3339 time"),
            (record(eventTime="yesterday"), "'yesterday'"),
            (record(eventTime="9999-12-31T23:59:59Z"), "'9999-12-31T23:59:59Z' is outside the event times"),
        ],
    )
    def test_bad_record_yields_located_error_and_the_rest_still_decode(self, bad: Any, reason: str) -> None:
        """A bad record becomes a DecodeError naming the file and record index; later records decode."""
        decoder = CloudTrailDecoder()
        first, error, last = decode({"Records": [record("A"), bad, record("B")]}, decoder)
        assert isinstance(error, DecodeError)
        assert reason in error.message
        assert error.location == Location(file="trail.json", item_kind="record", item_name="1")
        assert str(error).startswith("trail.json record '1': ")
        assert isinstance(first, Event) and isinstance(last, Event)
        assert (first.type, last.type) == ("A", "B")
        assert (decoder.decoded, decoder.rejected) == (2, 1)

    @pytest.mark.parametrize(("event_time", "reason"), [
        ("2024-02-30T00:00:00Z", "invalid"),
        ("9999-12-31T23:59:59Z", "time_out_of_range"),
        ("1969-12-31T23:59:59.999999999Z", "time_out_of_range"),
    ])
    def test_bad_event_time_carries_its_reason_code(self, event_time: str, reason: str) -> None:
        """A malformed eventTime and one Falco's uint64 clock cannot hold are told apart in the metrics."""
        [error] = decode([record(eventTime=event_time)])
        assert isinstance(error, DecodeError) and error.reason == reason
        assert f"eventTime {event_time!r}" in error.message

    def test_record_without_event_name_still_decodes(self) -> None:
        """eventName is not required: such a record gives an event with an empty type."""
        [event] = decode([record(eventName=...)])
        assert isinstance(event, Event) and event.type == ""

    @pytest.mark.parametrize(("records", "what"), [("oops", "string"), ({"a": 1}, "object"), (None, "null")])
    def test_records_not_a_list_is_one_error(self, records: Any, what: str) -> None:
        """A log file whose Records is not an array yields exactly one error for the whole document."""
        decoder = CloudTrailDecoder()
        [error] = decode({"Records": records}, decoder)
        assert isinstance(error, DecodeError)
        assert f"'Records' is {what}" in error.message
        assert error.location is not None and error.location.file == "trail.json"
        assert decoder.rejected == 1

    @pytest.mark.parametrize("document", [{"records": []}, "text", 3, None])
    def test_unknown_document_is_one_error(self, document: Any) -> None:
        """A document of another shape yields one DecodeError rather than an exception."""
        [error] = decode(document)
        assert isinstance(error, DecodeError)
        assert error.location is not None and error.location.file == "trail.json"

    def test_empty_log_file_yields_nothing(self) -> None:
        """A log file with no records yields no events and no errors."""
        assert decode({"Records": []}) == []

    @given(st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
            st.sampled_from(["Records", "eventTime", "eventType", "eventName", "x"]), inner, max_size=4),
        max_leaves=20,
    ))
    def test_arbitrary_json_never_raises(self, document: Any) -> None:
        """Whatever JSON it is given, the decoder only yields events and DecodeErrors."""
        decoder = CloudTrailDecoder()
        decoder.matches(document)
        results = decode(document, decoder)
        assert all(isinstance(result, Event | DecodeError) for result in results)


class TestEventTime:
    @pytest.mark.parametrize(
        ("text", "expected_ns"),
        [
            ("2014-03-06T21:22:54Z", 1394140974_000000000),
            ("1970-01-01T00:00:00Z", 0),
            ("2024-08-01T11:30:23.5Z", 1722511823_500000000),
            ("2024-08-01T11:30:23.123456789Z", 1722511823_123456789),
            ("2024-08-01T11:30:23.1234567891234Z", 1722511823_123456789),
            ("2024-08-01T13:30:23+02:00", 1722511823_000000000),
            ("2024-08-01T06:00:23.000001-05:30", 1722511823_000001000),
            ("2024-02-29T00:00:00Z", 1709164800_000000000),
            ("2000-02-29T12:00:00z", 951825600_000000000),
        ],
    )
    def test_parses_rfc3339_exactly(self, text: str, expected_ns: int) -> None:
        """eventTime becomes exact nanoseconds since the epoch, fractions and offsets included."""
        assert parse_event_time(text) == expected_ns

    @pytest.mark.parametrize(
        "text",
        ["2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2024-13-01T00:00:00Z", "2024-04-31T00:00:00Z",
         "2024-01-01T24:00:00Z", "2024-01-01T00:60:00Z", "2024-06-30T23:59:60Z", "2024-01-01T00:00:00",
         "2024-01-01 00:00:00Z", "2024-01-01T00:00:00.Z", "2024-01-01T00:00:00+0100", "2024-1-01T00:00:00Z",
         "2024-01-01T00:00:00+24:00", "２０２４-01-01T00:00:00Z", "2024-01-01T00:00:00Z trailing", ""],
    )
    def test_rejects_what_is_not_an_rfc3339_time(self, text: str) -> None:
        """Impossible dates, leap seconds, missing zones and other formats are rejected."""
        with pytest.raises(ValueError, match=r"^is not an RFC 3339 time$"):
            parse_event_time(text)

    @pytest.mark.parametrize("text", ["2554-07-21T23:34:33.709551615Z", "2554-07-22T00:34:33.709551615+01:00"])
    def test_last_time_falco_can_hold_parses(self, text: str) -> None:
        """The last nanosecond of Falco's uint64 clock is a valid eventTime, however it is written."""
        assert parse_event_time(text) == 2**64 - 1

    @pytest.mark.parametrize("text", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z",
                                      "1970-01-01T00:30:00+01:00", "2554-07-21T23:34:33.709551616Z"])
    def test_rejects_times_outside_falcos_clock(self, text: str) -> None:
        """A well-formed time before 1970 or past 2554-07-21 cannot be an event time."""
        with pytest.raises(TimeOutOfRange, match=r"\(1970-01-01T00:00:00Z to 2554-07-21T23:34:33.709551615Z\)"):
            parse_event_time(text)

    @given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2554, 7, 21, 23, 34, 32)),
           st.integers(min_value=0, max_value=999_999_999))
    def test_agrees_with_the_calendar(self, moment: datetime, nanos: int) -> None:
        """Any UTC time with nanoseconds round-trips through its RFC 3339 text."""
        moment = moment.replace(microsecond=0, tzinfo=UTC)
        text = f"{moment:%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"
        expected = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(seconds=1) * 1_000_000_000 + nanos
        assert parse_event_time(text) == expected
