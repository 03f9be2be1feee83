"""Tests for sources/k8saudit/decoder.py: recorded audit JSON in, k8s_audit events or DecodeErrors out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.errors import DecodeError
from agent.event import Event
from agent.location import Location
from sources.k8saudit.decoder import K8sAuditDecoder, parse_timestamp_ns

TRACES = (Path(__file__).resolve().parents[3] / ".." / "shared" / "reference"
          / "samples" / "k8s_audit" / "falco-regression")


def audit(audit_id: str = "a-1", **body: Any) -> dict[str, Any]:
    return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": audit_id, "verb": "get",
            "stageTimestamp": "2024-05-01T10:00:00.123456Z", **body}


def decode(document: Any, *, hostname: str = "") -> list[Event | DecodeError]:
    return list(K8sAuditDecoder(hostname=hostname).events(document, origin="audit.json"))


def ns_of(moment: datetime) -> int:
    """Exact nanoseconds of an aware datetime (its microseconds included)."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


class TestMatches:
    @pytest.mark.parametrize(
        "document",
        [audit(),
         {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [audit()]},
         [audit(), audit("a-2")],
         {"auditID": "x", "stageTimestamp": "2024-05-01T10:00:00Z"},
         {"kind": 0},
         [1, audit()]],
    )
    def test_audit_shapes_match(self, document: Any) -> None:
        """An Event, an EventList, an array of events and a malformed object with `kind` are claimed."""
        assert K8sAuditDecoder().matches(document)

    @pytest.mark.parametrize(
        "document",
        [{"Records": [{"eventVersion": "1.08", "eventSource": "s3.amazonaws.com"}]},
         {"Records": [], "kind": "Event"},
         [{"eventVersion": "1.08", "eventSource": "iam.amazonaws.com", "kind": "x"}],
         [{"eventSource": "ec2.amazonaws.com"}, audit()],
         {"hello": "world"}, [], [1, 2], "Event", 3, None],
    )
    def test_other_documents_do_not_match(self, document: Any) -> None:
        """CloudTrail logs and unrelated JSON are left for other decoders."""
        assert not K8sAuditDecoder().matches(document)


class TestEvents:
    def test_single_event(self) -> None:
        """One audit Event object becomes one k8s_audit event carrying its verb, time and host."""
        document = audit(verb="create")
        [event] = decode(document, hostname="node-1")
        assert isinstance(event, Event)
        assert event.source == "k8s_audit"
        assert event.type == "create"
        assert event.payload is document
        assert event.hostname == "node-1"
        assert event.num == 0
        assert event.ts_ns == ns_of(datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC))

    def test_event_list_and_array_yield_every_item_in_order(self) -> None:
        """Both an EventList and a bare array produce one event per item, in order."""
        items = [audit("a-1"), audit("a-2", verb="delete")]
        for document in ({"kind": "EventList", "items": items}, items):
            events = decode(document)
            assert all(isinstance(event, Event) for event in events)
            assert [event.payload["auditID"] for event in events] == ["a-1", "a-2"]  # type: ignore[union-attr]
            assert [event.type for event in events] == ["get", "delete"]  # type: ignore[union-attr]

    def test_missing_or_non_string_verb_gives_empty_type(self) -> None:
        """An event without a usable verb still decodes, with an empty type."""
        no_verb = audit()
        del no_verb["verb"]
        events = decode([no_verb, audit(verb=5)])
        assert all(isinstance(event, Event) for event in events)
        assert [event.type for event in events] == ["", ""]  # type: ignore[union-attr]

    def test_kind_zero_is_rejected_with_a_reason(self) -> None:
        """The FAL-01-003 input `{"kind": 0}` yields a DecodeError saying it is not an audit event."""
        [error] = decode({"kind": 0})
        assert isinstance(error, DecodeError)
        assert error.message == "not a Kubernetes audit event: 'kind' is 0, expected 'Event'"
        assert error.location == Location(file="audit.json", item_kind="record", item_name="0")
        assert str(error) == "audit.json record '0': " + error.message

    def test_bad_items_do_not_stop_the_others(self) -> None:
        """Non-object items, wrong kinds and missing timestamps each yield an error at their index."""
        no_stamp = audit("a-3")
        del no_stamp["stageTimestamp"]
        results = decode([audit("a-1"), 7, {"kind": "Pod"}, no_stamp, [audit()], audit("a-6")])
        kinds = [type(result).__name__ for result in results]
        assert kinds == ["Event", "DecodeError", "DecodeError", "DecodeError", "DecodeError", "Event"]
        errors = [result for result in results if isinstance(result, DecodeError)]
        assert [error.location.item_name for error in errors if error.location] == ["1", "2", "3", "4"]
        assert errors[0].message == "not a Kubernetes audit event: expected a JSON object, got a number"
        assert errors[1].message == "not a Kubernetes audit event: 'kind' is 'Pod', expected 'Event'"
        assert errors[2].message == "missing stageTimestamp"
        assert errors[3].message == "not a Kubernetes audit event: expected a JSON object, got an array"

    @pytest.mark.parametrize(
        ("stamp", "reason"),
        [("yesterday", "expected an RFC 3339 time"),
         ("2024-05-01 10:00:00Z", "expected an RFC 3339 time"),
         ("2024-05-01T10:00:00", "expected an RFC 3339 time"),
         ("2024-05-01T10:00:00.1234567890Z", "expected an RFC 3339 time"),
         ("2023-02-29T10:00:00.000000Z", "day 29 out of range"),
         ("2024-13-01T10:00:00.000000Z", "month 13 out of range"),
         ("2024-05-01T24:00:00.000000Z", "time of day out of range"),
         (1714557600, "expected a string")],
    )
    def test_malformed_timestamp_is_rejected(self, stamp: Any, reason: str) -> None:
        """A stageTimestamp that is not a valid RFC 3339 string yields a DecodeError naming it."""
        [error] = decode(audit(stageTimestamp=stamp))
        assert isinstance(error, DecodeError)
        assert error.message.startswith("malformed stageTimestamp ")
        assert reason in error.message

    def test_event_list_without_items_array_is_an_error(self) -> None:
        """An EventList whose items is not an array yields one DecodeError for the document."""
        [error] = decode({"kind": "EventList", "items": {"a": 1}})
        assert isinstance(error, DecodeError)
        assert "'items' is" in error.message and error.location is not None
        assert error.location.file == "audit.json"


class TestTimestamps:
    @pytest.mark.parametrize(
        ("stamp", "expected"),
        [("2018-10-25T13:58:49.736141Z", datetime(2018, 10, 25, 13, 58, 49, 736141, tzinfo=UTC)),
         ("2018-10-25T13:58:49Z", datetime(2018, 10, 25, 13, 58, 49, tzinfo=UTC)),
         ("2018-10-25T13:58:49.7Z", datetime(2018, 10, 25, 13, 58, 49, 700000, tzinfo=UTC)),
         ("2024-02-29t23:59:59.5z", datetime(2024, 2, 29, 23, 59, 59, 500000, tzinfo=UTC)),
         ("2024-05-01T12:00:00.000001+02:00",
          datetime(2024, 5, 1, 12, 0, 0, 1, tzinfo=timezone(timedelta(hours=2)))),
         ("2024-05-01T04:30:00-05:30",
          datetime(2024, 5, 1, 4, 30, tzinfo=timezone(-timedelta(hours=5, minutes=30)))),
         ("1970-01-01T00:00:00.000000Z", datetime(1970, 1, 1, tzinfo=UTC)),
         ("2000-03-01T00:00:00.000000Z", datetime(2000, 3, 1, tzinfo=UTC))],
    )
    def test_rfc3339_forms_parse_exactly(self, stamp: str, expected: datetime) -> None:
        """Six or fewer fractional digits, Z or an offset, give the exact instant in nanoseconds."""
        assert parse_timestamp_ns(stamp) == ns_of(expected)

    @pytest.mark.parametrize("stamp", [
        "1970-01-01T00:00:00.000001Z", "1999-12-31T23:59:59.999999Z", "2000-02-29T12:34:56.000500Z",
        "2024-05-01T10:00:00.123456Z", "2100-03-01T00:00:00.999999Z", "2554-07-21T23:34:33.709551Z",
    ])
    def test_apiserver_times_equal_the_same_instant_written_otherwise(self, stamp: str) -> None:
        """The apiserver's own shape (six digits and Z, read by the fast path) gives the instant its offset form
        gives, to the nanosecond."""
        assert parse_timestamp_ns(stamp) == parse_timestamp_ns(stamp[:-1] + "+00:00")
        assert parse_timestamp_ns(stamp) == ns_of(datetime.fromisoformat(stamp))

    def test_a_second_seen_before_reads_its_microseconds_exactly(self) -> None:
        """Times of a second already parsed come from its cached start: the same instants, and a malformed fraction
        of that second is still refused."""
        parse_timestamp_ns("2024-05-01T10:00:07.000000Z")
        for micros in ("000000", "000001", "123456", "999999", "500000"):
            stamp = f"2024-05-01T10:00:07.{micros}Z"
            assert parse_timestamp_ns(stamp) == ns_of(datetime.fromisoformat(stamp))
        for fraction in ("12345x", "+12345", " 12345", "1_2345", "\u0661\u0662\u0663\u0664\u0665\u0666"):
            with pytest.raises(ValueError):
                parse_timestamp_ns(f"2024-05-01T10:00:07.{fraction}Z")

    def test_nanosecond_digits_are_kept(self) -> None:
        """Nine fractional digits keep nanosecond precision, with or without an offset."""
        base = ns_of(datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC))
        assert parse_timestamp_ns("2024-05-01T10:00:00.123456789Z") == base + 123456789
        assert parse_timestamp_ns("2024-05-01T11:00:00.000000001+01:00") == base + 1
        assert parse_timestamp_ns("2024-05-01T10:00:00.000000001Z") == base + 1

    @pytest.mark.parametrize("stamp", ["2554-07-21T23:34:33.709551615Z", "2554-07-22T01:34:33.709551615+02:00"])
    def test_last_time_falco_can_hold_parses(self, stamp: str) -> None:
        """The last nanosecond of Falco's uint64 clock is a valid event time, however it is written."""
        assert parse_timestamp_ns(stamp) == 2**64 - 1

    @pytest.mark.parametrize("stamp", [
        "9999-12-31T23:59:59.999999Z", "0001-01-01T00:00:00Z", "0000-01-01T00:00:00.000000Z",
        "1969-12-31T23:59:59.999999999Z", "1970-01-01T00:00:00+00:01", "2554-07-21T23:34:33.709551616Z",
    ])
    def test_times_outside_falcos_clock_are_refused_with_their_reason(self, stamp: str) -> None:
        """A well-formed stageTimestamp before 1970 or past 2554-07-21 is refused: Falco's uint64 clock cannot
        hold it (it killed the outputs); the error names the field, the value, the record and the range."""
        [error] = decode([audit(stageTimestamp=stamp)])
        assert isinstance(error, DecodeError) and error.reason == "time_out_of_range"
        assert str(error) == (f"audit.json record '0': stageTimestamp '{stamp}' is outside the event times Falco "
                              "can hold (1970-01-01T00:00:00Z to 2554-07-21T23:34:33.709551615Z)")


class TestRealTraces:
    def test_regression_traces_decode(self) -> None:
        """The 51 upstream audit events decode and the FAL-01-003 trace is rejected, not crashed on."""
        if not TRACES.is_dir():
            pytest.skip(f"reference traces missing: {TRACES}")
        decoder = K8sAuditDecoder(hostname="h")
        events: list[Event] = []
        errors: list[DecodeError] = []
        for path in sorted(TRACES.glob("*.json")):
            if path.name.startswith("expected"):
                continue
            for line in path.read_bytes().splitlines():
                if not line.strip():
                    continue
                document = orjson.loads(line)
                assert decoder.matches(document), path.name
                for result in decoder.events(document, origin=path.name):
                    (events if isinstance(result, Event) else errors).append(result)  # type: ignore[arg-type]
        assert len(events) == 51
        assert all(event.ts_ns > 1_500_000_000 * 10**9 and event.type for event in events)
        assert [str(error) for error in errors] == [
            "fal_01_003.json record '0': not a Kubernetes audit event: 'kind' is 0, expected 'Event'"
        ]


@pytest.mark.parametrize(("item", "reason"), [
    ({"kind": 0}, "not_audit_event"),
    ("a string", "not_audit_event"),
    ({"kind": "Event", "auditID": "x"}, "missing_stage_timestamp"),
    ({"kind": "Event", "auditID": "x", "stageTimestamp": 42}, "malformed_stage_timestamp"),
    ({"kind": "Event", "auditID": "x", "stageTimestamp": "yesterday"}, "malformed_stage_timestamp"),
    ({"kind": "Event", "auditID": "x", "stageTimestamp": "9999-12-31T23:59:59Z"}, "time_out_of_range"),
])
def test_rejection_carries_a_reason_code(item: object, reason: str) -> None:
    """Each rejection names its reason as a code, which the inputs count in their metrics."""
    (error,) = K8sAuditDecoder().events([item], origin="t")
    assert isinstance(error, DecodeError) and error.reason == reason
