"""Falco's renderings of flags, enums, errnos and capabilities."""

from __future__ import annotations

import pytest

from sources.kernel.arg_format import (
    CLONE_FLAG_NAMES,
    EXE_FLAG_NAMES,
    OPEN_FLAG_NAMES,
    PTRACE_REQUEST_NAMES,
    SOCKET_FAMILY_NAMES,
    capabilities_text,
    enum_name,
    errno_name,
    flag_names,
    ppm_open_flags,
)


@pytest.mark.parametrize(("linux", "text"), [
    (0, "O_RDONLY"), (0o1, "O_WRONLY"), (0o2, "O_RDWR"), (0o2000000, "O_RDONLY|O_CLOEXEC"),
    (0o1101, "O_TRUNC|O_CREAT|O_WRONLY"), (0o2102, "O_APPEND|O_CREAT|O_RDWR"),
    (0o200000 | 0o2000000, "O_DIRECTORY|O_RDONLY|O_CLOEXEC"), (0o20200002, "O_RDWR|O_TMPFILE"),
])
def test_open_flags(linux: int, text: str) -> None:
    """Open flags print in Falco's order, O_RDWR hiding O_RDONLY and O_WRONLY."""
    assert flag_names(ppm_open_flags(linux), OPEN_FLAG_NAMES) == text


def test_enums_and_errnos() -> None:
    """Socket families, ptrace requests and errnos print by name; unknown values print nothing."""
    assert enum_name(17, SOCKET_FAMILY_NAMES) == "AF_PACKET" and enum_name(10, SOCKET_FAMILY_NAMES) == "AF_INET6"
    assert enum_name(0x4206, PTRACE_REQUEST_NAMES) == "PTRACE_SEIZE" and enum_name(999, PTRACE_REQUEST_NAMES) == ""
    assert errno_name(-2) == "ENOENT" and errno_name(-115) == "EINPROGRESS" and errno_name(3) == ""


def test_flag_sets() -> None:
    """Clone and exe flags join their names with |; no match prints nothing."""
    assert flag_names(0x10000 | 0x100, CLONE_FLAG_NAMES) == "CLONE_THREAD|CLONE_VM"
    assert flag_names(0b101, EXE_FLAG_NAMES) == "EXE_WRITABLE|EXE_FROM_MEMFD" and flag_names(0, EXE_FLAG_NAMES) == ""


def test_capabilities() -> None:
    """Capabilities print as space-separated CAP_ names in bit order."""
    assert capabilities_text(0b11 | 1 << 21) == "CAP_CHOWN CAP_DAC_OVERRIDE CAP_SYS_ADMIN"
    assert capabilities_text(0) == ""
