"""Offsets and sizes of kernel struct members, read from the running kernel's BTF.

The kernel probe is compiled against kernel headers that may not match the running kernel, so the
few struct members it reads (task_struct.files ... super_block.s_dev) take their offsets from
/sys/kernel/btf/vmlinux instead. The file is raw BTF (kernel docs, "BPF Type Format"): a header, a
type section of variable-length records whose ids count from 1 in order, and a string section.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.errors import AgentError
from agent.location import Location

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

_MAGIC = 0xEB9F
_HEADER_FIELDS = "HBBIIIII"  # magic, version, flags, hdr_len, type_off, type_len, str_off, str_len
_POINTER_SIZE = 8  # the probe runs on 64-bit kernels only
_MAX_CHAIN = 64  # deeper typedef/modifier chains only happen in corrupt data (or loops)

_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM = 1, 2, 3, 4, 5, 6
_TYPEDEF, _VOLATILE, _CONST, _RESTRICT = 8, 9, 10, 11
_FUNC_PROTO, _VAR, _DATASEC, _FLOAT, _DECL_TAG, _TYPE_TAG, _ENUM64 = 13, 14, 15, 16, 17, 18, 19
_MODIFIERS = frozenset({_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG})
_SIZED = frozenset({_INT, _STRUCT, _UNION, _ENUM, _ENUM64, _FLOAT, _DATASEC})

# Bytes that follow the 12-byte common header of each kind: fixed part + vlen * per-item part.
# A kind outside the table has an unknown layout, so the types after it cannot be found.
_TRAILING_FIXED = {_INT: 4, _ARRAY: 12, _VAR: 4, _DECL_TAG: 4}
_TRAILING_PER_ITEM = {_STRUCT: 12, _UNION: 12, _ENUM: 8, _FUNC_PROTO: 8, _DATASEC: 12, _ENUM64: 12}
_KNOWN_KINDS = range(0, _ENUM64 + 1)


class BtfError(AgentError):
    """The BTF file is unreadable or malformed, or lacks a struct member the probe needs."""


@dataclass(frozen=True, slots=True)
class Member:
    offset: int  # bytes from the start of the outer struct
    size: int  # bytes of the member's type (typedefs/const/volatile resolved; a pointer is 8)


def member_layout(wanted: Iterable[tuple[str, str]], path: Path = VMLINUX_BTF) -> dict[tuple[str, str], Member]:
    """Offset and size of each (struct name, member name) in `wanted`; BtfError names what is missing."""
    pairs = list(dict.fromkeys(wanted))
    btf = _Btf(_read(path), str(path))
    struct_ids = btf.find_structs({name for name, _ in pairs})
    layout = {}
    for struct_name, member_name in pairs:
        type_id = struct_ids.get(struct_name)
        if type_id is None:
            raise btf.error(f"struct {struct_name} not found; the kernel probe cannot read "
                            f"{struct_name}.{member_name} on this kernel (is this the running kernel's BTF?)")
        layout[(struct_name, member_name)] = btf.member(type_id, struct_name, member_name)
    return layout


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BtfError(f"cannot read kernel BTF ({exc.strerror or exc}); the kernel probe needs a kernel built "
                       "with CONFIG_DEBUG_INFO_BTF=y and read access to this file",
                       Location(file=str(path))) from exc


class _Btf:
    """The sections of one BTF blob and the offset of every type record, indexed by type id."""

    def __init__(self, data: bytes, origin: str) -> None:
        self._data = data
        self._origin = origin
        self._order = self._byte_order()
        header = struct.Struct(self._order + _HEADER_FIELDS)
        if len(data) < header.size:
            raise self.error(f"truncated: {len(data)} bytes, shorter than the {header.size}-byte BTF header")
        _, _, _, hdr_len, type_off, type_len, str_off, str_len = header.unpack_from(data)
        self._types_start = self._section(hdr_len + type_off, type_len, "type")
        self._strings_start = self._section(hdr_len + str_off, str_len, "string")
        self._strings_end = self._strings_start + str_len
        self._u32 = struct.Struct(self._order + "I")
        self._record = struct.Struct(self._order + "III")  # name_off, info, size or type
        self._type_offsets = self._index_types(type_len)

    def error(self, message: str) -> BtfError:
        return BtfError(message, Location(file=self._origin))

    def _byte_order(self) -> str:
        if len(self._data) < 2:
            raise self.error("truncated: too short to hold the BTF magic")
        for order in "<>":
            if struct.unpack_from(order + "H", self._data)[0] == _MAGIC:
                return order
        raise self.error(f"bad magic {self._data[:2].hex()} (expected 0xeb9f in either byte order): not raw BTF; "
                         "pass the kernel's /sys/kernel/btf/vmlinux")

    def _section(self, start: int, length: int, name: str) -> int:
        if start + length > len(self._data):
            raise self.error(f"truncated: the {name} section ends at byte {start + length} "
                             f"but the file has {len(self._data)}")
        return start

    def _index_types(self, type_len: int) -> list[int]:
        """Offset of each type record by type id (id 0 is void and has none)."""
        data, unpack, fixed, per_item = self._data, self._record.unpack_from, _TRAILING_FIXED, _TRAILING_PER_ITEM
        offsets = [-1]
        pos, end = self._types_start, self._types_start + type_len
        while pos + 12 <= end:
            info = unpack(data, pos)[1]
            kind = (info >> 24) & 0x1F
            if kind not in _KNOWN_KINDS:
                raise self.error(f"type {len(offsets)} has unknown kind {kind}; this BTF is newer than the agent")
            offsets.append(pos)
            pos += 12 + fixed.get(kind, 0) + (info & 0xFFFF) * per_item.get(kind, 0)
        if pos != end:
            raise self.error(f"truncated: type {len(offsets) - 1} runs past the end of the type section")
        return offsets

    def find_structs(self, names: set[str]) -> dict[str, int]:
        """Type id of the first STRUCT named each of `names` (absent names are left out)."""
        name_offsets = self._string_offsets(names)
        found: dict[str, int] = {}
        unpack, data = self._record.unpack_from, self._data
        for type_id in range(1, len(self._type_offsets)):
            name_off, info, _ = unpack(data, self._type_offsets[type_id])
            name = name_offsets.get(name_off)
            if name is not None and (info >> 24) & 0x1F == _STRUCT and name not in found:
                found[name] = type_id
        return found

    def _string_offsets(self, names: set[str]) -> dict[int, str]:
        """Every string-section offset where one of `names` is stored (duplicates are legal in BTF)."""
        strings = self._data[self._strings_start:self._strings_end]
        offsets: dict[int, str] = {}
        for name in names:
            needle = b"\0" + name.encode() + b"\0"
            at = strings.find(needle)
            while at >= 0:
                offsets[at + 1] = name
                at = strings.find(needle, at + 1)
        return offsets

    def member(self, struct_id: int, struct_name: str, member_name: str) -> Member:
        found = self._find_member(struct_id, member_name, 0, struct_name)
        if found is None:
            raise self.error(f"struct {struct_name} has no member {member_name}; the kernel probe cannot read "
                             f"{struct_name}.{member_name} on this kernel")
        bit_offset, type_id = found
        if bit_offset % 8 or self._is_int_bitfield(self._strip_modifiers(type_id, struct_name, member_name)):
            raise self._bitfield(struct_name, member_name)
        return Member(bit_offset // 8, self._size(type_id, struct_name, member_name))

    def _find_member(self, type_id: int, member_name: str, base_bits: int, struct_name: str) -> tuple[int, int] | None:
        """(bit offset from the outer struct, type id) of `member_name`, looking into anonymous structs/unions."""
        pos = self._type_offsets[type_id]
        _, info, _ = self._record.unpack_from(self._data, pos)
        has_bitfields = info >> 31
        for index in range(info & 0xFFFF):
            name_off, member_type, offset = self._record.unpack_from(self._data, pos + 12 + 12 * index)
            bit_offset = offset & 0xFFFFFF if has_bitfields else offset
            if name_off == 0:
                inner = self._strip_modifiers(member_type, struct_name, member_name)
                if self._kind(inner) in (_STRUCT, _UNION):
                    found = self._find_member(inner, member_name, base_bits + bit_offset, struct_name)
                    if found is not None:
                        return found
            elif self._string(name_off) == member_name:
                if has_bitfields and offset >> 24:
                    raise self._bitfield(struct_name, member_name)
                return base_bits + bit_offset, member_type
        return None

    def _is_int_bitfield(self, type_id: int) -> bool:
        """An INT narrower than its storage, or shifted in it: the bitfield encoding of structs without kind_flag."""
        if self._kind(type_id) != _INT:
            return False
        pos = self._type_offsets[type_id]
        size = self._record.unpack_from(self._data, pos)[2]
        encoding = self._u32.unpack_from(self._data, pos + 12)[0]
        return bool(encoding & 0xFF != size * 8 or (encoding >> 16) & 0xFF)

    def _bitfield(self, struct_name: str, member_name: str) -> BtfError:
        return self.error(f"{struct_name}.{member_name} is a bitfield; the kernel probe can only read "
                          "whole-byte members, so it must read another member on this kernel")

    def _size(self, type_id: int, struct_name: str, member_name: str) -> int:
        """Byte size of a type, through typedefs and modifiers; arrays multiply out."""
        type_id = self._strip_modifiers(type_id, struct_name, member_name)
        kind = self._kind(type_id)
        if kind == _PTR:
            return _POINTER_SIZE
        if kind in _SIZED:
            return int(self._record.unpack_from(self._data, self._type_offsets[type_id])[2])
        if kind == _ARRAY:
            element, _, count = struct.unpack_from(self._order + "III", self._data, self._type_offsets[type_id] + 12)
            return int(count) * self._size(element, struct_name, member_name)
        raise self.error(f"{struct_name}.{member_name} has a type of kind {kind} with no size")

    def _strip_modifiers(self, type_id: int, struct_name: str, member_name: str) -> int:
        for _ in range(_MAX_CHAIN):
            if self._kind(type_id) not in _MODIFIERS:
                return type_id
            type_id = self._record.unpack_from(self._data, self._type_offsets[type_id])[2]
        raise self.error(f"the type of {struct_name}.{member_name} is a typedef/modifier chain longer than "
                         f"{_MAX_CHAIN} (a loop?)")

    def _kind(self, type_id: int) -> int:
        if not 0 <= type_id < len(self._type_offsets):
            raise self.error(f"type id {type_id} is out of range ({len(self._type_offsets) - 1} types)")
        if type_id == 0:
            return 0  # void
        return int((self._u32.unpack_from(self._data, self._type_offsets[type_id] + 4)[0] >> 24) & 0x1F)

    def _string(self, offset: int) -> str:
        start = self._strings_start + offset
        end = self._data.find(b"\0", start, self._strings_end)
        if offset < 0 or end < 0:
            raise self.error(f"string offset {offset} is outside the string section")
        return self._data[start:end].decode(errors="replace")
