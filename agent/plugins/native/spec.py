"""The SourceSpec of a source plugin's event source: the generic `evt.*` fields plus every plugin field for it."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence

from agent.event import Event
from agent.fields import Extractor, FieldSpec, FieldTable, Value
from agent.generic_fields import generic_fields
from agent.plugins.native import abi
from agent.plugins.native.extract import FieldExtraction
from agent.plugins.native.library import Plugin, PluginLoadError
from agent.source import SourceSpec


def plugin_source_spec(source: Plugin, extractions: Sequence[FieldExtraction]) -> SourceSpec:
    """The source plugin's event source with the fields of `extractions` (its own and extractor-only plugins').

    Two plugins declaring the same field for the source is refused, as Falco refuses it.
    """
    name = source.info.event_source
    owners: dict[str, str] = {}
    specs: list[FieldSpec] = []
    for extraction in extractions:
        if extraction.source != name:
            raise PluginLoadError(f"plugin {extraction.plugin.info.name}'s fields are bound to source "
                                  f"'{extraction.source}', not '{name}'")
        for spec in extraction.specs():
            other = owners.setdefault(spec.name, extraction.plugin.info.name)
            if other != extraction.plugin.info.name:
                raise PluginLoadError(f"plugins {other} and {extraction.plugin.info.name} both declare field "
                                      f"'{spec.name}' for source '{name}': load only one of them")
            specs.append(spec)
    plugins = tuple(dict.fromkeys((p.info.name, p.info.version) for p in (source, *(e.plugin for e in extractions))))
    info = _event_text(source) if source.library.has("event_to_string") else None
    return SourceSpec(name, FieldTable([*generic_fields(plugin_name=source.info.name, plugin_info=info), *specs]),
                      plugins=plugins)


def _event_text(plugin: Plugin) -> Extractor:
    """`evt.plugininfo`: the plugin's own one-line text of an event (`plugin_event_to_string`)."""
    to_string = plugin.library.function("event_to_string")
    event_input = abi.EventInput(evtsrc=plugin.info.event_source.encode())
    address = ctypes.addressof(event_input)
    lock = threading.Lock()  # the returned text lives until the plugin's next call

    def text(event: Event) -> Value:
        with lock:
            event_input.evt = event.payload
            event_input.evtnum = event.num
            value = to_string(plugin.state, address)
            return value.decode("utf-8", "replace") if value else None
    return text
