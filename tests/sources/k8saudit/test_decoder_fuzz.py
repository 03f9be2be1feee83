"""Property-based tests for sources/k8saudit/decoder.py: no input makes the decoder raise."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.errors import DecodeError
from agent.event import Event
from sources.k8saudit.decoder import K8sAuditDecoder
from tests.support.json_strategies import json_values as json_values_of
from tests.support.json_strategies import rfc3339_times

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
)
json_values = json_values_of(scalars)

# Years whose every instant, at any offset, is (or is not) within Falco's clock: 1970-01-01 to 2554-07-21.
IN_RANGE_YEARS = st.integers(1971, 2553)
OUT_OF_RANGE_YEARS = st.integers(0, 1968) | st.integers(2555, 9999)

# Strings that are, or nearly are, RFC 3339 times: right shape with any digits, stray separators, odd offsets.
timestamps = st.one_of(
    rfc3339_times(),
    st.text(max_size=40),
    st.from_regex(
        r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{0,11})?([Zz]|[+-][0-9]{2}:[0-9]{2})?\Z"
    ),
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z\Z"),
)

AUDIT_KEYS = ("kind", "apiVersion", "level", "auditID", "stage", "requestURI", "verb", "user", "impersonatedUser",
              "sourceIPs", "userAgent", "objectRef", "responseStatus", "requestObject", "responseObject",
              "annotations", "requestReceivedTimestamp")


@st.composite
def near_audit_events(draw: st.DrawFn) -> dict[str, Any]:
    """An audit-Event-like object: known keys with values of any JSON type, a plausible or random stageTimestamp."""
    event: dict[str, Any] = {}
    if draw(st.integers(0, 3)):
        event["kind"] = draw(st.just("Event") | st.sampled_from(["EventList", "event", ""]) | json_values)
    for key in draw(st.lists(st.sampled_from(AUDIT_KEYS), unique=True, max_size=6)):
        event[key] = draw(json_values)
    if draw(st.integers(0, 3)):
        event["stageTimestamp"] = draw(timestamps | json_values)
    return event


def _log_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # integers past 64 bits, nesting past orjson's limit
        return repr(value)


log_strings = st.one_of(st.text(max_size=60), near_audit_events().map(_log_text), json_values.map(_log_text))


@st.composite
def aks_records(draw: st.DrawFn) -> Any:
    """An AKS diagnostic record, its category, properties and properties.log each possibly broken."""
    record: dict[str, Any] = {}
    category = draw(st.sampled_from(["kube-audit", "kube-audit-admin", "kube-apiserver", "guard"]) | json_values)
    if draw(st.booleans()):
        record["category"] = category
    properties: Any = {"log": draw(log_strings | json_values), "stream": "stdout"}
    record["properties"] = draw(st.just(properties) | st.just({}) | json_values)
    if draw(st.booleans()):
        record["time"] = draw(timestamps)
    return record


aks_envelopes = st.one_of(
    st.builds(lambda records: {"records": records}, st.lists(aks_records() | near_audit_events(), max_size=4)),
    aks_records(),
    st.lists(aks_records() | near_audit_events(), max_size=4),
    st.builds(lambda records: {"records": records}, json_values),
)

documents = st.one_of(
    json_values,
    near_audit_events(),
    st.lists(near_audit_events() | json_values, max_size=4),
    st.builds(lambda items: {"kind": "EventList", "items": items}, st.lists(near_audit_events(), max_size=4)),
    st.builds(lambda items: {"kind": "EventList", "items": items}, json_values),
    aks_envelopes,
)


def assert_decodes_without_raising(document: Any) -> None:
    decoder = K8sAuditDecoder(hostname="fuzz-host")
    assert isinstance(decoder.matches(document), bool)
    for result in decoder.events(document, origin="fuzz"):
        assert isinstance(result, Event | DecodeError)
        if isinstance(result, Event):
            assert type(result.ts_ns) is int and 0 <= result.ts_ns < 2**64  # Falco's uint64 nanoseconds
            assert isinstance(result.payload, dict)
            assert isinstance(result.type, str)
        else:
            assert result.location is not None and result.location.file == "fuzz"
            assert isinstance(str(result), str)


def minimal_document(stamp: str, category: str | None) -> Any:
    """A minimal audit Event at `stamp`, bare or (with a category) in an AKS records batch."""
    event = {"kind": "Event", "verb": "get", "stageTimestamp": stamp}
    if category is None:
        return event
    return {"records": [{"category": category, "properties": {"log": orjson.dumps(event).decode()}}]}


class TestFuzz:
    @FUZZ
    @given(documents)
    def test_any_document_yields_only_events_or_errors(self, document: Any) -> None:
        """Whatever JSON value arrives, decoding yields events with a uint64 time and a dict payload, or errors."""
        assert_decodes_without_raising(document)

    @FUZZ
    @given(st.binary(max_size=200) | json_values.map(_log_text).map(str.encode))
    def test_raw_bytes_either_fail_to_parse_or_decode(self, data: bytes) -> None:
        """Arbitrary bytes are either rejected by the JSON parser or decoded without an exception."""
        try:
            document = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        assert_decodes_without_raising(document)


    @FUZZ
    @given(rfc3339_times(IN_RANGE_YEARS), st.sampled_from([None, "kube-audit", "kube-audit-admin"]))
    def test_well_formed_event_always_decodes(self, stamp: str, category: str | None) -> None:
        """A minimal audit Event with a well-formed stageTimestamp Falco can hold becomes an event, bare or in AKS."""
        [result] = K8sAuditDecoder().events(minimal_document(stamp, category), origin="fuzz")
        assert isinstance(result, Event), result
        assert 0 <= result.ts_ns < 2**64 and result.type == "get"

    @FUZZ
    @given(rfc3339_times(OUT_OF_RANGE_YEARS), st.sampled_from([None, "kube-audit", "kube-audit-admin"]))
    def test_well_formed_time_falco_cannot_hold_is_refused(self, stamp: str, category: str | None) -> None:
        """A well-formed stageTimestamp before 1970 or after 2554 is refused with its own reason, never an event."""
        [result] = K8sAuditDecoder().events(minimal_document(stamp, category), origin="fuzz")
        assert isinstance(result, DecodeError) and result.reason == "time_out_of_range", result


class TestRegressions:
    def test_unhashable_category_is_not_a_crash(self) -> None:
        """A diagnostic record whose category is an array or object is handled, not raised on (found by fuzzing)."""
        assert_decodes_without_raising({"category": [], "properties": {"log": "", "stream": "stdout"}})
        unhashable: tuple[Any, ...] = ([], {"a": 1})
        for category in unhashable:
            assert_decodes_without_raising({"records": [{"category": category, "properties": {"log": "{}"}}]})
            assert_decodes_without_raising([{"category": category}])
