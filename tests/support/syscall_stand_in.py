"""A test-only stand-in for the `syscall` source, until the kernel source extracts its fields.

It carries the real source's name, index key and the names and types of the fields kernel steps of
rules/correlation.yaml use. Its recorded form is one JSON line per event:
`{"syscall": {"time": ISO-8601, "evt.type": ..., "<field>": value...}}`. Swap it for real kernel captures
when the kernel source records them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from agent.errors import DecodeError
from agent.event import Event
from agent.fields import Extractor, FieldFlag, FieldSpec, FieldTable, FieldType
from agent.generic_fields import generic_fields
from agent.source import SourceSpec

STAND_IN = "syscall"


def _payload(name: str) -> Any:
    return lambda _arg: lambda ev: ev.payload.get(name)


def _ip(name: str) -> Any:
    def factory(_arg: str | None) -> Extractor:
        def extract(ev: Event) -> Any:
            value = ev.payload.get(name)
            return None if value is None else ipaddress.ip_address(value)
        return extract
    return factory


def syscall_stand_in() -> SourceSpec:
    """The fields kernel steps use, under the kernel source's name, types and index key."""
    text = FieldType.CHARBUF
    return SourceSpec(STAND_IN, FieldTable([
        *generic_fields(),
        FieldSpec("evt.type", text, "event name", lambda _arg: lambda ev: ev.type or None),
        FieldSpec("proc.name", text, "process name", _payload("proc.name")),
        FieldSpec("proc.cmdline", text, "command line", _payload("proc.cmdline")),
        FieldSpec("fd.name", text, "descriptor name", _payload("fd.name")),
        FieldSpec("fd.sip", FieldType.IPADDR, "server IP", _ip("fd.sip")),
        FieldSpec("fd.snet", FieldType.IPNET, "server network", _ip("fd.sip"),
                  flags=FieldFlag.FILTER_ONLY | FieldFlag.NO_RHS | FieldFlag.NO_TRANSFORMER),
        FieldSpec("container.id", FieldType.STRING, "container id", _payload("container.id")),
        FieldSpec("k8s.ns.name", FieldType.STRING, "pod namespace", _payload("k8s.ns.name")),
        FieldSpec("k8s.pod.name", FieldType.STRING, "pod name", _payload("k8s.pod.name")),
    ]), index_fields=("evt.type",))


def kernel_event(time: str, evt_type: str, **fields: Any) -> Event:
    """A stand-in kernel event at an ISO-8601 time (`2024-06-03T10:00:03Z`)."""
    ts_ns = int(datetime.fromisoformat(time.replace("Z", "+00:00")).timestamp()) * 1_000_000_000
    return Event(STAND_IN, ts_ns, {k.replace("_", "."): v for k, v in fields.items()}, type=evt_type,
                 hostname="node-1")


class StandInDecoder:
    """Decodes the recorded stand-in lines; a RecordDecoder like the real sources' ones."""

    source = STAND_IN

    def matches(self, document: Any) -> bool:
        return isinstance(document, dict) and STAND_IN in document

    def events(self, document: Any, *, origin: str) -> Iterator[Event | DecodeError]:
        fields = dict(document[STAND_IN])
        time, evt_type = fields.pop("time"), fields.pop("evt.type")
        event = kernel_event(time, evt_type)
        event.payload = fields
        yield event
