"""The binary record the BPF programs write to the ring buffer, and its decoding into SyscallRecords.

Layout (little endian, shared with the C in probe_program.py): a fixed 122-byte header, then the
variable parts (user strings, socket addresses, argv, an I/O buffer) back to back; `lens[k]` is the
byte length of part k. Strings keep their NUL, argv is its strings NUL-separated. The I/O buffer is
the last part, and absent when no rule asked for it: its parameter is then None, not empty bytes.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any

from sources.kernel.record import SyscallRecord
from sources.kernel.syscalls import CLONE_TYPES, SCHED_TYPES, SYSCALLS, Copy, ParamKind, SyscallSpec, user_params

#: Event type ids as the kernel writes them: the index in this tuple.
TYPE_NAMES: tuple[str, ...] = (*SYSCALLS, *SCHED_TYPES)
TYPE_IDS: dict[str, int] = {name: number for number, name in enumerate(TYPE_NAMES)}

MAX_ARGS = 6
MAX_PARTS = 6
HEADER = struct.Struct("<QQIIIIq6QHH6H16sH")
assert HEADER.size == 122
_HEADER_SIZE = HEADER.size
_UNPACK = HEADER.unpack_from

#: How many strings `_text` remembers, and the longest it remembers (a path is mostly far shorter).
_TEXTS_KEPT = 4096
_TEXT_LONGEST = 256
_SIGN_BIT = 1 << 31
_WRAP = 1 << 32
_SIGNED_KINDS = frozenset({ParamKind.FD, ParamKind.INT, ParamKind.PID})
_CLONE_THREAD = 0x00010000
_AF_INET, _AF_INET6 = 2, 10

#: Saved-argument slots where the TCP local end is kept for a connect in flight (its arguments use 0-2):
#: family << 16 | port, then the address (IPv4 in the first 4 bytes, IPv6 over both slots).
LOCAL_SLOTS = (3, 4, 5)


def _signed(value: int) -> int:
    """fds, pids and plain ints are C ints in the syscall ABI; the tracepoint slot may not sign-extend."""
    value &= _WRAP - 1
    return value - _WRAP if value & _SIGN_BIT else value


def _signed_source(slot: str) -> str:
    """`_signed(slot)` as an expression, inlined: a call per argument shows on the per-record path. The usual
    values take no arithmetic on a big int: a descriptor or pid (below 2**31) is itself, and a negative int the
    slot holds sign-extended to 64 bits (AT_FDCWD, mostly) is one subtraction away."""
    return (f"({slot} if {slot} < 0x80000000 else {slot} - 0x10000000000000000 if {slot} >= 0xFFFFFFFF80000000 "
            f"else ((({slot} & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000))")


def _argv(raw: bytes) -> list[str]:
    return [part.decode("utf-8", "surrogateescape") for part in raw.split(b"\0")[:-1]] if raw else []


def _fd_pair(raw: bytes) -> tuple[int, int] | None:
    return struct.unpack("<ii", raw) if len(raw) == 8 else None


def _open_how(raw: bytes) -> dict[str, int]:
    """openat2's struct open_how, split into the parameters open and openat have."""
    flags, mode, resolve = struct.unpack("<QQQ", raw) if len(raw) == 24 else (0, 0, 0)
    return {"flags": flags, "mode": mode, "resolve": resolve}


def _local_addr(family_port: int, low: int, high: int) -> bytes:
    """The TCP local end the kernel noted for a connect, as a raw struct sockaddr (b"" when none)."""
    family, port = family_port >> 16, family_port & 0xFFFF
    if family == _AF_INET:
        return struct.pack("<H", family) + port.to_bytes(2, "big") + low.to_bytes(8, "little")[:4] + bytes(8)
    if family == _AF_INET6:
        address = low.to_bytes(8, "little") + high.to_bytes(8, "little")
        return struct.pack("<H", family) + port.to_bytes(2, "big") + bytes(4) + address + bytes(4)
    return b""


#: C strings decoded lately (`_text`), by their bytes; at most _TEXTS_KEPT, none longer than _TEXT_LONGEST.
_TEXTS: dict[bytes, str] = {}


def _text(raw: bytes) -> str:
    """The text of a C string (what comes before its first NUL: a process name, a string part), remembered in
    _TEXTS: a host runs few programs, which open the same few paths again and again, and a lookup
    (`_TEXTS.get(raw) or _text(raw)`) costs less than decoding one. The same string object each time also keeps
    its hash for whatever looks it up next (the state, the rules)."""
    # Decoding first is cheaper than finding the NUL in the bytes, and the same: a NUL byte decodes to a NUL and is
    # part of no other character, escaped or not.
    text = raw.decode("utf-8", "surrogateescape").partition("\0")[0]
    if len(raw) <= _TEXT_LONGEST:
        if len(_TEXTS) >= _TEXTS_KEPT:
            _TEXTS.clear()
        _TEXTS[raw] = text
    return text


def _args_source(spec: SyscallSpec) -> str:
    """A dict display building one event type's args from `res`, the slots `a0..a5` and the parts `p`."""
    part_indexes = {param.name: index for index, param in enumerate(user_params(spec))}
    items: list[str] = []
    merged: list[str] = []
    arg_index = 0
    for param in spec.params:
        if param.copy is Copy.RESULT:
            value = "res"
        elif not param.copy.is_part:  # a value the record carries in a slot
            value = _signed_source(f"a{arg_index}") if param.kind in _SIGNED_KINDS else f"a{arg_index}"
            arg_index += 1
        else:
            part_index = part_indexes[param.name]
            missing = "None" if param.kind is ParamKind.BYTEBUF else "b''"
            part = f"(p[{part_index}] if {part_index} < len(p) else {missing})"
            if param.name == "how":
                merged.append(f"**_open_how({part})")
                continue
            if param.copy is Copy.USER_ARGV:
                value = f"_argv({part})"
            elif param.kind is ParamKind.FD_PAIR:
                value = f"_fd_pair({part})"
            elif param.copy in (Copy.USER_STR, Copy.DIRENT_NAME):
                value = f"(_texts.get({part}) or _text({part}))"
                if param.copy is Copy.DIRENT_NAME:  # mostly absent: then no text to look up
                    value = f"({value} if {part_index} < len(p) else '')"
            else:
                value = part
        items.append(f"{param.name!r}: {value}")
    if spec.tcp_local:
        slots = ", ".join(f"a{slot}" for slot in LOCAL_SLOTS)
        items.append(f"'local_addr': _local_addr({slots})")
    return "{" + ", ".join(items + merged) + "}"


def _compile_args_builders() -> tuple[Callable[..., dict[str, Any]] | None, ...]:
    """One generated function per captured syscall, by type id (None for a scheduler event): no per-parameter loop
    on the hot path."""
    namespace: dict[str, Any] = {"_argv": _argv, "_fd_pair": _fd_pair, "_texts": _TEXTS, "_text": _text,
                                 "_open_how": _open_how, "_local_addr": _local_addr}
    lines = []
    for name, spec in SYSCALLS.items():
        lines.append(f"def build_{name}(res, a0, a1, a2, a3, a4, a5, p):\n    return {_args_source(spec)}\n")
    exec(compile("\n".join(lines), "<kernel-record-args>", "exec"), namespace)
    return tuple(namespace[f"build_{name}"] if name in SYSCALLS else None for name in TYPE_NAMES)


_BUILDERS = _compile_args_builders()


#: What the state needs of a close (tid, pid, res, fd slot), read straight from the header: the type field's
#: offset (after ts, cgroup, tid, pid, uid, gid, res and the slots), a close's type as it is written there, and
#: the fields before it.
_TYPE_AT = struct.calcsize("<QQIIIIq6Q")
_CLOSE_TYPE = TYPE_IDS["close"].to_bytes(2, "little")
_CLOSE_FIELDS = struct.Struct("<16xII8xqQ")


def close_fields(raw: bytes) -> tuple[int, int, int, int] | None:
    """(tid, pid, res, fd) of a close record, None for a record of another type: a close no rule reads only
    frees a descriptor, which needs none of the rest of the record decoded."""
    if raw[_TYPE_AT:_TYPE_AT + 2] != _CLOSE_TYPE or len(raw) < _HEADER_SIZE:
        return None
    tid, pid, res, fd = _CLOSE_FIELDS.unpack_from(raw)
    return tid, pid, res, ((fd & 0xFFFFFFFF) ^ _SIGN_BIT) - _SIGN_BIT


def _boot_to_wall_offset() -> int:
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


class RecordDecoder:
    """Turns ring buffer bytes into SyscallRecords; boot-clock times become wall-clock times."""

    def __init__(self) -> None:
        self._wall_offset = _boot_to_wall_offset()

    def decode(self, raw: bytes) -> SyscallRecord:
        """Raises ValueError (naming what is wrong) for a record too short or of an unknown type."""
        # A record too short or of an unknown type is told by the step it fails (a type id is unsigned: no index
        # from the end), not by a test every record pays.
        try:
            (ts, cgroup_id, tid, pid, uid, gid, res, a0, a1, a2, a3, a4, a5, type_id, nparts,
             l0, l1, l2, l3, l4, l5, comm, cpu) = _UNPACK(raw)
        except struct.error:
            raise ValueError(f"kernel record of {len(raw)} bytes is shorter than its {_HEADER_SIZE}-byte "
                             "header") from None
        try:
            build = _BUILDERS[type_id]
        except IndexError:
            raise ValueError(f"kernel record has unknown event type id {type_id}") from None
        if build is None:
            args = _sched_args(TYPE_NAMES[type_id], pid, a0, a1)
        else:
            if nparts == 1:  # the usual case (one path): no loop
                parts = [raw[_HEADER_SIZE:_HEADER_SIZE + l0]]
            else:
                parts = []
                offset = _HEADER_SIZE
                for length in (l0, l1, l2, l3, l4, l5)[:nparts]:
                    parts.append(raw[offset:offset + length])
                    offset += length
            args = build(res, a0, a1, a2, a3, a4, a5, parts)
        comm_text = _TEXTS.get(comm) or _text(comm)
        return SyscallRecord(TYPE_NAMES[type_id], ts + self._wall_offset, tid, pid, uid, gid, comm_text, res, args,
                             cgroup_id, cpu)


def _sched_args(type_name: str, pid: int, a0: int, a1: int) -> dict[str, Any]:
    if type_name in CLONE_TYPES:
        child_tid, flags = a0, a1
        return {"child_tid": child_tid, "child_pid": pid if flags & _CLONE_THREAD else child_tid, "flags": flags}
    if type_name == "tcp_local":
        return {"fd": _signed(a0), "local_port": a1}
    return {"group_dead": bool(a0)}
