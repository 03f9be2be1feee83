"""Extractors of the syscall-specific `evt.*` fields: arguments, result, direction, open kinds, event classes,
buffer lengths, per-event counters, absolute paths and times."""

from __future__ import annotations

import posixpath
from collections.abc import Callable

from agent.event import Event
from agent.fields import Extractor, ExtractorFactory, InlineRead, Value, with_inline
from agent.generic_fields import format_time
from sources.kernel.arg_format import errno_name
from sources.kernel.arg_render import EXEC_TYPES, dirfd_dir, find_param, param_names, raw_value, render_named
from sources.kernel.event_category import CATEGORY_OF, READS_FROM_FD, WRITES_TO_FD, Category, category_text
from sources.kernel.state.fd_events import OPEN_TYPES, open_flags
from sources.kernel.state.fds import FdType
from sources.kernel.state.paths import absolute_path
from sources.kernel.state.payload import SyscallEvent
from sources.kernel.syscalls import DATA_PARAM

_O_ACCMODE, _O_WRONLY, _O_RDWR, _O_CREAT, _O_TMPFILE = 0o3, 0o1, 0o2, 0o100, 0o20200000
_EXEC_MODE_BITS = 0o111


def payload_of(event: Event) -> SyscallEvent | None:
    """The event's SyscallEvent; None for an event of another shape (no syscall field applies)."""
    payload = event.payload
    return payload if payload.__class__ is SyscallEvent else None


def read_inline(factory: ExtractorFactory, value: str) -> ExtractorFactory:
    """`factory`, whose extractors generated code reads as `value` (an agent.fields.InlineRead value template; `{SE}`
    names the SyscallEvent class): the fields every open's rules read, with no call and no cache. `value` gives the
    extractor's result, or `{fallback}` (the extractor itself) where it cannot tell."""
    read = InlineRead("", value, (("SE", SyscallEvent),))

    def inline_factory(arg: str | None) -> Extractor:
        return with_inline(factory(arg), read)

    return inline_factory


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


def _is_exit(ev: SyscallEvent) -> bool:
    """Every record stands for a syscall's exit event, except procexit, which libscap emits as an enter event."""
    return ev.record.type != "procexit"


def _io_dir(ev: SyscallEvent) -> Value:
    kind = ev.record.type
    return "write" if kind in WRITES_TO_FD else "read" if kind in READS_FROM_FD else None


def _is_syslog(ev: SyscallEvent) -> Value:
    """libsinsp: a write to a descriptor whose name holds /dev/log (syslog's socket)."""
    return ev.record.type in WRITES_TO_FD and ev.fd is not None and "/dev/log" in ev.fd.name


# ----- buffer lengths: the result of an I/O event on a known descriptor --------------------------------------------
_NET_BUFFER_TYPES = frozenset({FdType.IPV4, FdType.IPV6})


def _buflen(categories: frozenset[Category], fd_types: frozenset[FdType] | None = None) -> ExtractorFactory:
    """`evt.buflen*`: the byte count (the result, when not an error) of an event of one of `categories` on a
    descriptor the state knows, of one of `fd_types` when given."""

    def length(ev: SyscallEvent) -> Value:
        fd = ev.fd
        if fd is None or CATEGORY_OF.get(ev.record.type) not in categories or ev.record.res < 0:
            return None
        return ev.record.res if fd_types is None or fd.type in fd_types else None

    return simple(length)


_ANY_IO = frozenset({Category.IO_READ, Category.IO_WRITE, Category.IO_OTHER})
_READS, _WRITES = frozenset({Category.IO_READ}), frozenset({Category.IO_WRITE})
_PLAIN_FILE = frozenset({FdType.FILE})

# ----- per-event counters (chisels sum them) ----------------------------------------------------------------------
_ERROR_FILE_TYPES = frozenset({FdType.FILE, FdType.DIRECTORY})
_ERROR_NET_TYPES = frozenset({FdType.IPV4, FdType.IPV6, FdType.UNIX})
_CLASSED_ERROR_TYPES = _ERROR_FILE_TYPES | _ERROR_NET_TYPES
#: Events libsinsp counts as file or network errors when they failed without a descriptor.
_FD_LESS_FILE = OPEN_TYPES
_FD_LESS_NET = frozenset({"accept", "accept4", "connect"})


def _error_count(ev: SyscallEvent) -> Value:
    """1 when the syscall failed, 0 when not; none for procexit, which has no result."""
    return int(ev.record.res < 0) if _is_exit(ev) else None


def _error_count_of(fd_types: frozenset[FdType], fd_less: frozenset[str]) -> Callable[[SyscallEvent], Value]:
    def count(ev: SyscallEvent) -> Value:
        in_class = ev.fd.type in fd_types if ev.fd is not None else ev.record.type in fd_less
        return _error_count(ev) if in_class else None

    return count


def _error_count_other(ev: SyscallEvent) -> Value:
    if ev.fd is not None:
        in_other = ev.fd.type not in _CLASSED_ERROR_TYPES
    else:
        kind = ev.record.type
        in_other = not (kind in _FD_LESS_FILE or kind in _FD_LESS_NET or CATEGORY_OF.get(kind) is Category.MEMORY)
    return _error_count(ev) if in_other else None


# ----- evt.abspath ------------------------------------------------------------------------------------------------
#: Per *at event type, the (dirfd, path) parameters `evt.abspath` joins: bare or `.src` first, `.dst` second.
_ABSPATH_PARAMS: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "renameat": (("olddirfd", "oldpath"), ("newdirfd", "newpath")),
    "renameat2": (("olddirfd", "oldpath"), ("newdirfd", "newpath")),
    "linkat": (("olddir", "oldpath"), ("newdir", "newpath")),
    **{kind: ((dirfd, path),) * 2 for kind, dirfd, path in (
        ("symlinkat", "linkdirfd", "linkpath"), ("openat", "dirfd", "name"), ("openat2", "dirfd", "name"),
        ("unlinkat", "dirfd", "name"), ("mkdirat", "dirfd", "path"), ("fchmodat", "dirfd", "filename"),
        ("fchownat", "dirfd", "pathname"))},
}
_ABSPATH_ARGS = {None: 0, "src": 0, "dst": 1}
#: libsinsp's directory for a dirfd it does not know.
_UNKNOWN_DIR = "<UNKNOWN>"


def _abspath_factory(arg: str | None) -> Extractor:
    """`evt.abspath`, `.src`, `.dst`: the path argument of an *at syscall joined to its dirfd's directory."""
    if arg not in _ABSPATH_ARGS:
        raise ValueError(f"field 'evt.abspath' takes .src or .dst, not '.{arg}'")
    which = _ABSPATH_ARGS[arg]

    def extract(event: Event) -> Value:
        ev = payload_of(event)
        params = _ABSPATH_PARAMS.get(ev.record.type) if ev is not None else None
        if ev is None or params is None:
            return None
        dirfd_name, path_name = params[which]
        dirfd, path = ev.record.args.get(dirfd_name), ev.record.args.get(path_name)
        if dirfd is None or not path:
            return None
        base = ev.thread.cwd if path.startswith("/") else dirfd_dir(ev, int(dirfd))
        return absolute_path(base, path) if base is not None else posixpath.normpath(f"{_UNKNOWN_DIR}/{path}")

    return extract


# ----- evt.deltatime ----------------------------------------------------------------------------------------------
_NS_PER_S = 1_000_000_000


class _DeltaClock:
    """Time since the previous event this field was extracted from; 0 the first time.

    libsinsp keeps the previous time in each use of the field; the engine extracts a field once per event for all
    of its uses, so here the uses of one field share it: one rule using the field sees libsinsp's value."""

    def __init__(self, part: Callable[[int], int]) -> None:
        self._part = part
        self._previous_ns = 0

    def factory(self, _arg: str | None) -> Extractor:
        return self.extract

    def extract(self, event: Event) -> Value:
        if event.payload.__class__ is not SyscallEvent:
            return None
        now, previous = event.ts_ns, self._previous_ns
        self._previous_ns = now
        # Records are ordered by exit but stamped at entry: a call that blocked long may come after a later one.
        return self._part(max(now - previous, 0)) if previous else 0


def _output_time(_arg: str | None) -> Extractor:
    def extract(event: Event) -> Value:
        return format_time(event.ts_ns) if event.payload.__class__ is SyscallEvent else None

    return extract


EVT_EXTRACTORS: dict[str, ExtractorFactory] = {
    "evt.arg": _arg_factory,
    "evt.rawarg": _rawarg_factory,
    "evt.args": simple(_args),
    "evt.info": simple(_args),
    "evt.buffer": simple(_buffer),
    "evt.res": simple(_res),
    "evt.rawres": simple(lambda ev: ev.record.res),
    "evt.failed": simple(lambda ev: ev.record.res < 0),
    "evt.dir": simple(lambda ev: "<" if _is_exit(ev) else ">"),
    "syscall.type": simple(lambda ev: ev.record.type if ev.record.type != "procexit" else None),
    "evt.is_open_read": simple(_is_open_read),
    "evt.is_open_write": simple(_is_open_write),
    "evt.is_open_exec": simple(_is_open_exec),
    "evt.is_open_create": simple(_is_open_create),
    "evt.cpu": simple(lambda ev: ev.record.cpu),
    "evt.category": simple(lambda ev: category_text(ev.record.type, ev.fd)),
    "evt.is_io": simple(lambda ev: ev.record.type in READS_FROM_FD or ev.record.type in WRITES_TO_FD),
    "evt.is_io_read": simple(lambda ev: ev.record.type in READS_FROM_FD),
    "evt.is_io_write": simple(lambda ev: ev.record.type in WRITES_TO_FD),
    "evt.io_dir": simple(_io_dir),
    # No captured syscall waits (libscap's EF_WAITS: poll, select, epoll_wait, nanosleep, ...).
    "evt.is_wait": simple(lambda _ev: False),
    "evt.is_syslog": simple(_is_syslog),
    "evt.buflen": _buflen(_ANY_IO),
    "evt.buflen.in": _buflen(_READS),
    "evt.buflen.out": _buflen(_WRITES),
    "evt.buflen.file": _buflen(_ANY_IO, _PLAIN_FILE),
    "evt.buflen.file.in": _buflen(_READS, _PLAIN_FILE),
    "evt.buflen.file.out": _buflen(_WRITES, _PLAIN_FILE),
    "evt.buflen.net": _buflen(_ANY_IO, _NET_BUFFER_TYPES),
    "evt.buflen.net.in": _buflen(_READS, _NET_BUFFER_TYPES),
    "evt.buflen.net.out": _buflen(_WRITES, _NET_BUFFER_TYPES),
    "evt.count": simple(lambda _ev: 1),
    "evt.count.error": simple(_error_count),
    "evt.count.error.file": simple(_error_count_of(_ERROR_FILE_TYPES, _FD_LESS_FILE)),
    "evt.count.error.net": simple(_error_count_of(_ERROR_NET_TYPES, _FD_LESS_NET)),
    "evt.count.error.memory": simple(
        lambda ev: _error_count(ev) if CATEGORY_OF.get(ev.record.type) is Category.MEMORY else None),
    "evt.count.error.other": simple(_error_count_other),
    "evt.count.exit": simple(lambda ev: 1 if _is_exit(ev) else None),
    # Only libscap's procinfo events (which no probe of the agent emits) count 1; every other event counts 0.
    "evt.count.procinfo": simple(lambda _ev: 0),
    "evt.count.threadinfo": simple(lambda _ev: 0),
    "evt.abspath": _abspath_factory,
    "evt.deltatime": _DeltaClock(lambda ns: ns).factory,
    "evt.deltatime.s": _DeltaClock(lambda ns: ns // _NS_PER_S).factory,
    "evt.deltatime.ns": _DeltaClock(lambda ns: ns % _NS_PER_S).factory,
    # libsinsp's time output mode is `h` unless a tool changes it (Falco does not): evt.time's text.
    "evt.outputtime": _output_time,
    # Deprecated: libsinsp no longer measures them and answers 0 for every event.
    "evt.latency": simple(lambda _ev: 0),
    "evt.latency.s": simple(lambda _ev: 0),
    "evt.latency.ns": simple(lambda _ev: 0),
    "evt.latency.quantized": simple(lambda _ev: 0),
    "evt.latency.human": simple(lambda _ev: "0ns"),
    "evt.wait_latency": simple(lambda _ev: 0),
}
