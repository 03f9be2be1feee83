"""Finding the plugin object an entry of `plugins` names by its `library_path`.

* `package.module:OBJECT`: a dotted path, imported;
* `NAME`: an entry point of the group `falco_agent.plugins` (installed with the plugin's package);
* a path ending in `.so`: a native plugin of Falco's C ABI, handed to `agent.plugins.native_plugin.load_native`.
"""

from __future__ import annotations

import importlib
from enum import Enum
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from agent.config.schema import PluginConfig
from agent.errors import ConfigError
from agent.plugins.api import Plugin
from agent.plugins.native_plugin import load_native

#: The entry-point group a Python plugin's package declares its plugin objects in.
ENTRY_POINT_GROUP = "falco_agent.plugins"
NATIVE_SUFFIX = ".so"


class LibraryKind(Enum):
    """How a `library_path` names its plugin."""

    NATIVE = "native shared library"
    DOTTED_PATH = "dotted path"
    ENTRY_POINT = "entry point"

    @classmethod
    def of(cls, library_path: str) -> LibraryKind:
        if library_path.endswith(NATIVE_SUFFIX):
            return cls.NATIVE
        return cls.DOTTED_PATH if ":" in library_path else cls.ENTRY_POINT


def installed_plugins() -> dict[str, EntryPoint]:
    """The entry points of the group `falco_agent.plugins`, by name."""
    return {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}


def find_plugin(entry: PluginConfig, key: str) -> Plugin[Any]:
    """The plugin object of `entry` (configured at `key`, `plugins[0]`); ConfigError saying what to fix."""
    path = entry.library_path
    kind = LibraryKind.of(path)
    if kind is LibraryKind.NATIVE:
        return load_native(entry, key)
    try:
        found = _import(path) if kind is LibraryKind.DOTTED_PATH else _entry_point(path, key)
    except ConfigError:
        raise
    except Exception as exc:  # the plugin's own import failed: said with its library_path, never a traceback
        raise ConfigError(f"{key}.library_path: loading {kind.value} '{path}' failed: {type(exc).__name__}: {exc}; "
                          "fix the plugin or its installation") from None
    if not isinstance(found, Plugin):
        raise ConfigError(f"{key}.library_path: '{path}' is a {type(found).__name__}, not an "
                          "agent.plugins.api.Plugin; point it at the plugin object")
    return found


def _import(path: str) -> object:
    module_name, _, attribute = path.partition(":")
    module = importlib.import_module(module_name)
    found: object = module
    for part in attribute.split("."):
        found = getattr(found, part)
    return found


def _entry_point(name: str, key: str) -> object:
    points = installed_plugins()
    point = points.get(name)
    if point is None:
        installed = ", ".join(sorted(points)) or "none"
        raise ConfigError(f"{key}.library_path: no plugin '{name}' in the entry-point group {ENTRY_POINT_GROUP} "
                          f"(installed: {installed}); install its package or write package.module:OBJECT")
    return point.load()
