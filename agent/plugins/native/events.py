"""The libscap event layout of a plugin event (PPME_PLUGINEVENT_E), built and parsed byte for byte.

An event is a packed little-endian header (`ppm_evt_hdr`, the same as `ss_plugin_event`): ts u64, tid u64,
len u32 (the whole event, header included), type u16, nparams u32 — 26 bytes — then one length per parameter,
then the parameters. PPME_PLUGINEVENT_E has the EF_LARGE_PAYLOAD flag, so its lengths are u32, not u16. Its two
parameters are the plugin id (u32) and the plugin's opaque data, so the data starts at byte 38
(PLUGIN_EVENT_PAYLOAD_OFFSET of plugin_api.h).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

#: libscap's event type of a plugin's own events (`PPME_PLUGINEVENT_E`, code 322 in ppm_events_public.h).
PPME_PLUGINEVENT_E = 322
#: ts or tid of all ones: "none given". libscap sets the time of reading for such a ts, and no thread for a plugin
#: event's tid.
UNSET = (1 << 64) - 1
HEADER = struct.Struct("<QQIHI")
_PLUGIN_PARAMS = struct.Struct("<III")  # the two parameter lengths, then the plugin id
PAYLOAD_OFFSET = HEADER.size + _PLUGIN_PARAMS.size
_TS = struct.Struct("<Q")
_ID_OFFSET = HEADER.size + 8


class MalformedEvent(ValueError):
    """Bytes that are not a well-formed plugin event; the message says which part is wrong."""


@dataclass(frozen=True, slots=True)
class EventHeader:
    ts: int
    tid: int
    len: int
    type: int
    nparams: int


@dataclass(frozen=True, slots=True)
class PluginEvent:
    """A parsed plugin event: its header values, the plugin id and the opaque data."""

    ts: int
    tid: int
    plugin_id: int
    data: bytes


def build_plugin_event(plugin_id: int, data: bytes, *, ts: int = UNSET, tid: int = UNSET) -> bytes:
    """The bytes of a PPME_PLUGINEVENT_E event carrying `data` for `plugin_id`."""
    length = PAYLOAD_OFFSET + len(data)
    return (HEADER.pack(ts, tid, length, PPME_PLUGINEVENT_E, 2)
            + _PLUGIN_PARAMS.pack(4, len(data), plugin_id) + data)


def parse_header(raw: bytes) -> EventHeader:
    if len(raw) < HEADER.size:
        raise MalformedEvent(f"event of {len(raw)} bytes is shorter than its {HEADER.size}-byte header")
    header = EventHeader(*HEADER.unpack_from(raw))
    if header.len != len(raw):
        raise MalformedEvent(f"event header says {header.len} bytes, the event has {len(raw)}")
    return header


def parse_plugin_event(raw: bytes) -> PluginEvent:
    """Parse a plugin event, checking type, parameter count and that the parameter lengths add up to `len`."""
    ts, tid, plugin_id = check_plugin_event(raw)
    return PluginEvent(ts, tid, plugin_id, raw[PAYLOAD_OFFSET:])


def check_plugin_event(raw: bytes) -> tuple[int, int, int]:
    """ts, tid and plugin id of a plugin event, checked as `parse_plugin_event` checks it; the data is not copied
    (the host checks every event a source plugin hands over)."""
    header = parse_header(raw)
    if header.type != PPME_PLUGINEVENT_E or header.nparams != 2:
        raise MalformedEvent(f"event of type {header.type} with {header.nparams} parameters is not a plugin "
                             f"event (type {PPME_PLUGINEVENT_E}, 2 parameters)")
    if header.len < PAYLOAD_OFFSET:
        raise MalformedEvent(f"plugin event of {header.len} bytes cannot hold its parameters")
    id_len, data_len, plugin_id = _PLUGIN_PARAMS.unpack_from(raw, HEADER.size)
    if id_len != 4 or PAYLOAD_OFFSET + data_len != header.len:
        raise MalformedEvent(f"plugin event parameter lengths {id_len} and {data_len} do not fit its "
                             f"{header.len} bytes")
    return header.ts, header.tid, plugin_id


def with_ts(raw: bytes, ts: int) -> bytes:
    """The event with its timestamp replaced (the host stamps events a plugin left unstamped)."""
    return _TS.pack(ts) + raw[_TS.size:]


def with_plugin_id(raw: bytes, plugin_id: int) -> bytes:
    """The plugin event with its plugin id replaced (a plugin may leave it 0 for the host to fill in)."""
    return raw[:_ID_OFFSET] + struct.pack("<I", plugin_id) + raw[_ID_OFFSET + 4:]
