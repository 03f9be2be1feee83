"""The CloudTrail fields generated code reads inline give what their extractors give, errors included."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from agent.event import Event
from agent.fields import Extractor, FieldTable, cached_extractor, generated_read, inline_read
from sources.cloudtrail.fields import cloudtrail_source


@functools.cache
def table() -> FieldTable:
    return cloudtrail_source().fields


def outcome(read: Extractor, payload: Any) -> Any:
    """A read's value for a record, or the type of error it raises."""
    try:
        return read(Event("aws_cloudtrail", 0, payload))
    except Exception as exc:  # the kind of error is what is compared
        return type(exc)


def generated(extract: Extractor) -> Extractor:
    """A generated function reading a field as conditions and outputs do (inline, the cache as fallback)."""
    return generated_read(cached_extractor("key", extract))


def inline_fields() -> list[str]:
    return [spec.name for spec in table() if spec.is_implemented and not spec.arg.accepts_arg
            and inline_read(spec.bind_uncached(None)) is not None]


VALUES: list[Any] = ["text", "", 0, 7, 1.5, True, None, {"a": "b"}, ["x"]]


def records() -> list[Any]:
    shapes: list[Any] = [None, "text", [], [{"eventName": "x"}], {}]
    for value in VALUES:
        shapes += [
            {"eventName": value, "eventSource": value, "userIdentity": value, "requestParameters": value},
            {"eventName": "Get", "userIdentity": {"type": value, "arn": value, "accountId": value},
             "requestParameters": {"bucketName": value}, "sourceIPAddress": value, "awsRegion": value},
        ]
    return shapes


class TestInlineFields:
    def test_the_index_and_guard_fields_are_inline(self) -> None:
        assert {"ct.name", "ct.src", "ct.user.identitytype"} <= set(inline_fields())

    @pytest.mark.parametrize("name", inline_fields())
    def test_inline_value_is_the_extractors(self, name: str) -> None:
        """Every JSON type where text is expected, missing keys, and non-object payloads (an extraction error)."""
        spec = table().get(name)
        assert spec is not None
        extract = spec.bind_uncached(None)
        read = generated(extract)
        for payload in records():
            assert outcome(read, payload) == outcome(extract, payload), (name, payload)
