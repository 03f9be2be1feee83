"""The C side of Falco's plugin API 3.12 (plugin_api.h, plugin_types.h) as ctypes declarations.

Only what the host needs for sourcing and extraction is declared. Structures the host builds and the plugin
reads (init input, extraction input) follow the header field by field, since a plugin built with the C++ SDK
dereferences some of them unconditionally (`tables` at init). Function pointers the host never offers are left
NULL (`c_void_p`). Every call goes through ctypes' CDLL, which releases the GIL for the call's duration: a plugin
blocked in `next_batch` stops no other Python thread.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from enum import IntEnum, IntFlag

#: The API version this host implements; a plugin may require at most this (same major, minor not above).
API_VERSION = (3, 12, 0)
API_VERSION_TEXT = ".".join(map(str, API_VERSION))


class Rc(IntEnum):
    """ss_plugin_rc."""

    SUCCESS = 0
    FAILURE = 1
    TIMEOUT = -1
    EOF = 2
    NOT_SUPPORTED = 3


class FieldTypeCode(IntEnum):
    """ss_plugin_field_type: the value types a plugin field may have (they match libscap's PT_* codes)."""

    UINT64 = 8
    STRING = 9
    RELTIME = 20
    ABSTIME = 21
    BOOL = 25
    IPADDR = 40
    IPNET = 41


class SchemaType(IntEnum):
    NONE = 0
    JSON = 1


class Capability(IntFlag):
    """What a plugin library implements, as plugin_loader.c tells it from the symbols it exports."""

    NONE = 0
    SOURCING = 1
    EXTRACTION = 2
    PARSING = 4
    ASYNC = 8
    CAPTURE_LISTENING = 16


class LogSeverity(IntEnum):
    FATAL = 1
    CRITICAL = 2
    ERROR = 3
    WARNING = 4
    NOTICE = 5
    INFO = 6
    DEBUG = 7
    TRACE = 8


class EventInput(ctypes.Structure):
    """ss_plugin_event_input. `evt` is declared as a char pointer, not a pointer to the header struct: assigning a
    `bytes` object to it points it at the bytes' own buffer with no copy, which is how an event's kept raw copy
    goes back to the plugin (plugins only read through it: the header declares it const)."""

    _fields_ = [("evt", ctypes.c_char_p), ("evtnum", ctypes.c_uint64), ("evtsrc", ctypes.c_char_p)]


class ByteBuffer(ctypes.Structure):
    """ss_plugin_byte_buffer."""

    _fields_ = [("len", ctypes.c_uint32), ("ptr", ctypes.c_void_p)]


class ExtractField(ctypes.Structure):
    """ss_plugin_extract_field. `res` is the union of result array pointers, read according to `ftype`."""

    _fields_ = [
        ("res", ctypes.c_void_p),
        ("res_len", ctypes.c_uint64),
        ("field_id", ctypes.c_uint32),
        ("field", ctypes.c_char_p),
        ("arg_key", ctypes.c_char_p),
        ("arg_index", ctypes.c_uint64),
        ("arg_present", ctypes.c_uint32),
        ("ftype", ctypes.c_uint32),
        ("flist", ctypes.c_uint32),
    ]


#: const char* (*get_owner_last_error)(ss_plugin_owner_t*): a char pointer returned as an address, since ctypes
#: cannot return a `c_char_p` from a callback without freeing its memory first.
OWNER_LAST_ERROR_FN = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)
#: void (*log_fn)(owner, component, msg, severity)
LOG_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int)
#: ss_plugin_table_info* (*list_tables)(owner, uint32_t* ntables)
LIST_TABLES_FN = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32))
#: ss_plugin_table_t* (*get_table)(owner, const char* name, ss_plugin_state_type key_type)
GET_TABLE_FN = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int)
#: ss_plugin_rc (*add_table)(owner, const ss_plugin_table_input*)
ADD_TABLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


class TableInfo(ctypes.Structure):
    """ss_plugin_table_info."""

    _fields_ = [("name", ctypes.c_char_p), ("key_type", ctypes.c_int)]


class InitTablesInput(ctypes.Structure):
    """ss_plugin_init_tables_input; the deprecated `fields` vtable (three pointers) is embedded, not pointed to."""

    _fields_ = [
        ("list_tables", LIST_TABLES_FN),
        ("get_table", GET_TABLE_FN),
        ("add_table", ADD_TABLE_FN),
        ("fields", ctypes.c_void_p * 3),
        ("fields_ext", ctypes.c_void_p),
        ("reader_ext", ctypes.c_void_p),
        ("writer_ext", ctypes.c_void_p),
    ]


class InitInput(ctypes.Structure):
    """ss_plugin_init_input."""

    _fields_ = [
        ("config", ctypes.c_char_p),
        ("owner", ctypes.c_void_p),
        ("get_owner_last_error", OWNER_LAST_ERROR_FN),
        ("tables", ctypes.POINTER(InitTablesInput)),
        ("log_fn", LOG_FN),
    ]


class FieldExtractInput(ctypes.Structure):
    """ss_plugin_field_extract_input; the deprecated `table_reader` vtable (four pointers) is embedded."""

    _fields_ = [
        ("owner", ctypes.c_void_p),
        ("get_owner_last_error", OWNER_LAST_ERROR_FN),
        ("num_fields", ctypes.c_uint32),
        ("fields", ctypes.POINTER(ExtractField)),
        ("table_reader", ctypes.c_void_p * 4),
        ("table_reader_ext", ctypes.c_void_p),
        ("value_offsets", ctypes.c_void_p),
    ]


@dataclass(frozen=True, slots=True)
class Symbol:
    """One exported function: `plugin_<name>`, its C signature, and whether every plugin must export it."""

    name: str
    restype: type | None
    argtypes: tuple[type, ...]
    required: bool = False


_P = ctypes.c_void_p
_U32P = ctypes.POINTER(ctypes.c_uint32)

#: The symbols the host uses, with the signatures of plugin_api.h. Pointers the host passes (state, instance,
#: inputs) are declared `c_void_p` so that hot calls take plain integers the host computed once.
SYMBOLS = (
    Symbol("get_required_api_version", ctypes.c_char_p, (), required=True),
    Symbol("get_version", ctypes.c_char_p, (), required=True),
    Symbol("get_name", ctypes.c_char_p, (), required=True),
    Symbol("get_description", ctypes.c_char_p, (), required=True),
    Symbol("get_contact", ctypes.c_char_p, (), required=True),
    Symbol("init", _P, (_P, ctypes.POINTER(ctypes.c_int32)), required=True),
    Symbol("destroy", None, (_P,), required=True),
    Symbol("get_last_error", ctypes.c_char_p, (_P,), required=True),
    Symbol("get_init_schema", ctypes.c_char_p, (ctypes.POINTER(ctypes.c_int32),)),
    # sourcing
    Symbol("get_id", ctypes.c_uint32, ()),
    Symbol("get_event_source", ctypes.c_char_p, ()),
    Symbol("open", _P, (_P, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int32))),
    Symbol("close", None, (_P, _P)),
    Symbol("next_batch", ctypes.c_int32, (_P, _P, _U32P, ctypes.POINTER(ctypes.POINTER(_P)))),
    Symbol("get_progress", ctypes.c_char_p, (_P, _P, _U32P)),
    Symbol("event_to_string", ctypes.c_char_p, (_P, _P)),
    # extraction
    Symbol("get_fields", ctypes.c_char_p, ()),
    Symbol("extract_fields", ctypes.c_int32, (_P, _P, _P)),
    Symbol("get_extract_event_sources", ctypes.c_char_p, ()),
    # capabilities this host does not drive, looked up only to report them
    Symbol("parse_event", ctypes.c_int32, (_P, _P, _P)),
    Symbol("set_async_event_handler", ctypes.c_int32, (_P, _P, _P)),
    Symbol("capture_open", ctypes.c_int32, (_P, _P)),
)
