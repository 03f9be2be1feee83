"""Falco's alert shapes: the JSON object and the escaped text line."""

from __future__ import annotations

import re

import orjson

from agent.alert import Alert
from agent.generic_fields import format_time
from agent.priority import Priority

TS = 1_714_557_600_123_456_789  # 2024-05-01T10:00:00.123456789Z


def make(output: str = "denied delete", **kwargs) -> Alert:
    fields = {"t.name": "alice", "t.num": 403, "t.flag": True, "t.tags": ["b", "a"], "t.other": None}
    return Alert(rule="Secret Deleted", priority=Priority.INFORMATIONAL, source="test", ts_ns=kwargs.pop("ts", TS),
                 output=output, output_fields=fields, hostname="node-7", tags=("secrets", "k8s"), **kwargs)


class TestFalcoJson:
    def test_exact_shape(self) -> None:
        """Keys, canonical priority, sorted tags, typed output_fields with evt.time as integer nanoseconds."""
        alert = make()
        assert orjson.loads(alert.falco_json_line()) == {
            "hostname": "node-7",
            "output": f"{format_time(TS)}: Informational denied delete",
            "output_fields": {"evt.time": TS, "t.flag": True, "t.name": "alice", "t.num": 403,
                              "t.other": None, "t.tags": ["b", "a"]},
            "priority": "Informational",
            "rule": "Secret Deleted",
            "source": "test",
            "tags": ["k8s", "secrets"],
            "time": "2024-05-01T10:00:00.123456789Z",
        }

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
