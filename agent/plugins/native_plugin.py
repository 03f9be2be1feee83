"""A native plugin (a Falco plugin library, `.so`) as a registry Plugin, loaded as Falco loads it.

The library is loaded and initialised when the configuration loads, with the entry's `init_config` (a mapping,
sent as JSON, or a string as written), checked by the plugin's own init schema. Then:

* a source plugin provides its event source: Falco's generic `evt.*` fields (with `evt.plugininfo` when it
  describes its events), its own fields when it extracts from its source, and one live input, `PluginSource`,
  opened with the entry's `open_params`;
* an extractor-only plugin adds its fields to each loaded source among the extract event sources it declares
  (libsinsp's rule). Those must be sources of native plugins: the payload of the agent's other sources is no
  libscap event, and the registry refuses the combination (`Plugin.scap_events`).

Capabilities this host does not drive (parsing, async events, capture listening) are logged when the plugin
loads. `plugin_destroy` runs when the agent stops (`Plugin.close`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import structlog

from agent.config.load import section_value
from agent.config.schema import PluginConfig
from agent.errors import ConfigError
from agent.event import Event
from agent.fields import Extractor, ExtractorFactory, FieldSpec, Value
from agent.plugins.api import LiveContext, NoConfig, Plugin
from agent.plugins.native import abi
from agent.plugins.native.extract import FieldExtraction
from agent.plugins.native.library import Plugin as Initialised
from agent.plugins.native.library import PluginLibrary, PluginLoadError
from agent.plugins.native.source import PluginSource, check_sourcing
from agent.plugins.native.spec import plugin_source_spec
from agent.source import LiveSource

log = structlog.get_logger(__name__)

_UNDRIVEN = abi.Capability.PARSING | abi.Capability.ASYNC | abi.Capability.CAPTURE_LISTENING


def load_native(entry: PluginConfig, key: str) -> Plugin[Any]:
    """The Plugin of the native library of `entry` (configured at `key`, `plugins[0]`), initialised;
    ConfigError naming the key, the library and the plugin's own error text."""
    try:
        library = PluginLibrary(entry.library_path)
    except PluginLoadError as exc:
        raise ConfigError(f"{key}.library_path: {exc}") from None
    try:
        initialised = library.init(_init_config(entry, key))
    except PluginLoadError as exc:
        raise ConfigError(f"{key}.init_config: {exc}") from None
    try:
        return _plugin(initialised)
    except (PluginLoadError, ValueError) as exc:  # ValueError: a name or version the Plugin API refuses
        initialised.destroy()
        raise ConfigError(f"{key}.library_path: {exc}") from None


class NativePluginSource(PluginSource):
    """A source plugin's live input, whose metrics count the extraction of the plugin's own fields too."""

    def __init__(self, plugin: Initialised, extraction: FieldExtraction | None, context: LiveContext) -> None:
        super().__init__(plugin, context.open_params, hostname=context.hostname)
        self._extraction = extraction

    def metrics(self) -> dict[str, Any]:
        counters = super().metrics()
        if self._extraction is not None:
            counters.update(self._extraction.metrics())
        return counters


def _init_config(entry: PluginConfig, key: str) -> str | Mapping[str, Any] | None:
    value = section_value(entry.init_config)
    if value is None or isinstance(value, str | Mapping):
        return value
    raise ConfigError(f"{key}.init_config: a native plugin takes a mapping (sent as JSON) or a string, not "
                      f"{type(value).__name__}")


def _plugin(plugin: Initialised) -> Plugin[Any]:
    info = plugin.info
    undriven = info.capabilities & _UNDRIVEN
    if undriven:
        log.warning("plugin_capabilities_not_driven", plugin=info.name, capabilities=str(undriven),
                    hint="this agent drives event sourcing and field extraction only")
    common: dict[str, Any] = {"name": info.name, "version": info.version, "config": NoConfig, "scap_events": True,
                              "close": plugin.destroy}
    if abi.Capability.SOURCING in info.capabilities:
        return _source_plugin(plugin, common)
    if not info.extract_event_sources:
        raise PluginLoadError(f"plugin {info.name} ({info.path}) extracts fields but names no event sources to "
                              "extract from (plugin_get_extract_event_sources): this agent needs them named")
    extractions = {source: FieldExtraction(plugin, source) for source in info.extract_event_sources}
    return Plugin(extract_sources=info.extract_event_sources, fields=_fields_by_source(extractions), **common)


def _source_plugin(plugin: Initialised, common: dict[str, Any]) -> Plugin[Any]:
    info = plugin.info
    check_sourcing(info)
    others = [name for name in info.extract_event_sources if name != info.event_source]
    if others:
        raise PluginLoadError(f"plugin {info.name} ({info.path}) provides source '{info.event_source}' and also "
                              f"extracts from {', '.join(others)}: this agent offers a source plugin's fields on its "
                              "own source only")
    own = FieldExtraction(plugin, info.event_source) if info.extracts_from(info.event_source) else None
    spec = plugin_source_spec(plugin, [own] if own is not None else [])

    def live(_config: NoConfig, context: LiveContext) -> list[LiveSource]:
        return [NativePluginSource(plugin, own, context)]

    return Plugin(source=spec.name, fields=tuple(spec.fields), falco_plugins=spec.plugins, live=live, **common)


def _fields_by_source(extractions: Mapping[str, FieldExtraction]) -> tuple[FieldSpec, ...]:
    """The plugin's fields for events of any source of `extractions`: binding one binds it for each source
    (the request of each extraction), extracting reads the event's own source's."""
    if len(extractions) == 1:
        return tuple(next(iter(extractions.values())).specs())
    per_source = {source: {spec.name: spec for spec in extraction.specs()}
                  for source, extraction in extractions.items()}
    first = next(iter(per_source.values()))

    def dispatch(name: str) -> ExtractorFactory:
        def bind(arg: str | None) -> Extractor:
            bound = {source: specs[name].extractor(arg) for source, specs in per_source.items()}

            def extract(event: Event) -> Value:
                extractor = bound.get(event.source)
                return extractor(event) if extractor is not None else None
            return extract
        return bind

    return tuple(dataclasses.replace(spec, extractor=dispatch(spec.name)) for spec in first.values())
