"""Property-based tests for sources/cloudtrail/decoder.py: no input makes the decoder, a field or an alert raise."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.alert import Alert
from agent.engine.output_format import json_value, render_value
from agent.errors import DecodeError
from agent.event import Event
from agent.fields import ArgKind, FieldSpec
from agent.priority import Priority
from sources.cloudtrail.checkpoint import SKIP_REASONS
from sources.cloudtrail.decoder import CloudTrailDecoder
from sources.cloudtrail.fields import cloudtrail_source
from tests.support.json_strategies import json_values as json_values_of
from tests.support.json_strategies import rfc3339_times

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIELDS = list(cloudtrail_source().fields)

# A JSON number as orjson parses it, as every input does: an int within signed or unsigned 64 bits, else a finite
# float (2**64 reads as 1.8446744073709552e19); numbers wider still are tried as raw text below.
huge_numbers = st.one_of(
    st.integers(min_value=2**64 - 3, max_value=2**64 - 1), st.integers(min_value=-(2**63), max_value=-(2**63) + 2),
    st.sampled_from([2**63 - 1, 2**63, 1.8446744073709552e19, -9.223372036854776e18, 1e308, -1e308, 5e-324]),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), huge_numbers,
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
)
json_values = json_values_of(scalars)


# eventTime values: well-formed, the report's extremes, near misses (any digits, stray separators), and non-strings.
event_times = st.one_of(
    rfc3339_times(max_fraction_digits=12),  # any year 0000-9999, most outside Falco's clock
    st.sampled_from(["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "1969-12-31T23:59:59.999999999Z",
                     "2554-07-21T23:34:33.709551615Z", "2554-07-21T23:34:33.709551616Z", "0000-00-00T00:00:00Z"]),
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{0,14})?"
                  r"([Zz]|[+-][0-9]{2}:[0-9]{2})?\Z"),
    st.text(max_size=30),
    huge_numbers,
    json_values,
)

IDENTITY_TYPES = ("Root", "IAMUser", "AssumedRole", "AWSService", "AWSAccount", "FederatedUser", "Unknown")


@st.composite
def identities(draw: st.DrawFn) -> Any:
    """A userIdentity, each reading path of ct.user / ct.originaluser possibly broken."""
    identity: dict[str, Any] = {"type": draw(st.sampled_from(IDENTITY_TYPES) | json_values)}
    for key in draw(st.lists(st.sampled_from(["userName", "invokedBy", "arn", "principalId", "accountId",
                                               "sessionContext"]), unique=True, max_size=4)):
        identity[key] = draw(json_values)
    if draw(st.booleans()):
        identity["sessionContext"] = {"sessionIssuer": draw(st.just({"userName": "role"}) | json_values)}
    return draw(st.just(identity) | json_values)


RECORD_KEYS = ("eventVersion", "eventSource", "eventName", "awsRegion", "sourceIPAddress", "userAgent", "errorCode",
               "errorMessage", "readOnly", "managementEvent", "recipientAccountId", "requestParameters",
               "responseElements", "resources", "sessionCredentialFromConsole", "vpcEndpointId", "requestID")


@st.composite
def near_records(draw: st.DrawFn) -> dict[str, Any]:
    """A CloudTrail-record-like object: known keys with odd values, S3 byte counters of any size, any eventTime."""
    record: dict[str, Any] = {}
    if draw(st.integers(0, 5)):
        record["eventTime"] = draw(event_times)
    if draw(st.integers(0, 5)):
        record["eventType"] = draw(st.sampled_from(["AwsApiCall", "AwsConsoleSignIn", "AwsCloudTrailInsight"])
                                   | json_values)
    if draw(st.booleans()):
        record["userIdentity"] = draw(identities())
    for key in draw(st.lists(st.sampled_from(RECORD_KEYS), unique=True, max_size=6)):
        record[key] = draw(json_values)
    if draw(st.booleans()):
        record["eventName"] = draw(st.sampled_from(["GetObject", "PutObject", "RunInstances", "CreateUser",
                                                    "PutBucketPublicAccessBlock"]))
    if draw(st.booleans()):
        record["additionalEventData"] = {"bytesTransferredIn": draw(huge_numbers | scalars),
                                         "bytesTransferredOut": draw(huge_numbers | scalars)}
    if draw(st.booleans()):
        record["requestParameters"] = {"bucketName": draw(json_values), "key": draw(json_values),
                                       "instancesSet": draw(json_values), "tagSpecificationSet": draw(json_values)}
    return record


# Numbers no 64-bit integer or finite double holds, written as JSON text.
wide_number_texts = st.one_of(
    st.integers(min_value=2**64).map(str), st.integers(max_value=-(2**63) - 1).map(str),
    st.sampled_from(["1e400", "-1e400", "1e-400", "123456789012345678901234567890.5", "-0", "0e0"]),
)
_MARK = "@number@"


@st.composite
def texts_with_wide_numbers(draw: st.DrawFn) -> bytes:
    """A CloudTrail log file whose record holds a wide number where a time, a counter, a name or a type belongs."""
    record: dict[str, Any] = {
        "eventTime": "2024-08-01T13:33:28Z", "eventType": "AwsApiCall", "eventName": "GetObject",
        "eventSource": "s3.amazonaws.com", "sourceIPAddress": "192.0.2.1",
        "userIdentity": {"type": "IAMUser", "userName": "alice"},
        "additionalEventData": {"bytesTransferredIn": 1, "bytesTransferredOut": 2},
        "requestParameters": {"bucketName": "b", "key": "k"},
    }
    place = draw(st.sampled_from([("eventTime",), ("eventType",), ("eventName",), ("userIdentity", "type"),
                                  ("additionalEventData", "bytesTransferredIn"), ("requestParameters", "key")]))
    parent = record
    for key in place[:-1]:
        parent = parent[key]
    parent[place[-1]] = _MARK
    return json.dumps({"Records": [record]}).replace(f'"{_MARK}"', draw(wide_number_texts)).encode()


documents = st.one_of(
    json_values,
    near_records(),
    st.lists(near_records() | json_values, max_size=4),
    st.builds(lambda records: {"Records": records}, st.lists(near_records() | json_values, max_size=4)),
    st.builds(lambda records: {"Records": records}, json_values),
)

# Arguments tried on the fields that take one: indexes in and out of range, JSON pointers into odd places.
INDEXES = ("0", "3")
KEYS = ("/eventTime", "/userIdentity/type", "/requestParameters/instancesSet/items/0", "/additionalEventData",
        "/", "/nope/0/x", "eventTime")


def field_uses(spec: FieldSpec) -> list[str | None]:
    uses: list[str | None] = [] if ArgKind.REQUIRED in spec.arg else [None]
    if ArgKind.INDEX in spec.arg:
        uses += INDEXES
    if ArgKind.KEY in spec.arg:
        uses += KEYS
    return uses


def assert_fields_extract_and_render(event: Event) -> None:
    """Every field (with each argument tried) extracts, and an alert holding all the values renders."""
    values: dict[str, Any] = {}
    for spec in FIELDS:
        for arg in field_uses(spec):
            value = spec.bind_uncached(arg)(event)
            render_value(value)
            values[f"{spec.name}[{arg}]"] = json_value(value)
    alert = Alert(rule="fuzz", priority=Priority.WARNING, source=event.source, ts_ns=event.ts_ns,
                  output="fuzz", output_fields=values, hostname=event.hostname)
    assert isinstance(orjson.loads(alert.falco_json_line())["output_fields"], dict)
    assert isinstance(alert.text_line(), str) and isinstance(alert.text_line(iso8601=True), str)


def assert_decodes_without_raising(document: Any) -> None:
    decoder = CloudTrailDecoder(hostname="fuzz-host")
    assert isinstance(decoder.matches(document), bool)
    results = list(decoder.events(document, origin="fuzz"))
    events = [result for result in results if isinstance(result, Event)]
    errors = [result for result in results if isinstance(result, DecodeError)]
    assert len(events) + len(errors) == len(results)
    assert (decoder.decoded, decoder.rejected) == (len(events), len(errors))
    for event in events:
        assert type(event.ts_ns) is int and 0 <= event.ts_ns < 2**64  # Falco's uint64 nanoseconds
        assert isinstance(event.payload, dict) and isinstance(event.type, str)
        assert_fields_extract_and_render(event)
    for error in errors:
        assert error.location is not None and error.location.file == "fuzz"
        # The inputs count rejections per reason in a fixed table: an unknown reason would crash the reader.
        assert error.reason in SKIP_REASONS, error.reason
        assert isinstance(str(error), str)


@pytest.mark.slow  # every field is extracted from every event: about 15 s
class TestFuzz:
    @FUZZ
    @given(documents)
    def test_any_document_yields_only_events_or_errors(self, document: Any) -> None:
        """Whatever JSON value arrives, decoding yields events with a uint64 time whose every field extracts and
        renders, or errors located in the input with a reason the inputs count."""
        assert_decodes_without_raising(document)

    @FUZZ
    @given(st.binary(max_size=200) | documents.map(lambda document: json.dumps(document).encode())
           | texts_with_wide_numbers())
    def test_raw_bytes_either_fail_to_parse_or_decode(self, data: bytes) -> None:
        """Arbitrary bytes, and JSON text with numbers of any size, are rejected by the parser or decoded."""
        try:
            document = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        assert_decodes_without_raising(document)

    @FUZZ
    @given(near_records(), event_times)
    def test_event_time_is_an_event_or_a_located_error_naming_it(self, record: dict[str, Any], time: Any) -> None:
        """With eventType set, a record at any eventTime is an event in Falco's clock or an error naming eventTime
        (JSON null counts as missing, as upstream)."""
        record = {**record, "eventTime": time, "eventType": "AwsApiCall"}
        [result] = CloudTrailDecoder().events({"Records": [record]}, origin="fuzz")
        if isinstance(result, DecodeError):
            assert "eventTime" in result.message and str(result).startswith("fuzz record '0': ")
            expected = ("missing_event_time",) if time is None else ("invalid", "time_out_of_range")
            assert result.reason in expected
        else:
            assert 0 <= result.ts_ns < 2**64


class TestRegressions:
    def test_the_reports_records_are_refused_with_their_reason(self) -> None:
        """The issue-13 times give located errors the inputs count, not events that kill the outputs."""
        for time in ("9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z"):
            [error] = CloudTrailDecoder().events([{"eventTime": time, "eventType": "AwsApiCall", "eventName": "X"}],
                                                 origin="trail.json")
            assert isinstance(error, DecodeError) and error.reason == "time_out_of_range"
            assert str(error).startswith(f"trail.json record '0': CloudTrail record eventTime '{time}' is outside ")
