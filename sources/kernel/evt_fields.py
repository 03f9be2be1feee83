"""Extractors of the syscall-specific `evt.*` fields: arguments, result, direction, open kinds."""

from __future__ import annotations

from collections.abc import Callable

from agent.event import Event
from agent.fields import Extractor, ExtractorFactory, Value
from sources.kernel.arg_format import errno_name
from sources.kernel.arg_render import EXEC_TYPES, find_param, param_names, raw_value, render_named
from sources.kernel.state.fd_events import OPEN_TYPES, open_flags
from sources.kernel.state.payload import SyscallEvent
from sources.kernel.syscalls import DATA_PARAM

_O_ACCMODE, _O_WRONLY, _O_RDWR, _O_CREAT, _O_TMPFILE = 0o3, 0o1, 0o2, 0o100, 0o20200000
_EXEC_MODE_BITS = 0o111


def payload_of(event: Event) -> SyscallEvent | None:
    """The event's SyscallEvent; None for an event of another shape (no syscall field applies)."""
    payload = event.payload
    return payload if payload.__class__ is SyscallEvent else None


def simple(fn: Callable[[SyscallEvent], Value]) -> ExtractorFactory:
    """A factory for a field that takes no argument: the payload in, the value out."""

    def factory(_arg: str | None) -> Extractor:
        def extract(event: Event) -> Value:
            payload = event.payload
            return fn(payload) if payload.__class__ is SyscallEvent else None

        return extract

    return factory


def _arg_factory(arg: str | None) -> Extractor:
    """`evt.arg.NAME` / `evt.arg[N]`: the resolved text when there is one, else the raw text."""
    assert arg is not None

    def by_index(event: Event) -> Value:
        ev = payload_of(event)
        if ev is None:
            return None
        names = param_names(ev)
        return _shown(ev, names[int(arg)]) if int(arg) < len(names) else None

    def by_name(event: Event) -> Value:
        ev = payload_of(event)
        return _shown(ev, arg) if ev is not None else None

    return by_index if arg.isdigit() else by_name


def _shown(ev: SyscallEvent, name: str) -> Value:
    rendered = render_named(ev, name)
    if rendered is None:
        return None
    raw, resolved = rendered
    return resolved or raw


def _rawarg_factory(arg: str | None) -> Extractor:
    assert arg is not None

    def extract(event: Event) -> Value:
        ev = payload_of(event)
        if ev is None:
            return None
        param = find_param(ev.record.type, arg)
        if param is not None and ev.record.type not in EXEC_TYPES:
            return raw_value(ev, param)
        value = ev.record.args.get(arg)
        return value if isinstance(value, (int, str)) else None

    return extract


def _args(ev: SyscallEvent) -> Value:
    """`evt.args`: every parameter as `name=raw` or `name=raw(resolved)`, space separated."""
    parts = []
    for name in param_names(ev):
        rendered = render_named(ev, name)
        if rendered is not None:
            raw, resolved = rendered
            parts.append(f"{name}={raw}({resolved})" if resolved else f"{name}={raw}")
    return " ".join(parts)


def _buffer(ev: SyscallEvent) -> Value:
    """`evt.buffer`: the bytes the kernel copied of the I/O buffer (None when this event type has none, or no
    rule asked for it when the probe was loaded)."""
    data = ev.record.args.get(DATA_PARAM)
    return data if isinstance(data, bytes) else None


def _res(ev: SyscallEvent) -> Value:
    res = ev.record.res
    return (errno_name(res) or str(res)) if res < 0 else "SUCCESS"


def _open_flags(ev: SyscallEvent) -> int | None:
    return open_flags(ev.record) if ev.record.type in OPEN_TYPES else None


def _is_open_read(ev: SyscallEvent) -> Value:
    flags = _open_flags(ev)
    return flags is not None and flags & _O_ACCMODE in (0, _O_RDWR)


def _is_open_write(ev: SyscallEvent) -> Value:
    flags = _open_flags(ev)
    return flags is not None and flags & _O_ACCMODE in (_O_WRONLY, _O_RDWR)


def _is_open_exec(ev: SyscallEvent) -> Value:
    flags = _open_flags(ev)
    if flags is None:
        return False
    creates = flags & _O_CREAT or flags & _O_TMPFILE == _O_TMPFILE
    return bool(creates and ev.record.args.get("mode", 0) & _EXEC_MODE_BITS)


def _is_open_create(ev: SyscallEvent) -> Value:
    flags = _open_flags(ev)
    return flags is not None and bool(flags & _O_CREAT or flags & _O_TMPFILE == _O_TMPFILE)


EVT_EXTRACTORS: dict[str, ExtractorFactory] = {
    "evt.arg": _arg_factory,
    "evt.rawarg": _rawarg_factory,
    "evt.args": simple(_args),
    "evt.info": simple(_args),
    "evt.buffer": simple(_buffer),
    "evt.res": simple(_res),
    "evt.rawres": simple(lambda ev: ev.record.res),
    "evt.failed": simple(lambda ev: ev.record.res < 0),
    "evt.dir": simple(lambda _ev: "<"),
    "syscall.type": simple(lambda ev: ev.record.type if ev.record.type != "procexit" else None),
    "evt.is_open_read": simple(_is_open_read),
    "evt.is_open_write": simple(_is_open_write),
    "evt.is_open_exec": simple(_is_open_exec),
    "evt.is_open_create": simple(_is_open_create),
}
