"""The generated BPF C: what gets attached, and the limits of the table it is generated from."""

from __future__ import annotations

import re

import pytest

from sources.kernel.probe_program import BTF_MEMBERS, REGISTERS, generate, saved_slots
from sources.kernel.syscalls import SYSCALLS, Copy
from sources.kernel.wire import LOCAL_SLOTS, MAX_ARGS, MAX_PARTS


def _attached(source: str) -> set[tuple[str, str]]:
    return set(re.findall(r"TRACEPOINT_PROBE\((\w+), (\w+)\)", source))


def test_only_the_chosen_syscalls_and_the_process_lifecycle_are_attached() -> None:
    attached = _attached(generate(["openat", "execve"], ring_buffer_pages=64))
    syscalls = {name for cat, name in attached if cat == "syscalls"}
    assert {"sys_enter_openat", "sys_exit_openat", "sys_enter_execve", "sys_exit_execve"} <= syscalls
    assert not any("connect" in name or "unlink" in name for name in syscalls)
    assert {("sched", "sched_process_fork"), ("sched", "sched_process_exit")} <= attached


def test_every_table_entry_fits_the_record() -> None:
    """Saved arguments fit the slots (and leave a TCP connect's local-end slots free); user copies fit the parts."""
    source = generate(SYSCALLS, ring_buffer_pages=64)
    for spec in SYSCALLS.values():
        slots = saved_slots(spec)
        assert len(slots) <= (LOCAL_SLOTS[0] if spec.tcp_local else MAX_ARGS), spec.name
        assert sum(p.copy.is_part for p in spec.params) <= MAX_PARTS, spec.name
        assert f"sys_exit_{spec.syscall}" in source
        # The record carries the values, then the file's device and inode, in its slots (as wire.py decodes).
        kinds = [p.copy for p in spec.params if not p.copy.is_part and p.copy is not Copy.RESULT]
        assert len(kinds) <= MAX_ARGS, spec.name
        assert kinds == sorted(kinds, key=lambda copy: copy is not Copy.VALUE), spec.name


def test_bad_requests_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="power of two"):
        generate(["openat"], ring_buffer_pages=1000)
    with pytest.raises(ValueError, match="unknown syscalls: frobnicate"):
        generate(["frobnicate"], ring_buffer_pages=64)


def test_file_ids_need_every_kernel_offset() -> None:
    """Without BTF offsets opens report no device and inode; given them, every one is defined for the C."""
    assert "#define BTF_OFFSETS" not in generate(["openat"], ring_buffer_pages=64)
    offsets = {name: 8 * i for i, name in enumerate(BTF_MEMBERS)}
    source = generate(["openat"], ring_buffer_pages=64, btf_offsets=offsets)
    assert all(f"#define {name} {offset}\n" in source for name, offset in offsets.items())
    del offsets["OFF_SB_DEV"]
    with pytest.raises(ValueError, match="lacks OFF_SB_DEV"):
        generate(["openat"], ring_buffer_pages=64, btf_offsets=offsets)


def test_with_the_registers_offsets_opens_and_closes_are_made_at_exit_alone() -> None:
    """One program per open and close instead of two; other syscalls, and a machine whose BTF names no x86-64
    registers, keep their enter programs. The agent's own syscalls are skipped at that exit."""
    offsets = {name: 8 * i for i, name in enumerate(BTF_MEMBERS)}

    def syscall_programs(given: dict[str, int]) -> set[str]:
        source = generate(["openat", "close", "connect"], ring_buffer_pages=64, btf_offsets=given)
        return {name for category, name in _attached(source) if category == "syscalls"}

    attached = syscall_programs(offsets)
    assert {"sys_exit_openat", "sys_exit_close", "sys_enter_connect", "sys_exit_connect"} <= attached
    assert not {"sys_enter_openat", "sys_enter_close"} & attached
    without_registers = {name: offset for name, offset in offsets.items() if name not in REGISTERS}
    assert {"sys_enter_openat", "sys_enter_close"} <= syscall_programs(without_registers)
    source = generate(["openat", "close"], ring_buffer_pages=64, btf_offsets=offsets)
    exits = re.findall(r"TRACEPOINT_PROBE\(syscalls, sys_exit_\w+\) \{(.*?)\n\}", source, re.S)
    assert len(exits) == 2 and all("if (is_self(id)) return 0;" in body for body in exits)


def test_the_agent_itself_is_filtered_in_every_enter_program() -> None:
    source = generate(["openat", "connect"], ring_buffer_pages=64)
    enters = re.findall(r"TRACEPOINT_PROBE\(syscalls, sys_enter_\w+\) \{(.*?)\n\}", source, re.S)
    assert enters and all("is_self(id)" in body for body in enters)
