"""Every plugin the agent runs, built-in or loaded, with its configuration: the one list the CLI, the runtime and
the engine's sources come from.

The built-in sources (agent.builtin_sources) are configured by their section of agent.yaml. Other plugins load
from `plugins` as Falco loads them: when `load_plugins` is absent every entry loads, in the order written; when
it is a list (even empty) only the entries it names load, in its order (the loader already refused a name no
entry has). Each loaded entry's `init_config` is checked against the plugin's config dataclass.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from agent.builtin_sources import BUILTIN_PLUGINS
from agent.config.load import check_section
from agent.config.schema import AgentConfig, PluginConfig
from agent.errors import ConfigError
from agent.plugins.api import LiveContext, NoConfig, Plugin
from agent.plugins.discovery import LibraryKind, find_plugin
from agent.source import LiveSource, RecordDecoder, SourceSpec

if TYPE_CHECKING:
    from agent.engine.engine import Engine

RuleValues = Callable[[str, str], frozenset[Any] | None]
RuleValuesNaming = Callable[[str, str, frozenset[str]], frozenset[Any] | None]


@dataclass(frozen=True, slots=True)
class LoadedPlugin:
    """A plugin with its checked config; `config_key` is where agent.yaml configures it."""

    plugin: Plugin[Any]
    config: Any
    config_key: str
    open_params: str = ""


class PluginRegistry:
    """The plugins of one agent, checked together: event sources and plugin names unique, extracted sources known."""

    def __init__(self, plugins: Sequence[LoadedPlugin]) -> None:
        self.plugins = tuple(plugins)
        self._check()

    def source_names(self) -> list[str]:
        """The event sources the agent can run, built-in ones first."""
        return [loaded.plugin.source for loaded in self.plugins
                if loaded.plugin.source and not loaded.plugin.inputs_only]

    def specs(self) -> list[SourceSpec]:
        """Every event source as the engine sees it, with the fields extracting plugins add to it."""
        specs = {spec.name: spec for loaded in self.plugins if (spec := loaded.plugin.source_spec()) is not None}
        for loaded in self.plugins:
            plugin = loaded.plugin
            if plugin.inputs_only:  # its events are the defining plugin's: only its name counts as loaded
                spec = specs[plugin.source]
                specs[plugin.source] = replace(spec, plugins=(*spec.plugins, *plugin.reported_plugins))
            for name in plugin.extract_sources:
                spec = specs.get(name)
                if spec is None:  # as in Falco: it adds fields to the loaded ones of its sources
                    continue
                specs[name] = replace(spec, fields=spec.fields.with_fields(plugin.fields),
                                      plugins=(*spec.plugins, *plugin.reported_plugins))
        return list(specs.values())

    def config_key(self, source: str) -> str:
        """Where agent.yaml configures the inputs of event source `source`."""
        return next(loaded.config_key for loaded in self.plugins
                    if loaded.plugin.source == source and not loaded.plugin.inputs_only)

    def live_sources(self, *, hostname: str, rule_values: RuleValues,
                     rule_values_naming: RuleValuesNaming | None = None,
                     engine: Callable[[], Engine | None] = lambda: None,
                     selected: Collection[str] | None = None) -> dict[str, list[LiveSource]]:
        """The live inputs the configuration enables, not yet started, per event source; only the `selected`
        event sources are built (None: all), so a source left out never touches the kernel or the network."""
        built: dict[str, list[LiveSource]] = {}
        for loaded in self.plugins:
            if not loaded.plugin.source or (selected is not None and loaded.plugin.source not in selected):
                continue
            live = loaded.plugin.live
            context = LiveContext(hostname=hostname, open_params=loaded.open_params, rule_values=rule_values,
                                  engine=engine)
            if rule_values_naming is not None:
                context = replace(context, rule_values_naming=rule_values_naming)
            inputs = built.setdefault(loaded.plugin.source, [])  # an inputs_only plugin adds to the source's inputs
            inputs += live(loaded.config, context) if live is not None else []
        return built

    def decoders(self, *, hostname: str) -> list[RecordDecoder]:
        """Decoders for recorded JSON input, in the order they are tried."""
        return [decoder(hostname) for loaded in self.plugins if (decoder := loaded.plugin.decoder) is not None]

    def stop(self) -> None:
        """Release every plugin (a native one's `plugin_destroy`); call it once their live inputs stopped."""
        for loaded in self.plugins:
            if loaded.plugin.close is not None:
                loaded.plugin.close()

    def _check(self) -> None:
        names: dict[str, str] = {}
        sources: dict[str, str] = {}
        for loaded in self.plugins:
            plugin, key = loaded.plugin, loaded.config_key
            if plugin.name in names:
                raise ConfigError(f"{key}: plugin '{plugin.name}' is already loaded by {names[plugin.name]}; "
                                  "load each plugin once")
            names[plugin.name] = key
            if plugin.inputs_only:
                continue
            if plugin.source in sources:
                raise ConfigError(f"{key}: plugin '{plugin.name}' provides event source '{plugin.source}', which "
                                  f"{sources[plugin.source]} provides already; load only one of them")
            if plugin.source:
                sources[plugin.source] = key
        scap_sources = {loaded.plugin.source for loaded in self.plugins if loaded.plugin.scap_events}
        for loaded in self.plugins:
            plugin = loaded.plugin
            if plugin.inputs_only and plugin.source not in sources:
                raise ConfigError(f"{loaded.config_key}: plugin '{plugin.name}' adds live inputs to event source "
                                  f"'{plugin.source}', which no loaded plugin provides; known event sources: "
                                  f"{', '.join(sources)}")
            known = [name for name in plugin.extract_sources if name in sources]
            if plugin.extract_sources and not known:
                raise ConfigError(f"{loaded.config_key}: plugin '{plugin.name}' extracts fields from "
                                  f"{', '.join(plugin.extract_sources)}, which no loaded plugin provides; known "
                                  f"event sources: {', '.join(sources)}")
            foreign = [name for name in known if plugin.scap_events and name not in scap_sources]
            if foreign:
                raise ConfigError(f"{loaded.config_key}: native plugin '{plugin.name}' extracts fields from "
                                  f"{', '.join(foreign)}, provided by {', '.join(sources[n] for n in foreign)}: a "
                                  "native plugin extracts only from events of native source plugins; leave it out "
                                  "of load_plugins")
        self._check_field_clashes()

    def _check_field_clashes(self) -> None:
        """As Falco: two plugins may not declare one field for one source (neither would silently win)."""
        declared: dict[str, dict[str, str]] = {}  # source -> field -> config key of the plugin declaring it
        for loaded in self.plugins:
            spec = loaded.plugin.source_spec()
            if spec is not None:
                declared[spec.name] = {field.name: loaded.config_key for field in spec.fields}
        for loaded in self.plugins:
            plugin = loaded.plugin
            for source in plugin.extract_sources:
                owners = declared.get(source, {})
                for field in plugin.fields:
                    other = owners.setdefault(field.name, loaded.config_key)
                    if other != loaded.config_key:
                        raise ConfigError(f"{loaded.config_key}: plugin '{plugin.name}' declares field '{field.name}' "
                                          f"for event source '{source}', which {other} declares already; load only "
                                          "one of them")


def load_registry(config: AgentConfig) -> PluginRegistry:
    """The built-in sources and the plugins `plugins`/`load_plugins` load, configured; ConfigError naming the key."""
    builtins = [LoadedPlugin(builtin.plugin, _section(config, builtin.config_key), builtin.config_key)
                for builtin in BUILTIN_PLUGINS]
    return PluginRegistry([*builtins, *(_load(index, entry) for index, entry in selected_entries(config))])


def selected_entries(config: AgentConfig) -> list[tuple[int, PluginConfig]]:
    """The `plugins` entries to load with their index, as Falco chooses them (see the module docstring)."""
    entries = list(enumerate(config.plugins))
    if config.load_plugins is None:
        return entries
    by_name = {entry.name: (index, entry) for index, entry in entries}
    return [by_name[name] for name in config.load_plugins]


def _load(index: int, entry: PluginConfig) -> LoadedPlugin:
    key = f"plugins[{index}]"
    plugin = find_plugin(entry, key)
    if plugin.name != entry.name:
        if plugin.close is not None:
            plugin.close()
        raise ConfigError(f"{key}.name: '{entry.name}', but the plugin at '{entry.library_path}' is named "
                          f"'{plugin.name}'; write name: {plugin.name}")
    # A native plugin took its init_config when it loaded, checked by the plugin's own init schema.
    native = LibraryKind.of(entry.library_path) is LibraryKind.NATIVE
    config = NoConfig() if native else check_section(plugin.config, entry.init_config)
    return LoadedPlugin(plugin, config, f"{key}.init_config", entry.open_params)


def _section(config: AgentConfig, key: str) -> Any:
    return functools.reduce(getattr, key.split("."), config)
