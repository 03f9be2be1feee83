"""Struct member offsets from BTF: a synthetic blob built here, and the running kernel's own BTF."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from sources.kernel import probe
from sources.kernel.btf import VMLINUX_BTF, BtfError, Member, member_layout

INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = 12, 13, 14, 15, 16, 17, 18, 19


class BtfBuilder:
    """Writes raw BTF: header, type records (ids from 1 in order) and a string section."""

    def __init__(self, order: str) -> None:
        self.order = order
        self.types = bytearray()
        self.strings = bytearray(b"\0")
        self.count = 0

    def words(self, *values: int) -> bytes:
        return struct.pack(f"{self.order}{len(values)}I", *values)

    def name(self, text: str) -> int:
        if not text:
            return 0
        offset = len(self.strings)
        self.strings += text.encode() + b"\0"
        return offset

    def add(self, kind: int, name: str = "", size_or_type: int = 0, *, vlen: int = 0, kind_flag: int = 0,
            trailing: bytes = b"") -> int:
        info = kind_flag << 31 | kind << 24 | vlen
        self.types += self.words(self.name(name), info, size_or_type) + trailing
        self.count += 1
        return self.count

    def add_int(self, name: str, size: int, bits: int | None = None) -> int:
        return self.add(INT, name, size, trailing=self.words(size * 8 if bits is None else bits))

    def add_struct(self, name: str, size: int, members: list[tuple[str, int, int]], *, kind: int = STRUCT,
                   kind_flag: int = 0) -> int:
        """`members` are (name, type id, offset word): a bit offset, plus the bitfield size << 24 if kind_flag."""
        trailing = b"".join(self.words(self.name(m_name), m_type, offset) for m_name, m_type, offset in members)
        return self.add(kind, name, size, vlen=len(members), kind_flag=kind_flag, trailing=trailing)

    def blob(self) -> bytes:
        header = struct.pack(f"{self.order}HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types),
                             len(self.strings))
        return header + bytes(self.types) + bytes(self.strings)


def build_blob(order: str = "<") -> bytes:
    b = BtfBuilder(order)
    int_t = b.add_int("int", 4)
    long_t = b.add_int("long", 8)
    char_t = b.add_int("char", 1)
    # Kinds with every shape of trailing data come before the structs, so each must be skipped exactly.
    b.add(ENUM, "colour", 4, vlen=2, trailing=b.words(b.name("RED"), 0, b.name("BLUE"), 1))
    b.add(ENUM64, "big", 8, vlen=1, trailing=b.words(b.name("HUGE"), 0, 1))
    proto = b.add(FUNC_PROTO, "", int_t, vlen=2, trailing=b.words(b.name("a"), long_t, b.name("b"), int_t))
    func = b.add(FUNC, "do_thing", proto)
    var = b.add(VAR, "counter", int_t, trailing=b.words(1))
    b.add(DATASEC, ".data", 4, vlen=1, trailing=b.words(var, 0, 4))
    b.add(DECL_TAG, "tag", func, trailing=b.words(0xFFFFFFFF))
    b.add(FLOAT, "double", 8)
    b.add(FWD, "outer")
    u64_t = b.add(TYPEDEF, "u64", long_t)
    const_u64 = b.add(CONST, "", u64_t)
    chained_t = b.add(VOLATILE, "", b.add(TYPE_TAG, "rcu", const_u64))
    ptr_t = b.add(PTR, "", int_t)
    name_t = b.add(ARRAY, "", 0, trailing=b.words(char_t, int_t, 16))
    b.add_struct("outer", 4, [("decoy", int_t, 0)], kind=UNION)  # a union of the same name is not the struct
    anon_union = b.add_struct("", 8, [("deep", ptr_t, 0), ("deep_int", int_t, 0)], kind=UNION)
    anon_struct = b.add_struct("", 16, [("pad", long_t, 0), ("", anon_union, 64)])
    bitfield_size = 3 << 24
    b.add_struct("outer", 72, kind_flag=1, members=[
        ("plain", int_t, 0),
        ("", anon_struct, 64),
        ("chained", chained_t, 256),
        ("name", name_t, 320),
        ("flags", int_t, bitfield_size | 448),
    ])
    b.add_struct("legacy", 8, [("whole", int_t, 0), ("shifted", int_t, 36), ("narrow", b.add_int("u3", 4, 3), 32)])
    b.add_struct("outer", 4, [("plain", int_t, 16)])  # a later struct of the same name does not count
    return b.blob()


def write(tmp_path: Path, blob: bytes) -> Path:
    path = tmp_path / "vmlinux"
    path.write_bytes(blob)
    return path


@pytest.mark.parametrize("order", ["<", ">"])
def test_offsets_add_up_through_anonymous_members_and_sizes_resolve_through_typedefs(tmp_path: Path,
                                                                                     order: str) -> None:
    path = write(tmp_path, build_blob(order))
    layout = member_layout([("outer", "plain"), ("outer", "deep"), ("outer", "deep_int"), ("outer", "pad"),
                            ("outer", "chained"), ("outer", "name"), ("legacy", "whole")], path)
    assert layout == {
        ("outer", "plain"): Member(0, 4),
        ("outer", "pad"): Member(8, 8),
        ("outer", "deep"): Member(16, 8),  # 8 (anonymous struct) + 8 (anonymous union) + 0; a pointer is 8
        ("outer", "deep_int"): Member(16, 4),
        ("outer", "chained"): Member(32, 8),  # volatile -> type tag -> const -> typedef u64 -> long
        ("outer", "name"): Member(40, 16),  # char[16]
        ("legacy", "whole"): Member(0, 4),
    }


@pytest.mark.parametrize("member", ["flags", "shifted", "narrow"])
def test_a_bitfield_member_is_refused_by_name(tmp_path: Path, member: str) -> None:
    struct_name = "outer" if member == "flags" else "legacy"
    path = write(tmp_path, build_blob())
    with pytest.raises(BtfError, match=rf"{struct_name}\.{member} is a bitfield") as caught:
        member_layout([(struct_name, member)], path)
    assert str(path) in str(caught.value)


def test_a_missing_member_is_named_with_its_struct(tmp_path: Path) -> None:
    path = write(tmp_path, build_blob())
    with pytest.raises(BtfError, match="struct outer has no member i_ino") as caught:
        member_layout([("outer", "plain"), ("outer", "i_ino")], path)
    assert str(caught.value).startswith(f"{path}: ")


@pytest.mark.parametrize("struct_name", ["inode", "colour", "u64"])
def test_a_missing_struct_is_named_even_if_another_kind_has_its_name(tmp_path: Path, struct_name: str) -> None:
    path = write(tmp_path, build_blob())
    with pytest.raises(BtfError, match=rf"struct {struct_name} not found.*{struct_name}\.x") as caught:
        member_layout([(struct_name, "x")], path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("keep", [1, 10, -4, -100])  # within the magic, the header, the strings, the types
def test_a_truncated_blob_is_refused_with_the_file_named(tmp_path: Path, keep: int) -> None:
    path = write(tmp_path, build_blob()[:keep])
    with pytest.raises(BtfError, match="truncated") as caught:
        member_layout([("outer", "plain")], path)
    assert str(path) in str(caught.value)


def test_a_type_section_that_cuts_a_record_is_refused(tmp_path: Path) -> None:
    blob = bytearray(build_blob())
    (type_len,) = struct.unpack_from("<I", blob, 12)
    struct.pack_into("<I", blob, 12, type_len - 4)  # the last record now overruns its section
    path = write(tmp_path, bytes(blob))
    with pytest.raises(BtfError, match=r"type \d+ runs past the end of the type section"):
        member_layout([("outer", "plain")], path)


def test_bad_magic_is_refused_with_the_file_named(tmp_path: Path) -> None:
    path = write(tmp_path, b"\x7fELF" + build_blob()[4:])
    with pytest.raises(BtfError, match="bad magic 7f45") as caught:
        member_layout([("outer", "plain")], path)
    assert str(path) in str(caught.value)


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent"
    with pytest.raises(BtfError, match="cannot read kernel BTF") as caught:
        member_layout([("outer", "plain")], path)
    assert str(path) in str(caught.value)


PROBE_MEMBERS = [("task_struct", "files"), ("files_struct", "fdt"), ("fdtable", "fd"), ("file", "f_inode"),
                 ("inode", "i_ino"), ("inode", "i_sb"), ("super_block", "s_dev")]


def test_the_running_kernel_has_every_member_the_probe_reads() -> None:
    if not VMLINUX_BTF.exists():
        pytest.skip(f"{VMLINUX_BTF} is absent: this kernel was built without CONFIG_DEBUG_INFO_BTF")
    layout = member_layout(PROBE_MEMBERS)
    assert set(layout) == set(PROBE_MEMBERS)
    pointers = [("task_struct", "files"), ("files_struct", "fdt"), ("fdtable", "fd"), ("file", "f_inode"),
                ("inode", "i_sb")]
    assert all(layout[pair].size == 8 for pair in pointers)
    assert layout[("inode", "i_ino")].size == 8
    assert layout[("super_block", "s_dev")].size == 4
    assert layout[("task_struct", "files")].offset > 0
    assert all(0 <= member.offset < 16384 and member.offset % member.size == 0 for member in layout.values())


def test_the_probe_reads_file_ids_only_at_offsets_btf_gives_with_the_sizes_it_reads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No BTF, or a member of another size than the C reads: the probe goes without file ids (and says so)."""
    def missing(wanted: object) -> dict[tuple[str, str], Member]:
        raise BtfError("no BTF here")

    monkeypatch.setattr(probe, "member_layout", missing)
    assert probe.btf_offsets() is None
    layout = {(struct, member): Member(8 * i, size) for i, (struct, member, size)
              in enumerate(probe.BTF_MEMBERS.values())}
    monkeypatch.setattr(probe, "member_layout", lambda wanted: layout)
    assert probe.btf_offsets() == {name: 8 * i for i, name in enumerate(probe.BTF_MEMBERS)}
    layout[("super_block", "s_dev")] = Member(16, 8)  # a 64-bit dev_t: the C reads 4 bytes
    assert probe.btf_offsets() is None
