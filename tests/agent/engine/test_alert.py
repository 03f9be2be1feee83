"""Falco's alert shapes: the JSON object and the escaped text line."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import orjson
import pytest

from agent.alert import Alert, json_bytes
from agent.generic_fields import _local_seconds, format_time
from agent.priority import Priority

TS = 1_714_557_600_123_456_789  # 2024-05-01T10:00:00.123456789Z
TS_HMS = 1_714_558_830_123_456_789  # 2024-05-01T10:20:30.123456789Z: hour, minute and second all differ


@pytest.fixture
def utc_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC for the test, so the local `HH:MM:SS` prefix can be written out literally."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    _local_seconds.cache_clear()
    yield
    monkeypatch.undo()
    time.tzset()
    _local_seconds.cache_clear()


def make(output: str = "denied delete", **kwargs) -> Alert:
    fields = {"t.name": "alice", "t.num": 403, "t.flag": True, "t.tags": ["b", "a"], "t.other": None}
    return Alert(rule="Secret Deleted", priority=Priority.INFORMATIONAL, source="test", ts_ns=kwargs.pop("ts", TS),
                 output=output, output_fields=fields, hostname="node-7", tags=("secrets", "k8s"), **kwargs)


class TestFalcoJson:
    def test_exact_shape(self, utc_local_time: None) -> None:
        """Keys, canonical priority, sorted tags, typed output_fields with evt.time as integer nanoseconds."""
        alert = make()
        assert orjson.loads(alert.falco_json_line()) == {
            "hostname": "node-7",
            "output": "10:00:00.123456789: Informational denied delete",
            "output_fields": {"evt.time": TS, "t.flag": True, "t.name": "alice", "t.num": 403,
                              "t.other": None, "t.tags": ["b", "a"]},
            "priority": "Informational",
            "rule": "Secret Deleted",
            "source": "test",
            "tags": ["k8s", "secrets"],
            "time": "2024-05-01T10:00:00.123456789Z",
        }

    def test_exact_time_texts(self, utc_local_time: None) -> None:
        """At 10:20:30.123456789 UTC the output prefix reads 10:20:30.123456789 and `time` the same in ISO form.

        Mutation caught: `format_time` writing `%H:%S:%M` (agent/generic_fields.py), i.e. 10:30:20.
        """
        doc = make(ts=TS_HMS).falco_json()
        assert doc["output"] == "10:20:30.123456789: Informational denied delete"
        assert doc["time"] == "2024-05-01T10:20:30.123456789Z"
        assert doc["output_fields"]["evt.time"] == TS_HMS

    def test_iso8601_mode(self) -> None:
        """In ISO 8601 mode the prefix is UTC with +0000 and the time key is evt.time.iso8601."""
        doc = make().falco_json(iso8601=True)
        assert doc["output"] == "2024-05-01T10:00:00.123456789+0000: Informational denied delete"
        assert doc["output_fields"]["evt.time.iso8601"] == TS and "evt.time" not in doc["output_fields"]

    def test_time_always_has_nine_fraction_digits(self) -> None:
        """Whole seconds still print nine zeros and Z."""
        assert make(ts=1_000_000_000_000_000_000).falco_json()["time"] == "2001-09-09T01:46:40.000000000Z"

    def test_output_fields_keys_sorted(self) -> None:
        """output_fields keys come out sorted."""
        keys = list(make().falco_json()["output_fields"])
        assert keys == sorted(keys)


class TestTextLine:
    def test_prefix_and_priority(self) -> None:
        """`<HH:MM:SS.nnnnnnnnn>: <Priority> <output>`."""
        assert re.fullmatch(r"\d\d:\d\d:\d\d\.123456789: Informational denied delete", make().text_line())

    def test_exact_local_time_prefix(self, utc_local_time: None) -> None:
        """The text line starts with the local hour, minute and second in that order: 10:20:30.123456789.

        Mutation caught: `format_time` writing `%H:%S:%M` (agent/generic_fields.py), i.e. 10:30:20.
        """
        assert make(ts=TS_HMS).text_line() == "10:20:30.123456789: Informational denied delete"
        assert format_time(TS_HMS) == "10:20:30.123456789"

    def test_escaped_like_json_string_body(self) -> None:
        """Quotes, backslashes and control characters are escaped as in a JSON string."""
        line = make(output='say "hi"\\ now\n\tend\x01').text_line(iso8601=True)
        assert line == ('2024-05-01T10:00:00.123456789+0000: Informational say \\"hi\\"\\\\ now\\n\\tend\\u0001')


class TestFromEngine:
    def test_alert_from_rule(self, lab) -> None:
        """An engine alert carries rule, priority, source, tags, rendered output and typed fields."""
        engine = lab.loaded(lab.rule("t.name = alice", name="R", priority="info", output="%t.name %t.num %t.tags",
                                     extra="  tags: [z, a]"))
        (alert,) = engine.process(lab.event(ts_ns=TS, name="alice", num=5, tags=["x", "y"]))
        doc = alert.falco_json()
        assert (doc["rule"], doc["priority"], doc["source"], doc["tags"]) == ("R", "Informational", "test", ["a", "z"])
        assert doc["output"].endswith(": Informational alice 5 (x,y)")
        assert doc["output_fields"] == {"evt.time": TS, "t.name": "alice", "t.num": 5, "t.tags": ["x", "y"]}


LAST_NS = 2**64 - 1  # 2554-07-21T23:34:33.709551615Z, the last time Falco's uint64 clock holds
# 9999-12-31T23:59:59.999999Z and 0001-01-01T00:00:00Z: what a subscriber may receive from another agent.
YEAR_9999_NS = 253_402_300_799_999_999_000
YEAR_1_NS = -62_135_596_800_000_000_000


class TestRenderingNeverRaises:
    def test_last_time_falcos_clock_holds_renders_exactly(self) -> None:
        """The last representable nanosecond is a calendar time, and evt.time stays a JSON integer."""
        doc = orjson.loads(make(ts=LAST_NS).falco_json_line(iso8601=True))
        assert doc["time"] == "2554-07-21T23:34:33.709551615Z"
        assert doc["output"] == "2554-07-21T23:34:33.709551615+0000: Informational denied delete"
        assert doc["output_fields"]["evt.time.iso8601"] == LAST_NS
        assert make(ts=LAST_NS).text_line().endswith(".709551615: Informational denied delete")

    def test_time_past_64_bits_is_written_exactly_as_digits(self) -> None:
        """A 9999 time (past uint64 nanoseconds) keeps its calendar form; evt.time is its exact digits as text."""
        alert = make(ts=YEAR_9999_NS)
        doc = orjson.loads(alert.falco_json_line())
        assert doc["time"] == "9999-12-31T23:59:59.999999000Z"
        assert doc["output_fields"]["evt.time"] == str(YEAR_9999_NS)
        assert doc["output_fields"]["t.num"] == 403 and doc["rule"] == "Secret Deleted"
        assert alert.text_line(iso8601=True) == "9999-12-31T23:59:59.999999000+0000: Informational denied delete"

    @pytest.mark.parametrize(("ts", "utc"), [
        (YEAR_1_NS, "0001-01-01T00:00:00.000000000Z"),  # UTC still shows year 1; local time (year 0) does not
        (YEAR_1_NS - 1_000_000_000, str(YEAR_1_NS - 1_000_000_000)),
        (10**30, str(10**30)),
        (-(10**30), str(-(10**30))),
    ])
    def test_time_the_calendar_cannot_show_is_written_as_nanoseconds(self, ts: int, utc: str) -> None:
        """A time before year 1 or after 9999 (in local time, for the text prefix) is printed as its nanoseconds."""
        alert = make(ts=ts)
        text = alert.text_line()
        doc = orjson.loads(alert.falco_json_line())
        assert text == f"{ts}: Informational denied delete"
        assert doc["output"] == text and doc["output_fields"]["evt.time"] == str(ts)
        assert doc["time"] == utc

    def test_wide_integers_in_output_fields_are_written_as_digits(self) -> None:
        """Integers beyond 64 bits become their exact decimal text; every other value keeps its JSON type."""
        alert = make()
        alert.output_fields.update({"t.big": 2**64, "t.neg": -(2**63) - 1, "t.list": [1, 2**70], "t.max": 2**64 - 1})
        fields = orjson.loads(alert.falco_json_line())["output_fields"]
        assert (fields["t.big"], fields["t.neg"], fields["t.list"]) == (str(2**64), str(-(2**63) - 1), [1, str(2**70)])
        assert (fields["t.max"], fields["t.num"], fields["t.flag"], fields["t.other"]) == (2**64 - 1, 403, True, None)
        assert fields["evt.time"] == TS

    def test_bytes_that_were_not_utf8_are_written_as_replacement_characters(self) -> None:
        """A kernel path holding a non-UTF-8 byte (decoded with surrogateescape) prints U+FFFD, as Falco does."""
        name = b"/tmp/caf\xe9".decode("utf-8", "surrogateescape")
        alert = make(output=f"opened {name}")
        alert.output_fields["fd.name"] = name
        doc = orjson.loads(alert.falco_json_line())
        assert doc["output_fields"]["fd.name"] == "/tmp/caf\ufffd"
        assert doc["output"].endswith("opened /tmp/caf\ufffd")
        assert alert.text_line().endswith("opened /tmp/caf\ufffd")

    def test_documents_of_several_alerts_are_written_whole(self) -> None:
        """A batch (the HTTP output's array, tail's object with seq) with one odd alert loses none of the others."""
        odd = make(ts=YEAR_9999_NS)
        batch = orjson.loads(json_bytes([make().falco_json(), odd.falco_json(), make().falco_json()]))
        assert [a["output_fields"]["evt.time"] for a in batch] == [TS, str(YEAR_9999_NS), TS]
        assert orjson.loads(json_bytes({**odd.falco_json(), "seq": 7}))["seq"] == 7
