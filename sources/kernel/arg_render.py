"""One event parameter as Falco prints it: the raw text, the resolved text, and the raw value.

`evt.arg.X` shows the resolved text when there is one (`O_RDONLY|O_CLOEXEC`, `AF_PACKET`, `ENOENT`,
`<f>/etc/passwd`) and the raw text otherwise; `evt.args` shows `name=raw(resolved)`.
Exec events show Falco's exit parameters of execve (exe, args, cwd, flags as exe flags, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.fields import buffer_text
from sources.kernel.arg_format import (
    AT_FLAG_NAMES,
    CHMOD_MODE_NAMES,
    CLONE_FLAG_NAMES,
    DUP_FLAG_NAMES,
    EXE_FLAG_NAMES,
    EXE_FROM_MEMFD,
    EXE_LOWER_LAYER,
    EXE_UPPER_LAYER,
    EXE_WRITABLE,
    MEMFD_FLAG_NAMES,
    MOUNT_FLAG_NAMES,
    OPEN_FLAG_NAMES,
    PTRACE_REQUEST_NAMES,
    RENAME_FLAG_NAMES,
    SOCKET_FAMILY_NAMES,
    NameTable,
    capabilities_text,
    enum_name,
    errno_name,
    flag_names,
    ppm_open_flags,
)
from sources.kernel.record import SyscallRecord
from sources.kernel.state.accounts import UNKNOWN_NAME
from sources.kernel.state.fd_events import OPEN_TYPES, open_flags
from sources.kernel.state.fds import FdInfo
from sources.kernel.state.paths import AT_FDCWD, absolute_path
from sources.kernel.state.payload import SyscallEvent
from sources.kernel.state.sockaddr import parse_sockaddr
from sources.kernel.state.threads import ThreadInfo
from sources.kernel.syscalls import SYSCALLS, Copy, Param, ParamKind, SyscallSpec

#: (raw text, resolved text): resolved is "" when there is nothing to add.
Rendered = tuple[str, str]
_FLAG_TABLES: dict[ParamKind, NameTable] = {
    ParamKind.CLONE_FLAGS: CLONE_FLAG_NAMES, ParamKind.DUP_FLAGS: DUP_FLAG_NAMES,
    ParamKind.AT_FLAGS: AT_FLAG_NAMES, ParamKind.RENAME_FLAGS: RENAME_FLAG_NAMES,
    ParamKind.MEMFD_FLAGS: MEMFD_FLAG_NAMES, ParamKind.MOUNT_FLAGS: MOUNT_FLAG_NAMES,
}
EXEC_TYPES = frozenset({"execve", "execveat"})
_NO_ID = 0xFFFFFFFF  # (uid_t)-1: "leave unchanged" for the set*id syscalls
_UNRESOLVED_PATHS = frozenset({"target"})  # a symlink's target is stored as written


def exe_flags(thread: ThreadInfo) -> int:
    return ((EXE_WRITABLE if thread.exe_writable else 0) | (EXE_UPPER_LAYER if thread.exe_upper_layer else 0)
            | (EXE_FROM_MEMFD if thread.exe_from_memfd else 0) | (EXE_LOWER_LAYER if thread.exe_lower_layer else 0))


def fd_text(info: FdInfo) -> str:
    """An fd as Falco resolves an fd parameter: `<f>/etc/passwd`, `<4t>1.2.3.4:5->6.7.8.9:80`."""
    proto = info.l4proto[:1] if info.type.is_ip else ""
    return f"<{info.type.char}{proto}>{info.name}"


def _fd(ev: SyscallEvent, value: int) -> Rendered:
    if value == AT_FDCWD:
        return str(value), "AT_FDCWD"
    if value < 0:
        return str(value), errno_name(value)
    info = ev.fd if ev.fd is not None and ev.fd.num == value else ev.thread.fds.get(value)
    return str(value), fd_text(info) if info is not None else ""


def _relative_to(spec: SyscallSpec) -> dict[str, str]:
    """Path parameter -> the directory-fd argument it is relative to (libsinsp's PT_FSRELPATH): in these tables,
    as in libscap's, an *at path follows its dirfd; a path after the result (open's fd) is relative to the cwd."""
    pairs = zip(spec.params, spec.params[1:], strict=False)
    return {path.name: fd.name for fd, path in pairs
            if path.kind is ParamKind.PATH and fd.kind is ParamKind.FD and fd.copy is not Copy.RESULT}


_DIRFD_OF: dict[str, dict[str, str]] = {name: _relative_to(spec) for name, spec in SYSCALLS.items()}


def _base_dir(ev: SyscallEvent, param: Param) -> str | None:
    """The directory a relative path argument starts from: its dirfd's path, else the cwd; None when the dirfd
    is not a descriptor the state knows (libsinsp then leaves the path as given)."""
    dirfd_name = _DIRFD_OF.get(ev.record.type, {}).get(param.name)
    dirfd = ev.record.args.get(dirfd_name) if dirfd_name is not None else None
    return ev.thread.cwd if dirfd is None else dirfd_dir(ev, int(dirfd))


def dirfd_dir(ev: SyscallEvent, dirfd: int) -> str | None:
    """The directory an *at syscall's `dirfd` names: the cwd for AT_FDCWD, else the descriptor's path; None
    when the state does not know the descriptor."""
    if dirfd == AT_FDCWD:
        return ev.thread.cwd
    info = ev.thread.fds.get(dirfd)
    return info.name if info is not None else None


def _path(ev: SyscallEvent, param: Param, value: str) -> Rendered:
    if param.name in _UNRESOLVED_PATHS or not value or value.startswith("/"):
        return value, ""
    base = _base_dir(ev, param)
    return value, absolute_path(base, value) if base is not None else ""


def _argument(rec: SyscallRecord, param: Param) -> Any:
    """The parameter as captured: the syscall's result or one of its arguments (None when absent)."""
    return rec.res if param.copy is Copy.RESULT else rec.args.get(param.name)


def render_param(ev: SyscallEvent, param: Param) -> Rendered | None:
    """A parameter of the record as (raw, resolved); None when the record lacks it."""
    rec = ev.record
    kind = param.kind
    if kind is ParamKind.OPEN_FLAGS and rec.type in OPEN_TYPES:
        ppm = ppm_open_flags(open_flags(rec))
        return str(ppm), flag_names(ppm, OPEN_FLAG_NAMES)
    value = _argument(rec, param)
    if value is None:
        return None
    if kind is ParamKind.FD:
        return _fd(ev, int(value))
    if kind is ParamKind.INT and param.name == "res":
        return str(value), errno_name(int(value))
    if kind is ParamKind.OPEN_FLAGS:
        ppm = ppm_open_flags(int(value))
        return str(ppm), flag_names(ppm, OPEN_FLAG_NAMES)
    if kind is ParamKind.SOCK_FAMILY:
        return str(value), enum_name(int(value), SOCKET_FAMILY_NAMES)
    if kind is ParamKind.PTRACE_REQUEST:
        return str(value), enum_name(int(value), PTRACE_REQUEST_NAMES)
    if kind in _FLAG_TABLES:
        return str(value), flag_names(int(value), _FLAG_TABLES[kind])
    if kind in (ParamKind.MODE, ParamKind.CHMOD_MODE):
        names = flag_names(int(value), CHMOD_MODE_NAMES) if kind is ParamKind.CHMOD_MODE else ""
        return (f"0{int(value):o}" if value else "0"), names
    if kind is ParamKind.HEX:
        return (value.hex() if isinstance(value, bytes) else f"{int(value):X}"), ""
    if kind is ParamKind.PID:
        target = ev.lookups.threads.get(int(value))
        return str(value), target.comm if target is not None else ""
    if kind in (ParamKind.UID, ParamKind.GID):
        return _account_id(ev, int(value), is_user=kind is ParamKind.UID)
    if kind is ParamKind.PATH:
        return _path(ev, param, str(value))
    if kind is ParamKind.SOCKADDR:
        return sockaddr_text(value), ""
    if kind is ParamKind.ARGV:
        return " ".join(value), ""
    if kind is ParamKind.FD_PAIR:
        return " ".join(str(v) for v in value), ""
    if kind is ParamKind.BYTEBUF:
        return buffer_text(value), ""
    return str(value), ""


def _account_id(ev: SyscallEvent, value: int, *, is_user: bool) -> Rendered:
    """A uid or gid the syscall names, resolved in the thread's container as libsinsp does: not the thread's own
    id (setuid's argument is not the thread's uid yet); `<NA>` when no account has it, `<NONE>` for -1."""
    value &= _NO_ID  # the kernel takes the low 32 bits, however the caller widened them
    if value == _NO_ID:
        return "-1", "<NONE>"
    container_id = ev.thread.container_id
    if is_user:
        entry = ev.lookups.accounts.user(container_id, value)
        name = entry.name if entry is not None else None
    else:
        name = ev.lookups.accounts.group_name(container_id, value)
    return str(value), name or UNKNOWN_NAME


def sockaddr_text(raw: bytes) -> str:
    addr = parse_sockaddr(raw)
    if addr is None:
        return ""
    if addr.ip is not None:
        return f"{addr.ip}:{addr.port}"
    return addr.path


def raw_value(ev: SyscallEvent, param: Param) -> Any:
    """`evt.rawarg`: the number itself for numeric parameters (open flags in Falco's layout), else text."""
    rec = ev.record
    if param.kind is ParamKind.OPEN_FLAGS and rec.type in OPEN_TYPES:
        return ppm_open_flags(open_flags(rec))
    value = _argument(rec, param)
    if value is None:
        return None
    if param.kind is ParamKind.OPEN_FLAGS:
        return ppm_open_flags(int(value))
    if isinstance(value, (int, str)):
        return value
    if param.kind is ParamKind.BYTEBUF:
        # The buffer's own bytes, as text: string operators compare them as Falco compares the raw buffer.
        return value.decode("utf-8", "surrogateescape")
    rendered = render_param(ev, param)
    return rendered[0] if rendered is not None else None


# Exec events: Falco's execve exit parameters, computed from the new image.
_EXEC_PARAMS: dict[str, Callable[[SyscallEvent], Rendered]] = {
    "res": lambda ev: (str(ev.record.res), errno_name(ev.record.res)),
    "exe": lambda ev: (ev.thread.exe, ""),
    "args": lambda ev: (" ".join(ev.thread.args), ""),
    "tid": lambda ev: (str(ev.thread.tid), ""),
    "pid": lambda ev: (str(ev.thread.pid), ""),
    "ptid": lambda ev: (str(ev.thread.ppid), ""),
    "cwd": lambda ev: (ev.thread.cwd, ""),
    "comm": lambda ev: (ev.thread.comm, ""),
    "env": lambda ev: (" ".join(ev.thread.env), ""),
    "tty": lambda ev: (str(ev.thread.tty), ""),
    "pgid": lambda ev: (str(ev.thread.pgid), ""),
    "vpgid": lambda ev: (str(ev.thread.pgid), ""),
    "loginuid": lambda ev: (str(ev.thread.loginuid), ""),
    "flags": lambda ev: (str(exe_flags(ev.thread)), flag_names(exe_flags(ev.thread), EXE_FLAG_NAMES)),
    "cap_inheritable": lambda ev: (capabilities_text(ev.thread.cap_inheritable), ""),
    "cap_permitted": lambda ev: (capabilities_text(ev.thread.cap_permitted), ""),
    "cap_effective": lambda ev: (capabilities_text(ev.thread.cap_effective), ""),
    "exe_ino": lambda ev: (str(ev.thread.exe_ino), ""),
    "exe_ino_ctime": lambda ev: (str(ev.thread.exe_ctime_ns), ""),
    "exe_ino_mtime": lambda ev: (str(ev.thread.exe_mtime_ns), ""),
    "uid": lambda ev: (str(ev.thread.euid), ""),
    "gid": lambda ev: (str(ev.thread.egid), ""),
    "trusted_exepath": lambda ev: (ev.thread.exepath, ""),
}
_EXEC_ORDER = ("res", "exe", "args", "tid", "pid", "ptid", "cwd", "comm", "env", "tty", "pgid", "loginuid",
               "flags", "cap_inheritable", "cap_permitted", "cap_effective", "exe_ino", "exe_ino_ctime",
               "exe_ino_mtime", "uid", "trusted_exepath", "gid")


def param_names(ev: SyscallEvent) -> tuple[str, ...]:
    """The event's parameter names in Falco's order (for `evt.arg[N]` and `evt.args`)."""
    if ev.record.type in EXEC_TYPES:
        return _EXEC_ORDER
    spec = SYSCALLS.get(ev.record.type)
    if spec is not None:
        return tuple(p.name for p in spec.params if p.shown)
    return tuple(ev.record.args)


def render_named(ev: SyscallEvent, name: str) -> Rendered | None:
    """A parameter by name, exec parameters included."""
    if ev.record.type in EXEC_TYPES and name in _EXEC_PARAMS:
        return _EXEC_PARAMS[name](ev)
    param = find_param(ev.record.type, name)
    if param is not None:
        return render_param(ev, param)
    value = ev.record.args.get(name)
    return (str(value), "") if value is not None else None


#: openat2 and creat carry no `flags` parameter of their own; Falco shows their open flags anyway.
_OPEN_FLAGS_PARAM = Param("flags", ParamKind.OPEN_FLAGS, "flags")


def find_param(event_type: str, name: str) -> Param | None:
    if name == "flags" and event_type in OPEN_TYPES:
        return _OPEN_FLAGS_PARAM
    spec = SYSCALLS.get(event_type)
    if spec is None:
        return None
    for param in spec.params:
        if param.name == name:
            return param
    return None
