"""The binary record the BPF programs write to the ring buffer, and its decoding into SyscallRecords.

Layout (little endian, shared with the C in probe_program.py): a fixed 120-byte header, then the
variable parts (user strings, socket addresses, argv) back to back; `lens[k]` is the byte length
of part k. Strings keep their NUL, argv is its strings NUL-separated.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any

from sources.kernel.record import SyscallRecord
from sources.kernel.syscalls import CLONE_TYPES, SCHED_TYPES, SYSCALLS, Copy, Param, ParamKind

#: Event type ids as the kernel writes them: the index in this tuple.
TYPE_NAMES: tuple[str, ...] = (*SYSCALLS, *SCHED_TYPES)
TYPE_IDS: dict[str, int] = {name: number for number, name in enumerate(TYPE_NAMES)}

MAX_ARGS = 6
MAX_PARTS = 6
HEADER = struct.Struct("<QQIIIIq6QHH6H16s")
assert HEADER.size == 120

_SIGN_BIT = 1 << 31
_WRAP = 1 << 32
_SIGNED_KINDS = frozenset({ParamKind.FD, ParamKind.INT, ParamKind.PID})
_CLONE_THREAD = 0x00010000


def _signed(value: int) -> int:
    """fds, pids and plain ints are C ints in the syscall ABI; the tracepoint slot may not sign-extend."""
    value &= _WRAP - 1
    return value - _WRAP if value & _SIGN_BIT else value


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _argv(raw: bytes) -> list[str]:
    return [part.decode("utf-8", "surrogateescape") for part in raw.split(b"\0")[:-1]] if raw else []


def _fd_pair(raw: bytes) -> tuple[int, int] | None:
    return struct.unpack("<ii", raw) if len(raw) == 8 else None


def _open_how(raw: bytes) -> dict[str, int]:
    """openat2's struct open_how, split into the parameters open and openat have."""
    flags, mode, resolve = struct.unpack("<QQQ", raw) if len(raw) == 24 else (0, 0, 0)
    return {"flags": flags, "mode": mode, "resolve": resolve}


def _plan(params: tuple[Param, ...]) -> list[tuple[str, str, int, Callable[[Any], Any] | None]]:
    """Per parameter: (name, where from: res/arg/part, index, conversion)."""
    plan: list[tuple[str, str, int, Callable[[Any], Any] | None]] = []
    arg_index = part_index = 0
    for param in params:
        if param.copy is Copy.RESULT:
            plan.append((param.name, "res", 0, None))
            continue
        if param.copy is Copy.VALUE:
            plan.append((param.name, "arg", arg_index, _signed if param.kind in _SIGNED_KINDS else None))
            arg_index += 1
            continue
        convert: Callable[[Any], Any] | None
        if param.copy is Copy.USER_ARGV:
            convert = _argv
        elif param.kind is ParamKind.FD_PAIR:
            convert = _fd_pair
        elif param.name == "how":
            plan.append((param.name, "merge", part_index, _open_how))
            part_index += 1
            continue
        elif param.copy is Copy.USER_STR:
            convert = _text
        else:
            convert = None
        plan.append((param.name, "part", part_index, convert))
        part_index += 1
    return plan


_PLANS = {TYPE_IDS[name]: _plan(spec.params) for name, spec in SYSCALLS.items()}


def _boot_to_wall_offset() -> int:
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


class RecordDecoder:
    """Turns ring buffer bytes into SyscallRecords; boot-clock times become wall-clock times."""

    def __init__(self) -> None:
        self._wall_offset = _boot_to_wall_offset()

    def decode(self, raw: bytes) -> SyscallRecord:
        """Raises ValueError (naming what is wrong) for a record too short or of an unknown type."""
        if len(raw) < HEADER.size:
            raise ValueError(f"kernel record of {len(raw)} bytes is shorter than its {HEADER.size}-byte header")
        ts, cgroup_id, tid, pid, uid, gid, res, a0, a1, a2, a3, a4, a5, type_id, nparts, *rest = HEADER.unpack_from(raw)
        lens, comm = rest[:MAX_PARTS], rest[MAX_PARTS]
        if type_id >= len(TYPE_NAMES):
            raise ValueError(f"kernel record has unknown event type id {type_id}")
        record = SyscallRecord(TYPE_NAMES[type_id], ts + self._wall_offset, tid, pid, uid, gid,
                               _text(comm), res, cgroup_id=cgroup_id)
        plan = _PLANS.get(type_id)
        if plan is None:
            record.args = _sched_args(record, a0, a1)
            return record
        values = (a0, a1, a2, a3, a4, a5)
        parts: list[bytes] = []
        offset = HEADER.size
        for length in lens[:nparts]:
            parts.append(raw[offset:offset + length])
            offset += length
        args = record.args
        for name, where, index, convert in plan:
            if where == "res":
                value: Any = res
            elif where == "arg":
                value = values[index]
            else:
                value = parts[index] if index < len(parts) else b""
                if where == "merge":
                    args.update(convert(value))  # type: ignore[misc]
                    continue
            args[name] = convert(value) if convert is not None else value
        return record


def _sched_args(record: SyscallRecord, a0: int, a1: int) -> dict[str, Any]:
    if record.type in CLONE_TYPES:
        child_tid, flags = a0, a1
        return {"child_tid": child_tid, "child_pid": record.pid if flags & _CLONE_THREAD else child_tid,
                "flags": flags}
    return {"group_dead": bool(a0)}
