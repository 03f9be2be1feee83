"""Field extraction through a plugin: every (field, arg) the rules use, in ONE `plugin_extract_fields` call per event.

Rules bind their fields when they are compiled (at load); each binding adds its (field, arg) to the request. The
first field a rule asks of an event runs the call for all of them and stores every value in the event's cache,
under the key `agent.fields.FieldSpec.bind` caches by, so the other fields of that event cost a dict lookup.

A failed call leaves every field of that event None (not available: the rules' checks on them are false); the
plugin's error text is logged once per distinct text and counted.
"""

from __future__ import annotations

import ctypes
import ipaddress
import threading
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from agent.event import Event
from agent.fields import ArgKind, Extractor, ExtractorFactory, FieldFlag, FieldSpec, Value, field_key
from agent.plugins.native import abi
from agent.plugins.native.fields import PluginField
from agent.plugins.native.library import Plugin, PluginLoadError

log = structlog.get_logger(__name__)

#: Distinct error texts logged per plugin; past this, failures are only counted.
_LOGGED_ERRORS_MAX = 32

Reader = Callable[[int, int], Value]  # (address of the result array, number of values) -> value

#: Views over one result (a u64, a bool, a string pointer) by address, reused while a plugin keeps writing its
#: results at the same place, as SDK-built plugins do: a view reads the memory live, and making one costs more
#: than the rest of reading a value.
_VIEWS_MAX = 256
_views: dict[tuple[type, int], Any] = {}


def _view(ctype: type, address: int) -> Any:
    view = _views.get((ctype, address))
    if view is None:
        if len(_views) >= _VIEWS_MAX:
            _views.clear()
        view = _views[ctype, address] = ctype.from_address(address)  # type: ignore[attr-defined]
    return view


def _numbers(address: int, count: int) -> Value:
    if count == 1:
        return _view(ctypes.c_uint64, address).value
    return tuple((ctypes.c_uint64 * count).from_address(address))


def _bools(address: int, count: int) -> Value:
    if count == 1:
        return bool(_view(ctypes.c_uint32, address).value)
    return tuple(bool(v) for v in (ctypes.c_uint32 * count).from_address(address))


def _strings(address: int, count: int) -> Value:
    if count == 1:
        return (_view(ctypes.c_char_p, address).value or b"").decode("utf-8", "replace")
    return tuple((v or b"").decode("utf-8", "replace") for v in (ctypes.c_char_p * count).from_address(address))


def _buffers(address: int, count: int) -> list[bytes]:
    return [ctypes.string_at(b.ptr, b.len) for b in (abi.ByteBuffer * count).from_address(address)]


def _ip(data: bytes) -> Value:
    """An address as 4 or 16 bytes (libsinsp's PT_IPADDR); None for any other size."""
    return ipaddress.ip_address(data) if len(data) in (4, 16) else None


def _net(data: bytes) -> Value:
    """A network as address then netmask, 4+4 or 16+16 bytes (libsinsp's PT_IPNET); None otherwise."""
    half = len(data) // 2
    if half not in (4, 16) or len(data) != 2 * half:
        return None
    prefix = bin(int.from_bytes(data[half:], "big")).count("1")
    return ipaddress.ip_network((data[:half], prefix), strict=False)


def _buffer_reader(convert: Callable[[bytes], Value]) -> Reader:
    def read(address: int, count: int) -> Value:
        values = tuple(convert(b) for b in _buffers(address, count))
        return values[0] if count == 1 else values
    return read


_READERS: dict[abi.FieldTypeCode, Reader] = {
    abi.FieldTypeCode.UINT64: _numbers,
    abi.FieldTypeCode.RELTIME: _numbers,
    abi.FieldTypeCode.ABSTIME: _numbers,
    abi.FieldTypeCode.BOOL: _bools,
    abi.FieldTypeCode.STRING: _strings,
    abi.FieldTypeCode.IPADDR: _buffer_reader(_ip),
    abi.FieldTypeCode.IPNET: _buffer_reader(_net),
}


class FieldExtraction:
    """The fields of one extraction-capable plugin for events of one source, extracted in one batched call.

    `wanted` are (field, arg) pairs known up front; rules compiled against `specs()` add theirs as they bind.
    """

    def __init__(self, plugin: Plugin, source: str, wanted: Iterable[tuple[str, str | None]] = ()) -> None:
        if not plugin.info.extracts_from(source):
            raise PluginLoadError(f"plugin {plugin.info.name} extracts no fields from events of source '{source}'")
        self.plugin = plugin
        self.source = source
        self._by_name = {f.name: f for f in plugin.info.fields}
        self._requests: list[tuple[PluginField, str | None]] = []
        self._keys: list[str] = []
        self._extract = plugin.library.function("extract_fields")
        self._lock = threading.Lock()
        self._event_input = abi.EventInput(evtsrc=source.encode())
        self._event_input_address = ctypes.addressof(self._event_input)
        self._prepared: _Request | None = None
        self._logged: set[str] = set()
        self.calls = 0
        self.failures = 0
        for name, arg in wanted:
            self.request(name, arg)

    def specs(self) -> list[FieldSpec]:
        """The plugin's fields as the engine sees them; binding one adds it to the batched request."""
        return [FieldSpec(f.name, f.type, f.description, self._factory(f), is_list=f.is_list, arg=f.arg,
                          flags=FieldFlag.FORMAT_SUGGESTED if f.add_output else FieldFlag.NONE)
                for f in self.plugin.info.fields]

    def request(self, name: str, arg: str | None) -> str:
        """Add (name, arg) to what every call extracts; returns its cache key. ValueError for an unknown field."""
        field = self._by_name.get(name)
        if field is None:
            raise ValueError(f"plugin {self.plugin.info.name} has no field '{name}'")
        key = field_key(name, arg)
        if key not in self._keys:
            with self._lock:
                self._requests.append((field, arg))
                self._keys.append(key)
                self._prepared = None
        return key

    def _factory(self, field: PluginField) -> ExtractorFactory:
        def bind(arg: str | None) -> Extractor:
            key = self.request(field.name, arg)

            def extract(event: Event) -> Value:
                self.fill(event)
                return event.cache[key]
            return extract
        return bind

    def fill(self, event: Event) -> None:
        """Extract every requested field of `event` in one call and store the values in its cache."""
        cache = event.cache
        with self._lock:
            request = self._prepared or self._prepare()
            for _key, view, _read in request.results:
                view.res_len = 0  # a field the plugin leaves unset reads as absent, not as the last event's value
            inp = self._event_input
            inp.evt = event.payload
            inp.evtnum = event.num
            self.calls += 1
            rc = self._extract(self.plugin.state, self._event_input_address, request.input_address)
            if rc == 0:  # SS_PLUGIN_SUCCESS
                for key, view, read in request.results:
                    count = view.res_len
                    cache[key] = read(view.res, count) if count else None
                return
            self.failures += 1
            error = self.plugin.last_error()
        for key in request.keys:
            cache[key] = None
        if error not in self._logged and len(self._logged) < _LOGGED_ERRORS_MAX:
            self._logged.add(error)
            log.warning("plugin_extract_failed", plugin=self.plugin.info.name, source=self.source,
                        event_num=event.num, error=error, rc=rc)

    def _prepare(self) -> _Request:
        self._prepared = _Request(self._requests, self._keys)
        return self._prepared

    def metrics(self) -> dict[str, Any]:
        return {"extract_calls": self.calls, "extract_failures": self.failures, "fields_requested": len(self._keys)}


class _Request:
    """The ctypes request array for a fixed list of (field, arg); the plugin writes its results into it."""

    def __init__(self, requests: list[tuple[PluginField, str | None]], keys: list[str]) -> None:
        count = len(requests)
        self.keys = tuple(keys)
        self.array = (abi.ExtractField * count)()
        self._texts: list[bytes] = []  # the names and keys the array points into
        for slot, (field, arg) in zip(self.array, requests, strict=True):
            name = field.name.encode()
            self._texts.append(name)
            slot.field_id, slot.field, slot.ftype, slot.flist = field.field_id, name, field.code, field.is_list
            if arg is not None:
                slot.arg_present = 1
                if ArgKind.KEY in field.arg:
                    key = arg.encode()
                    self._texts.append(key)
                    slot.arg_key = key
                if ArgKind.INDEX in field.arg and arg.isdigit():
                    slot.arg_index = int(arg)
        self.input = abi.FieldExtractInput(num_fields=count, fields=self.array)
        self.input_address = ctypes.addressof(self.input)
        self.results = tuple((key, self.array[i], _READERS[field.code])
                             for i, (key, (field, _arg)) in enumerate(zip(keys, requests, strict=True)))
