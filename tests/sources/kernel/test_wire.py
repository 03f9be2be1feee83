"""Decoding of the ring buffer records the BPF programs write (layout shared with probe_program)."""

from __future__ import annotations

import struct

import pytest

from sources.kernel.wire import HEADER, TYPE_IDS, RecordDecoder, close_fields


def _record(type_name: str, *, args: tuple[int, ...] = (), parts: tuple[bytes, ...] = (), res: int = 0,
            tid: int = 42, pid: int = 40, comm: bytes = b"cat", cpu: int = 1) -> bytes:
    values = (list(args) + [0] * 6)[:6]
    lens = (list(len(p) for p in parts) + [0] * 6)[:6]
    header = HEADER.pack(1_000, 77, tid, pid, 1000, 1001, res, *values, TYPE_IDS[type_name], len(parts), *lens, comm,
                         cpu)
    return header + b"".join(parts)


def test_openat_carries_its_path_flags_and_result() -> None:
    at_fdcwd = (1 << 64) - 100  # the tracepoint slot holds the int sign-extended or not: both decode to -100
    raw = _record("openat", args=(at_fdcwd, 0o1101, 0o644, 0xFE00, 2**40 + 7), parts=(b"/etc/shadow\0",), res=3)
    record = RecordDecoder().decode(raw)
    assert record.type == "openat" and record.res == 3 and (record.tid, record.pid) == (42, 40)
    assert record.args == {"fd": 3, "dirfd": -100, "name": "/etc/shadow", "flags": 0o1101, "mode": 0o644,
                           "dev": 0xFE00, "ino": 2**40 + 7,  # the file's device and inode: unsigned
                           "dir_ino": 0, "dirent": ""}  # made in no watched directory: no name part


def test_a_file_made_in_a_watched_directory_carries_its_name_there() -> None:
    raw = _record("openat", args=(5, 0o101, 0o644, 0xFE00, 99, 12), parts=(b"evil\0", b"cron-evil\0"), res=3)
    record = RecordDecoder().decode(raw)
    assert (record.args["name"], record.args["dir_ino"], record.args["dirent"]) == ("evil", 12, "cron-evil")
    assert (record.uid, record.gid, record.comm, record.cgroup_id, record.cpu) == (1000, 1001, "cat", 77, 1)


@pytest.mark.parametrize(("part", "name", "dirfd"), [
    (b"/etc/shadow", "/etc/shadow", 2**32 - 100),  # a path cut at the copy limit has no NUL: kept whole
    (b"/tmp/a\0junk", "/tmp/a", 5),  # the text ends at the first NUL
    (b"/tmp/\xff\0", "/tmp/\udcff", 2**31 - 1),  # bytes that are not UTF-8 survive (surrogateescape)
    (b"/tmp/\xc3\0\xa9", "/tmp/\udcc3", 7),  # a character cut by the NUL is not joined across it
    (b"/" + b"a" * 300 + b"\0", "/" + "a" * 300, 2**32 - 1),  # longer than the texts remembered
    (b"/tmp/b\0", "/tmp/b", (1 << 64) - 2**31),  # the lowest int sign-extended
    (b"/tmp/c\0", "/tmp/c", (1 << 64) - 2**31 - 1),  # not an int sign-extended: its low 32 bits count
])
def test_a_path_is_the_text_before_its_first_nul(part: bytes, name: str, dirfd: int) -> None:
    # Twice: decoded, then remembered (or not, past the longest kept).
    for _ in range(2):
        record = RecordDecoder().decode(_record("openat", args=(dirfd, 0, 0), parts=(part,), res=3))
        assert record.args["name"] == name
        assert record.args["dirfd"] == ((dirfd + 2**31) & (2**32 - 1)) - 2**31


def test_failed_open_keeps_the_negative_errno() -> None:
    record = RecordDecoder().decode(_record("open", args=(0, 0), parts=(b"/nope\0",), res=-2))
    assert record.res == -2 and record.args["fd"] == -2 and record.args["name"] == "/nope"


def test_execve_argv_is_split_on_nul() -> None:
    raw = _record("execve", parts=(b"/bin/ls\0", b"ls\0-la\0/tmp\0"))
    record = RecordDecoder().decode(raw)
    assert record.args == {"res": 0, "filename": "/bin/ls", "argv": ["ls", "-la", "/tmp"]}


def test_two_paths_and_a_socket_address_are_kept_apart() -> None:
    link = RecordDecoder().decode(_record("symlinkat", args=(2**32 - 100,), parts=(b"/etc/shadow\0", b"/tmp/x\0")))
    assert link.args["target"] == "/etc/shadow" and link.args["linkpath"] == "/tmp/x"
    address = struct.pack("<HH4s8x", 2, 0x5000, bytes([127, 0, 0, 1]))
    connect = RecordDecoder().decode(_record("connect", args=(5,), parts=(address,)))
    assert connect.args == {"res": 0, "fd": 5, "addr": address, "local_addr": b""}  # no TCP local end noted


def test_the_tcp_local_end_of_a_connect_becomes_a_sockaddr() -> None:
    family_port = (2 << 16) | 51000
    ipv4 = int.from_bytes(bytes([10, 0, 0, 5]) + bytes(4), "little")
    record = RecordDecoder().decode(_record("connect", args=(5, 0, 0, family_port, ipv4, 0), parts=(b"",)))
    assert record.args["local_addr"] == struct.pack("<H", 2) + struct.pack(">H", 51000) + bytes([10, 0, 0, 5, *[0] * 8])
    ipv6 = bytes(range(16))
    low, high = int.from_bytes(ipv6[:8], "little"), int.from_bytes(ipv6[8:], "little")
    record = RecordDecoder().decode(_record("connect", args=(5, 0, 0, (10 << 16) | 443, low, high), parts=(b"",)))
    assert record.args["local_addr"] == struct.pack("<H", 10) + struct.pack(">H", 443) + bytes(4) + ipv6 + bytes(4)


def test_openat2_splits_open_how_into_flags_mode_and_resolve() -> None:
    how = struct.pack("<QQQ", 0o100, 0o600, 8)
    record = RecordDecoder().decode(_record("openat2", args=(3,), parts=(b"x\0", how), res=4))
    assert record.args == {"fd": 4, "dirfd": 3, "name": "x", "flags": 0o100, "mode": 0o600, "resolve": 8,
                           "dev": 0, "ino": 0, "dir_ino": 0, "dirent": ""}


def test_pipe_fds_come_back_as_a_pair() -> None:
    record = RecordDecoder().decode(_record("pipe2", args=(0,), parts=(struct.pack("<ii", 5, 6),)))
    assert record.args["fds"] == (5, 6)


@pytest.mark.parametrize(("flags", "child_pid"), [(0x11, 77), (0x00010000 | 0x100, 40)])
def test_clone_tells_a_new_process_from_a_new_thread(flags: int, child_pid: int) -> None:
    record = RecordDecoder().decode(_record("clone", args=(77, flags), res=77))
    assert record.args == {"child_tid": 77, "child_pid": child_pid, "flags": flags}


def test_a_late_tcp_port_names_its_fd() -> None:
    assert RecordDecoder().decode(_record("tcp_local", args=(4, 51000))).args == {"fd": 4, "local_port": 51000}


def test_procexit_says_whether_the_process_is_gone() -> None:
    assert RecordDecoder().decode(_record("procexit", args=(1,))).args == {"group_dead": True}


def test_times_are_wall_clock() -> None:
    import time

    record = RecordDecoder().decode(_record("close", args=(3,)))
    assert abs(record.ts_ns - time.time_ns()) < 10 * 24 * 3600 * 10**9


def test_bad_records_are_named() -> None:
    with pytest.raises(ValueError, match="shorter than its 122-byte header"):
        RecordDecoder().decode(b"\0" * 20)
    raw = bytearray(_record("close"))
    struct.pack_into("<H", raw, 88, 999)
    with pytest.raises(ValueError, match="unknown event type id 999"):
        RecordDecoder().decode(bytes(raw))


def test_process_names_decode_each_to_its_own_even_when_remembered() -> None:
    """Names are cached per raw 16 bytes: a full-length name (no NUL) and names that share a prefix stay apart."""
    decoder = RecordDecoder()
    names = [b"cat", b"catalina", b"a-full-16-bytes!", b"cat", b"caf\xe9"]
    decoded = [decoder.decode(_record("close", args=(3,), comm=name)).comm for name in names]
    assert decoded == ["cat", "catalina", "a-full-16-bytes!", "cat", "caf\udce9"]


def test_a_close_is_read_without_decoding_and_nothing_else_is() -> None:
    """(tid, pid, res, fd) straight from the header, the fd sign-extended as the decoder does."""
    raw = _record("close", args=(2**32 - 9,), res=-9)
    assert close_fields(raw) == (42, 40, -9, -9) == (*[getattr(RecordDecoder().decode(raw), f) for f in
                                                       ("tid", "pid", "res")], RecordDecoder().decode(raw).args["fd"])
    assert close_fields(_record("openat", args=(5,), parts=(b"x\0",))) is None
    assert close_fields(_record("dup", args=(5,))) is None
