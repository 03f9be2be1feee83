"""The scap plugin-event layout is built and parsed byte for byte."""

from __future__ import annotations

import struct

import pytest

from agent.plugins.native import events


def test_plugin_event_layout_is_exact() -> None:
    raw = events.build_plugin_event(7, b"hello", ts=123, tid=456)
    expected = (struct.pack("<QQIHI", 123, 456, 43, 322, 2) + struct.pack("<III", 4, 5, 7) + b"hello")
    assert raw == expected
    assert events.PAYLOAD_OFFSET == 38  # PLUGIN_EVENT_PAYLOAD_OFFSET of plugin_api.h
    assert events.parse_header(raw) == events.EventHeader(123, 456, 43, 322, 2)
    assert events.parse_plugin_event(raw) == events.PluginEvent(123, 456, 7, b"hello")


@pytest.mark.parametrize("data", [b"", b"\x00" * 8, bytes(range(256)) * 5])
def test_round_trip(data: bytes) -> None:
    raw = events.build_plugin_event(999, data)
    parsed = events.parse_plugin_event(raw)
    assert (parsed.ts, parsed.tid, parsed.plugin_id, parsed.data) == (events.UNSET, events.UNSET, 999, data)
    assert events.build_plugin_event(parsed.plugin_id, parsed.data, ts=parsed.ts, tid=parsed.tid) == raw


def test_stamping_rewrites_only_its_bytes() -> None:
    raw = events.build_plugin_event(0, b"x")
    stamped = events.with_plugin_id(events.with_ts(raw, 42), 5)
    assert events.parse_plugin_event(stamped) == events.PluginEvent(42, events.UNSET, 5, b"x")
    assert len(stamped) == len(raw)


@pytest.mark.parametrize(("raw", "message"), [
    (b"\x00" * 10, "shorter than its 26-byte header"),
    (events.build_plugin_event(1, b"abc")[:-1], "header says 41 bytes"),
    (struct.pack("<QQIHI", 0, 0, 26, 3, 0), "type 3 with 0 parameters is not a plugin event"),
    (struct.pack("<QQIHI", 0, 0, 42, 322, 2) + struct.pack("<III", 4, 9, 1) + b"abcd", "lengths 4 and 9"),
])
def test_malformed_events_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(events.MalformedEvent, match=message):
        events.parse_plugin_event(raw)
