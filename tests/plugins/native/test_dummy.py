"""Falco's reference plugin dummy_c end to end: events until EOF, extraction, and its rule in the engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.builtin_sources import new_engine
from agent.plugins.native import events
from agent.plugins.native.extract import FieldExtraction
from agent.plugins.native.library import PluginLibrary
from agent.plugins.native.source import PluginSource
from agent.plugins.native.spec import plugin_source_spec
from tests.support.plugins import Built, ListSink

JITTER = 10


def test_dummy_c_events_and_fields(built: Built, sink: ListSink) -> None:
    plugin = PluginLibrary(built.dummy_c).init({"jitter": JITTER})
    try:
        source = PluginSource(plugin, '{"start": 1, "maxEvents": 20}', hostname="h")
        source.start(sink)
        assert source.wait_finished(10)
        source.stop()
        assert source.failure() is None
        assert source.metrics()["eof"] == 1 and source.metrics()["events"] == 20
        extraction = FieldExtraction(plugin, "dummy_c", [("dummy.value", None), ("dummy.strvalue", None),
                                                         ("dummy.divisible", "3")])
        previous = 1  # open param "start"
        for event in sink.events:
            assert (event.source, event.type, event.hostname) == ("dummy_c", "pluginevent", "h")
            parsed = events.parse_plugin_event(event.payload)
            assert parsed.plugin_id == 4 and parsed.ts == event.ts_ns != events.UNSET
            extraction.fill(event)
            value = event.cache["dummy.value"]
            # Each event adds 1 plus a jitter in [0, jitter] to the sample (dummy_c README).
            assert 1 <= value - previous <= 1 + JITTER
            assert parsed.data == value.to_bytes(8, "little")
            assert event.cache["dummy.strvalue"] == str(value)
            assert event.cache["dummy.divisible[3]"] == (1 if value % 3 == 0 else 0)
            previous = value
        assert len(sink.events) == 20
        assert extraction.calls == 20  # one ABI call per event for all three fields
    finally:
        plugin.destroy()


def test_dummy_c_rule_through_the_engine(built: Built, reference: Path, sink: ListSink) -> None:
    """The plugin's own rules file loads against the plugin's SourceSpec and every event alerts (value > 1)."""
    plugin = PluginLibrary(built.dummy_c).init("")
    try:
        extraction = FieldExtraction(plugin, "dummy_c")
        engine = new_engine(hostname="h")
        engine.add_source(plugin_source_spec(plugin, [extraction]))
        result = engine.load_rules_files([reference / "plugins" / "dummy_c" / "dummy_c_rules.yaml"])
        assert result.successful, result.as_text()
        source = PluginSource(plugin, '{"start": 1, "maxEvents": 5}')
        source.start(sink)
        assert source.wait_finished(10)
        source.stop()
        alerts = [alert for event in sink.events for alert in engine.process(event)]
        assert len(alerts) == 5
        assert alerts[0].output.endswith(f"triggered (value={sink.events[0].cache['dummy.value']})")
        assert extraction.calls == 5
    finally:
        plugin.destroy()


def test_unknown_plugin_field_is_a_rule_error(built: Built) -> None:
    plugin = PluginLibrary(built.dummy_c).init("")
    try:
        extraction = FieldExtraction(plugin, "dummy_c")
        with pytest.raises(ValueError, match=r"no field 'dummy\.nope'"):
            extraction.request("dummy.nope", None)
    finally:
        plugin.destroy()
