"""Load a plugin library: dlopen, symbols, API version check, what it declares; then `plugin_init`/`plugin_destroy`.

The checks are plugin_loader.c's: every required symbol present, and a required API version with our major, a
minor not above ours and, at the same minor, a patch not above ours. Every failure is a PluginLoadError naming the
library, with the plugin's own `plugin_get_last_error()` text when the plugin had a say.
"""

from __future__ import annotations

import ctypes
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import structlog

from agent.errors import AgentError
from agent.plugins.native import abi
from agent.plugins.native.fields import FieldsError, PluginField, parse_fields

log = structlog.get_logger(__name__)

_VERSION_RE = re.compile(r"(\d+)\.(\d+)\.(\d+)")
_ERROR_BYTES = 1024  # PLUGIN_MAX_ERRLEN
_LEVELS = {
    abi.LogSeverity.FATAL: "critical", abi.LogSeverity.CRITICAL: "critical", abi.LogSeverity.ERROR: "error",
    abi.LogSeverity.WARNING: "warning", abi.LogSeverity.NOTICE: "info", abi.LogSeverity.INFO: "info",
}


class PluginLoadError(AgentError):
    """A plugin library cannot be loaded or initialised; the message names the library and what to do."""


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """What a plugin library declares about itself."""

    path: str
    name: str
    version: str
    description: str
    contact: str
    required_api_version: str
    capabilities: abi.Capability
    #: Sourcing: the plugin id and the event source its events belong to (0 and "" without sourcing).
    id: int = 0
    event_source: str = ""
    #: Extraction: the fields, and the event sources they apply to (empty: see `extracts_from`).
    fields: tuple[PluginField, ...] = ()
    extract_event_sources: tuple[str, ...] = ()
    #: The JSON schema of init_config, when the plugin publishes one.
    init_schema: str | None = None

    def extracts_from(self, source: str) -> bool:
        """Whether this plugin's fields apply to events of `source`, by the rule of plugin_api.h."""
        if abi.Capability.EXTRACTION not in self.capabilities:
            return False
        if self.extract_event_sources:
            return source in self.extract_event_sources
        if self.event_source:
            return source == self.event_source
        return True


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", "replace")


def check_api_version(path: str, required: str) -> None:
    """Refuse a plugin whose required API version this host does not implement (plugin_loader.c's rule)."""
    match = _VERSION_RE.fullmatch(required.strip())
    if match is None:
        raise PluginLoadError(f"plugin library {path} gives an invalid required API version '{required}': "
                              "expected MAJOR.MINOR.PATCH; the library is broken or not a Falco plugin")
    major, minor, patch = (int(part) for part in match.groups())
    ours_major, ours_minor, ours_patch = abi.API_VERSION
    if major != ours_major:
        why = "a different major version"
    elif (minor, patch) > (ours_minor, ours_patch):
        why = "a newer version"
    else:
        return
    raise PluginLoadError(f"plugin library {path} requires plugin API {required}, {why} than the "
                          f"{abi.API_VERSION_TEXT} this agent implements: use a release of the plugin built for "
                          f"API {ours_major}.x up to {abi.API_VERSION_TEXT}")


class PluginLibrary:
    """A loaded plugin library: its functions and its `info`. `init()` makes a working plugin of it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(Path(path))
        try:
            self._lib = ctypes.CDLL(self.path, mode=os.RTLD_LAZY | os.RTLD_LOCAL)
        except OSError as exc:
            raise PluginLoadError(f"cannot load plugin library {self.path}: {exc}; check the path and that it "
                                  "is a shared library built for this machine") from None
        self._functions: dict[str, Any] = {}
        for symbol in abi.SYMBOLS:
            try:
                function = getattr(self._lib, f"plugin_{symbol.name}")
            except AttributeError:
                if symbol.name == "get_required_api_version":
                    raise PluginLoadError(f"{self.path} is not a Falco plugin: it exports no "
                                          "plugin_get_required_api_version") from None
                if symbol.required:
                    raise PluginLoadError(f"plugin library {self.path} lacks the required symbol "
                                          f"plugin_{symbol.name}; it is incomplete or not a Falco plugin") from None
                continue
            function.restype = symbol.restype
            function.argtypes = symbol.argtypes
            self._functions[symbol.name] = function
        check_api_version(self.path, _text(self.function("get_required_api_version")()))
        self.info = self._read_info()

    def function(self, name: str) -> Any:
        """The ctypes function `plugin_<name>`; KeyError when the library does not export it."""
        return self._functions[name]

    def has(self, name: str) -> bool:
        return name in self._functions

    def _call_text(self, name: str) -> str:
        return _text(self.function(name)())

    def _capabilities(self) -> abi.Capability:
        caps = abi.Capability.NONE
        if all(self.has(n) for n in ("open", "close", "next_batch")):
            caps |= abi.Capability.SOURCING
        if self.has("get_fields") and self.has("extract_fields"):
            caps |= abi.Capability.EXTRACTION
        for name, cap in (("parse_event", abi.Capability.PARSING), ("set_async_event_handler", abi.Capability.ASYNC),
                          ("capture_open", abi.Capability.CAPTURE_LISTENING)):
            if self.has(name):
                caps |= cap
        return caps

    def _read_info(self) -> PluginInfo:
        caps = self._capabilities()
        name = self._call_text("get_name")
        if caps == abi.Capability.NONE:
            raise PluginLoadError(f"plugin {name} ({self.path}) implements no capability (neither sourcing nor "
                                  "field extraction): nothing to load")
        fields: tuple[PluginField, ...] = ()
        extract_sources: tuple[str, ...] = ()
        if abi.Capability.EXTRACTION in caps:
            try:
                fields = parse_fields(self._call_text("get_fields"))
            except FieldsError as exc:
                raise PluginLoadError(f"plugin {name} ({self.path}): {exc}; the plugin is broken") from None
            if self.has("get_extract_event_sources"):
                extract_sources = self._string_list(name, "get_extract_event_sources")
        schema_type = ctypes.c_int32(abi.SchemaType.NONE)
        schema = _text(self.function("get_init_schema")(ctypes.byref(schema_type))) if self.has(
            "get_init_schema") else ""
        return PluginInfo(
            path=self.path, name=name, version=self._call_text("get_version"),
            description=self._call_text("get_description"), contact=self._call_text("get_contact"),
            required_api_version=self._call_text("get_required_api_version"), capabilities=caps,
            id=self.function("get_id")() if self.has("get_id") else 0,
            event_source=self._call_text("get_event_source") if self.has("get_event_source") else "",
            fields=fields, extract_event_sources=extract_sources,
            init_schema=schema if schema_type.value == abi.SchemaType.JSON and schema.strip() else None,
        )

    def _string_list(self, name: str, function: str) -> tuple[str, ...]:
        text = self._call_text(function)
        try:
            value = orjson.loads(text) if text.strip() else []
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise PluginLoadError(f"plugin {name} ({self.path}): plugin_{function} returned {text!r}, not a JSON "
                                  "array of strings; the plugin is broken")
        return tuple(value)

    def init(self, config: str | Mapping[str, Any] | None = None) -> Plugin:
        """Initialise the plugin with `config` (a string, or a mapping sent as JSON), checked against its init
        schema when it has one; PluginLoadError carries the plugin's reason when it refuses."""
        text = orjson.dumps(config).decode() if isinstance(config, Mapping) else (config or "")
        if self.info.init_schema is not None:
            text = self._validated(text or "{}", self.info.init_schema)
        return Plugin(self, text)

    def _validated(self, text: str, schema_text: str) -> str:
        where = f"plugin {self.info.name} ({self.path})"
        try:
            schema = orjson.loads(schema_text)
            validator = jsonschema.validators.validator_for(schema)(schema)
        except (orjson.JSONDecodeError, jsonschema.SchemaError, TypeError) as exc:
            raise PluginLoadError(f"{where} publishes an invalid init schema ({exc}); the plugin is broken") from None
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise PluginLoadError(f"{where}: init_config is not JSON ({exc}); the plugin's init schema expects "
                                  "a JSON document") from None
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is not None:
            at = "/".join(map(str, error.absolute_path)) or "the top level"
            raise PluginLoadError(f"{where}: init_config does not match the plugin's init schema at {at}: "
                                  f"{error.message}; fix init_config")
        return text


class _Host:
    """The callbacks and inputs the host hands a plugin at init; kept alive as long as the plugin may call them."""

    def __init__(self, plugin_name: str) -> None:
        self.last_error = ctypes.create_string_buffer(_ERROR_BYTES)
        self.owner = ctypes.c_char(0)  # an opaque, non-NULL owner the plugin passes back
        self.no_tables = (abi.TableInfo * 1)()
        self.owner_last_error = abi.OWNER_LAST_ERROR_FN(lambda _owner: ctypes.addressof(self.last_error))
        self.log_fn = abi.LOG_FN(self._logger(plugin_name))
        self.tables = abi.InitTablesInput(
            list_tables=abi.LIST_TABLES_FN(self._list_tables), get_table=abi.GET_TABLE_FN(self._get_table),
            add_table=abi.ADD_TABLE_FN(self._add_table))

    @property
    def owner_address(self) -> int:
        return ctypes.addressof(self.owner)

    def _fail(self, message: str) -> None:
        self.last_error.value = message.encode()[: _ERROR_BYTES - 1]

    # The agent keeps no libsinsp state tables (threads, fds...): a plugin that needs one fails its init with
    # this reason instead of crashing on a NULL vtable.
    def _list_tables(self, _owner: int | None, ntables: Any) -> int:
        ntables[0] = 0
        return ctypes.addressof(self.no_tables)

    def _get_table(self, _owner: int | None, name: bytes | None, _key_type: int) -> None:
        self._fail(f"this agent shares no state tables with plugins (asked for '{_text(name)}')")

    def _add_table(self, _owner: int | None, _table: int | None) -> int:
        self._fail("this agent does not take state tables from plugins")
        return int(abi.Rc.FAILURE)

    @staticmethod
    def _logger(plugin_name: str) -> Callable[[int | None, bytes | None, bytes | None, int], None]:
        def log_fn(_owner: int | None, component: bytes | None, msg: bytes | None, severity: int) -> None:
            level = _LEVELS.get(severity, "debug")  # type: ignore[call-overload]
            getattr(log, level)("plugin_log", plugin=plugin_name, component=_text(component) or plugin_name,
                                message=_text(msg).rstrip("\n"))
        return log_fn


class Plugin:
    """An initialised plugin: its state pointer, the library's functions, and `destroy()` to end it."""

    def __init__(self, library: PluginLibrary, config: str) -> None:
        self.library = library
        self.info = library.info
        self._host = _Host(self.info.name)
        init_input = abi.InitInput(config=config.encode(), owner=self._host.owner_address,
                                   get_owner_last_error=self._host.owner_last_error,
                                   tables=ctypes.pointer(self._host.tables), log_fn=self._host.log_fn)
        rc = ctypes.c_int32(abi.Rc.FAILURE)  # a plugin that sets no rc failed, as libsinsp assumes
        self.state: int | None = library.function("init")(ctypes.addressof(init_input), ctypes.byref(rc))
        if rc.value != abi.Rc.SUCCESS:
            reason = self.last_error() if self.state else "no reason given (plugin_init returned no state)"
            self.destroy()
            raise PluginLoadError(f"plugin {self.info.name} ({self.info.path}) failed to initialise: {reason}; "
                                  "check its init_config")
        log.info("plugin_initialised", plugin=self.info.name, version=self.info.version, path=self.info.path)

    def last_error(self) -> str:
        """The plugin's `plugin_get_last_error()` text, or a placeholder when it gives none."""
        return _text(self.library.function("get_last_error")(self.state)) or "(the plugin gave no error text)"

    def destroy(self) -> None:
        """Free the plugin's state; safe to call twice."""
        if self.state is not None:
            state, self.state = self.state, None
            self.library.function("destroy")(state)
