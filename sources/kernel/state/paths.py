"""Turn a path as a process passed it into the absolute path Falco reports, without touching the disk."""

from __future__ import annotations

import posixpath

#: The dirfd value meaning "relative to the working directory".
AT_FDCWD = -100


def absolute_path(base: str, path: str) -> str:
    """`path` resolved against directory `base` lexically: `.`/`..` folded, duplicate slashes dropped.

    Like libsinsp, symlinks are not followed; an empty path stays empty.
    """
    if not path:
        return ""
    joined = path if path.startswith("/") else f"{base or '/'}/{path}"
    normal = posixpath.normpath(joined)
    # normpath keeps a leading "//" (POSIX allows it to mean something else); Linux does not.
    return "/" + normal.lstrip("/") if normal.startswith("//") else normal


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
