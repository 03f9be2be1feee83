"""The C test plugins: sourcing (timeout, EOF, failure mid-stream), typed extraction, an extractor-only plugin."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.builtin_sources import new_engine
from agent.engine.append_output import AppendOutput
from agent.engine.engine import Engine, RulesText
from agent.event import Event
from agent.event_queue import EventQueue
from agent.plugins.native import events
from agent.plugins.native.extract import FieldExtraction
from agent.plugins.native.library import Plugin, PluginLibrary, PluginLoadError
from agent.plugins.native.source import PluginSource
from agent.plugins.native.spec import plugin_source_spec
from tests.support.plugins import Built, ListSink


@pytest.fixture
def source_plugin(built: Built, request: pytest.FixtureRequest) -> Iterator[Plugin]:
    config: dict[str, Any] = getattr(request, "param", {"count": 6})
    plugin = PluginLibrary(built.source).init(config)
    yield plugin
    plugin.destroy()


def _read_all(plugin: Plugin, sink: ListSink) -> PluginSource:
    source = PluginSource(plugin, "", timeout_wait_s=0.001)
    source.start(sink)
    assert source.wait_finished(10)
    source.stop()
    return source


def test_events_until_eof(source_plugin: Plugin, sink: ListSink) -> None:
    source = _read_all(source_plugin, sink)
    assert source.failure() is None
    metrics = source.metrics()
    assert (metrics["events"], metrics["batches"], metrics["timeouts"], metrics["eof"]) == (6, 3, 1, 1)
    assert [e.ts_ns for e in sink.events] == [1001, 1002, 1003, 1004, 1005, 1006]
    for number, event in enumerate(sink.events, start=1):
        parsed = events.parse_plugin_event(event.payload)
        # The plugin left the id 0; the host put the plugin's own in, as libscap does.
        assert (parsed.plugin_id, parsed.data, event.source) == (999, f"evt-{number}".encode(), "testsrc")


@pytest.mark.parametrize("source_plugin", [{"count": 9, "fail_at": 5}], indirect=True)
def test_next_batch_failure_mid_stream(source_plugin: Plugin, sink: ListSink) -> None:
    source = _read_all(source_plugin, sink)
    assert [events.parse_plugin_event(e.payload).data for e in sink.events] == [b"evt-1", b"evt-2", b"evt-3",
                                                                                  b"evt-4"]
    failure = source.failure()
    assert failure is not None and "disk on fire at event 5" in failure and "testsrc" in failure


def test_restart_after_eof_reopens(source_plugin: Plugin, sink: ListSink) -> None:
    _read_all(source_plugin, sink)
    _read_all(source_plugin, sink)
    assert len(sink.events) == 12


def test_backpressure_and_stop_with_a_full_queue(built: Built) -> None:
    """A queue that is never drained blocks the worker in put, yet stop() returns promptly."""
    plugin = PluginLibrary(built.source).init({"count": 1000})
    try:
        queue = EventQueue(4)
        source = PluginSource(plugin, "", batch_events=4, timeout_wait_s=0.001)
        source.start(queue)
        deadline = time.monotonic() + 5
        while queue.depth < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert queue.depth == 4
        started = time.monotonic()
        source.stop()
        assert time.monotonic() - started < 2 and source.failure() is None
        assert source.metrics()["events"] < 1000
    finally:
        plugin.destroy()


def _extracted(plugin: Plugin, sink: ListSink, fields: list[tuple[str, str | None]]) -> tuple[FieldExtraction,
                                                                                               list[Event]]:
    _read_all(plugin, sink)
    extraction = FieldExtraction(plugin, "testsrc", fields)
    for event in sink.events:
        extraction.fill(event)
    return extraction, sink.events


def test_typed_values(source_plugin: Plugin, sink: ListSink) -> None:
    wanted: list[tuple[str, str | None]] = [("test.num", None), ("test.msg", None), ("test.even", None),
                                            ("test.pair", None), ("test.ip", None), ("test.key", "k1"),
                                            ("test.absent", None)]
    extraction, evs = _extracted(source_plugin, sink, wanted)
    assert evs[2].cache == {"test.num": 3, "test.msg": "evt-3", "test.even": False, "test.pair": (3, 6),
                            "test.ip": ipaddress.ip_address("10.0.0.3"), "test.key[k1]": "key=k1",
                            "test.absent": None}
    assert evs[3].cache["test.even"] is True
    assert extraction.calls == 6 and extraction.failures == 0


@pytest.mark.parametrize("source_plugin", [{"count": 4, "extract_fail_at": 2}], indirect=True)
def test_extraction_failure_for_one_event(source_plugin: Plugin, sink: ListSink) -> None:
    with capture_logs() as logs:
        extraction, evs = _extracted(source_plugin, sink, [("test.num", None), ("test.msg", None)])
    assert [e.cache["test.num"] for e in evs] == [1, None, 3, 4]
    assert evs[1].cache["test.msg"] is None
    assert extraction.metrics() == {"extract_calls": 4, "extract_failures": 1, "fields_requested": 2}
    failed = [entry for entry in logs if entry["event"] == "plugin_extract_failed"]
    assert len(failed) == 1 and failed[0]["error"] == "cannot extract from event 2"


def test_rules_over_source_and_extractor_plugins(built: Built, source_plugin: Plugin, sink: ListSink) -> None:
    """An extractor-only plugin adds its fields to the source; each plugin makes one call per event."""
    extra = PluginLibrary(built.extractor).init("")
    try:
        own, added = FieldExtraction(source_plugin, "testsrc"), FieldExtraction(extra, "testsrc")
        spec = plugin_source_spec(source_plugin, [own, added])
        assert spec.plugins == (("testsrc", "1.2.3"), ("testextra", "0.1.0"))
        engine = new_engine(hostname="h")
        engine.add_source(spec)
        rules = """
- rule: Even upper
  desc: d
  condition: test.even = true and extra.upper startswith "EVT-" and extra.len = 5 and test.pair intersects (4)
  output: "n=%test.num u=%extra.upper"
  priority: WARNING
  source: testsrc
"""
        result = engine.load_rules([RulesText("t.yaml", rules)])
        assert result.successful, result.as_text()
        _read_all(source_plugin, sink)
        alerts = [a.output for e in sink.events for a in engine.process(e)]
        assert alerts == ["n=2 u=EVT-2", "n=4 u=EVT-4"]
        assert own.calls == 6 and added.calls == 3  # the extractor is asked only when the source's fields hold
    finally:
        extra.destroy()


def test_an_extractor_fields_addoutput_appends_it_with_suggested_output(built: Built, source_plugin: Plugin,
                                                                        sink: ListSink) -> None:
    """`addOutput` in a plugin's field list is Falco's suggestion: suggested_output appends the field to the outputs
    of the source's rules (unless the output names it already)."""
    extra = PluginLibrary(built.extractor).init("")
    try:
        spec = plugin_source_spec(source_plugin, [FieldExtraction(source_plugin, "testsrc"),
                                                  FieldExtraction(extra, "testsrc")])
        engine = Engine(hostname="h", append_output=(AppendOutput(suggested_output=True),))
        engine.add_source(spec)
        rules = """
- rule: Even
  desc: d
  condition: test.even = true
  output: "n=%test.num"
  priority: WARNING
  source: testsrc
- rule: Named
  desc: d
  condition: test.num = 3
  output: "u=%extra.upper"
  priority: WARNING
  source: testsrc
"""
        result = engine.load_rules([RulesText("t.yaml", rules)])
        assert result.successful, result.as_text()
        _read_all(source_plugin, sink)
        alerts = [a for e in sink.events for a in engine.process(e)]
        assert [a.output for a in alerts] == ["n=2 extra_upper=EVT-2", "u=EVT-3", "n=4 extra_upper=EVT-4",
                                              "n=6 extra_upper=EVT-6"]
        assert alerts[0].output_fields == {"test.num": 2, "extra.upper": "EVT-2"}
    finally:
        extra.destroy()


def test_wrong_source_and_missing_sourcing_are_refused(built: Built, source_plugin: Plugin) -> None:
    with pytest.raises(PluginLoadError, match="extracts no fields from events of source 'dummy_c'"):
        FieldExtraction(source_plugin, "dummy_c")
    extractor = PluginLibrary(built.extractor).init("")
    try:
        with pytest.raises(PluginLoadError, match=r"testextra .* has no event sourcing capability"):
            PluginSource(extractor)
    finally:
        extractor.destroy()


def test_a_blocked_next_batch_holds_no_other_thread(built: Built) -> None:
    """ctypes releases the GIL during the call: Python threads keep running while the worker waits inside the plugin."""
    plugin = PluginLibrary(built.source).init({"count": 2, "block_ms": 1500})
    try:
        sink = ListSink()
        source = PluginSource(plugin, "", timeout_wait_s=0.001)
        source.start(sink)
        time.sleep(0.2)  # the worker is inside its first next_batch now, which sleeps 1.5 s
        ticks = 0
        window_end = time.monotonic() + 0.5
        while time.monotonic() < window_end:
            ticks += 1
            time.sleep(0.001)
        assert source.metrics()["timeouts"] == 0  # the window fell inside that call
        assert ticks >= 50  # some 400; a call holding the GIL lets this thread tick a few times at most
        assert source.wait_finished(10)
        source.stop()
        assert len(sink.events) == 2
    finally:
        plugin.destroy()
