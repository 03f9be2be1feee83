"""Turn a path as a process passed it into the absolute path Falco reports, without touching the disk."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass

#: The dirfd value meaning "relative to the working directory".
AT_FDCWD = -100
#: Paths seen lately that name themselves (`plain_path`); at most _PLAIN_PATHS_KEPT, none longer than
#: _PLAIN_PATH_LONGEST.
PLAIN_PATHS: set[str] = set()
_PLAIN_PATHS_KEPT = 4096
_PLAIN_PATH_LONGEST = 256


def absolute_path(base: str, path: str) -> str:
    """`path` resolved against directory `base` lexically: `.`/`..` folded, duplicate slashes dropped.

    Like libsinsp, symlinks are not followed; an empty path stays empty.
    """
    if not path:
        return ""
    if names_itself(path):
        return path
    joined = path if path.startswith("/") else f"{base or '/'}/{path}"
    normal = posixpath.normpath(joined)
    # normpath keeps a leading "//" (POSIX allows it to mean something else); Linux does not.
    return "/" + normal.lstrip("/") if normal.startswith("//") else normal


def names_itself(path: str) -> bool:
    """Whether `path` (not empty) is already the absolute path Falco reports, whatever the base: absolute, with
    nothing to fold (a `.` or `..` component always follows a slash) and no procfs link on the way (the usual open:
    callers skip resolving it)."""
    return (path[0] == "/" and "//" not in path and "/." not in path and path[-1] != "/" and "/proc" not in path
            and "/dev/fd" not in path)


def plain_path(path: str) -> bool:
    """`names_itself(path)`, False for the empty path; a path that names itself is remembered in PLAIN_PATHS, so
    that the next open of it takes one set lookup (`path in PLAIN_PATHS or plain_path(path)`) instead of the
    checks: a host opens the same few paths again and again."""
    if not path or not names_itself(path):
        return False
    if len(path) <= _PLAIN_PATH_LONGEST:
        if len(PLAIN_PATHS) >= _PLAIN_PATHS_KEPT:
            PLAIN_PATHS.clear()
        PLAIN_PATHS.add(path)
    return True


def directory_of(path: str) -> str:
    """Falco's fd.directory of a file: everything before the last slash, `/` at the top."""
    pos = path.rfind("/")
    if pos <= 0:
        return "/"
    return path[:pos] if pos < len(path) - 1 else path


def filename_of(path: str) -> str:
    """Falco's fd.filename: the part after the last slash."""
    pos = path.rfind("/")
    if pos < 0:
        return "/"
    return path[pos + 1 :] if pos < len(path) - 1 else path


@dataclass(frozen=True, slots=True)
class ProcLink:
    """A link of a process in procfs: descriptor `fd`, or (`fd` -1) its working directory (`cwd`) or its root
    (not `cwd`). `pid` None: the opener's own (/proc/self, /proc/thread-self, /dev/fd)."""

    pid: int | None
    fd: int = -1
    cwd: bool = False


def proc_link(parts: list[str]) -> ProcLink | None:
    """The link that the path of components `parts` (from the root, folded) is, if any: `proc/self/fd/3`,
    `proc/4242/task/4243/cwd`, `dev/fd/3` (a link to /proc/self/fd on Linux)."""
    if parts[:2] == ["dev", "fd"]:
        parts = ["proc", "self", *parts[1:]]
    if len(parts) < 3 or parts[0] != "proc" or not (parts[1] in ("self", "thread-self") or parts[1].isdigit()):
        return None
    pid = int(parts[1]) if parts[1].isdigit() else None
    rest = parts[4:] if parts[2] == "task" and len(parts) > 4 and parts[3].isdigit() else parts[2:]
    if rest in (["cwd"], ["root"]):
        return ProcLink(pid, cwd=rest[0] == "cwd")
    if len(rest) == 2 and rest[0] == "fd" and rest[1].isdigit():
        return ProcLink(pid, int(rest[1]))
    return None


def path_through_proc(base: str, path: str, target: Callable[[ProcLink], str | None]) -> str:
    """`absolute_path(base, path)`, except that a procfs link on the way leads where `target` says (an absolute
    path; None: nowhere known, the link stays a name), as the kernel follows it before any `..` after it."""
    joined = path if path.startswith("/") else f"{base or '/'}/{path}"
    # Every link starts with a component `proc` or `dev`, which the joined path shows after a slash.
    if not path or not joined.startswith("/") or ("/proc" not in joined and "/dev" not in joined):
        return absolute_path(base, path)
    parts: list[str] = []
    for part in joined.split("/"):
        if part == "..":
            del parts[-1:]
        elif part not in ("", "."):
            parts.append(part)
            link = proc_link(parts) if parts[0] in ("proc", "dev") else None
            to = target(link) if link is not None else None
            if to is not None:
                parts = [p for p in to.split("/") if p]
    return "/" + "/".join(parts)
