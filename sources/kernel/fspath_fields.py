"""Extractors of `fs.path.*`: the path a successful filesystem syscall acted on, or its source and target.

As libsinsp, each event type names the parameter that holds the path (or the source and the target), and
only a successful call has a value: `res == 0`, or for the open family any result but -1. The raw fields give
the path as passed; the others make a relative path absolute against the working directory (never against
a dirfd, as libsinsp) and normalize it lexically, leaving an absolute path as it was passed.
"""

from __future__ import annotations

from enum import Enum

from agent.fields import ExtractorFactory, Value
from sources.kernel.evt_fields import simple
from sources.kernel.state.fd_events import OPEN_TYPES
from sources.kernel.state.payload import SyscallEvent


class _Role(Enum):
    PATH = "path"
    SOURCE = "source"
    TARGET = "target"


#: The parameter holding the path of a one-path call, by event type.
_PATH_PARAM: dict[str, str] = {
    "mkdir": "path", "mkdirat": "path", "rmdir": "path", "unlink": "path", "unlinkat": "name", "open": "name",
    "openat": "name", "openat2": "name", "chmod": "filename", "fchmodat": "filename", "chown": "path",
    "lchown": "path", "fchownat": "pathname",
}
#: The (source, target) parameters of a two-path call; link's source is the new name (the link it makes).
_SOURCE_TARGET_PARAMS: dict[str, tuple[str, str]] = {
    **dict.fromkeys(("rename", "renameat", "renameat2"), ("oldpath", "newpath")),
    **dict.fromkeys(("link", "linkat"), ("newpath", "oldpath")),
    **dict.fromkeys(("symlink", "symlinkat"), ("linkpath", "target")),
    "mount": ("dev", "dir"),
}
#: Calls on a descriptor: their path is the descriptor's name.
_ON_FD = frozenset({"fchmod", "fchown"})

#: The open family fails with a negative errno; libsinsp's success test there is only `fd != -1`.
_EPERM_RESULT = -1


def _succeeded(ev: SyscallEvent) -> bool:
    res = ev.record.res
    return res != _EPERM_RESULT if ev.record.type in OPEN_TYPES else res == 0


def _raw_path(ev: SyscallEvent, role: _Role) -> str | None:
    if not _succeeded(ev):
        return None
    if ev.record.type in _ON_FD:
        return ev.fd.name if role is _Role.PATH and ev.fd is not None else None
    if role is _Role.PATH:
        param = _PATH_PARAM.get(ev.record.type)
    else:
        pair = _SOURCE_TARGET_PARAMS.get(ev.record.type)
        param = pair[role is _Role.TARGET] if pair is not None else None
    value = ev.record.args.get(param) if param is not None else None
    return value if isinstance(value, str) else None


def lexically_normal(path: str) -> str:
    """std::filesystem's lexically_normal of an absolute POSIX path: slashes folded, `.` dropped, `name/..` and a
    `..` at the root removed; a trailing slash stays, and a path ending in `.` or `..` ends in one."""
    names = [name for name in path.split("/") if name]
    kept: list[str] = []
    for name in names:
        if name == "..":
            if kept:
                kept.pop()
        elif name != ".":
            kept.append(name)
    trailing = path.endswith("/") or (bool(names) and names[-1] in (".", ".."))
    return "/" + "/".join(kept) + ("/" if trailing and kept else "")


def _path_field(role: _Role, *, raw: bool) -> ExtractorFactory:
    def get(ev: SyscallEvent) -> Value:
        path = _raw_path(ev, role)
        if path is None or raw or path.startswith("/"):
            return path
        cwd = ev.thread.cwd
        return lexically_normal(cwd.rstrip("/") + "/" + path) if cwd else None

    return simple(get)


FSPATH_EXTRACTORS: dict[str, ExtractorFactory] = {
    "fs.path.name": _path_field(_Role.PATH, raw=False),
    "fs.path.nameraw": _path_field(_Role.PATH, raw=True),
    "fs.path.source": _path_field(_Role.SOURCE, raw=False),
    "fs.path.sourceraw": _path_field(_Role.SOURCE, raw=True),
    "fs.path.target": _path_field(_Role.TARGET, raw=False),
    "fs.path.targetraw": _path_field(_Role.TARGET, raw=True),
}
