"""The files the loaded rules name, known by device and inode so that a link cannot rename them.

Rules name files by path (`fd.name = /etc/shadow`, `fd.directory = /etc/sudoers.d`, `fd.name startswith /etc/`),
and a path is one name of a file among several: a symlink, a hard link or a bind mount opens the same file under
another path, which neither the kernel prefilter nor a rule would recognise. The agent stats the files the
rules' paths name now (walking the directory prefixes), hands their (device, inode) pairs to the probe, which
lets any open of them leave the kernel, and names such an open by the rules' path (`file_key`).

A file created after the scan is known by its path until the next scan (`RESCAN_S`); a walk stops at `limit`
files, saying which prefixes it did not finish. Suffix bounds (`fd.name endswith .pem`) name no file to scan.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger(__name__)

#: Seconds between scans while rules stay loaded: files the rules name may appear or be replaced.
RESCAN_S = 60.0
#: Trees no rule means by a prefix such as `/`: their entries are not files on disk.
_PSEUDO_TREES = ("/proc", "/sys", "/dev")
#: The inode of a file_key.
_INODE_MASK = (1 << 64) - 1


def file_key(dev: int, ino: int) -> int:
    """One int for a (device, inode) pair, as `WatchedFiles.names` is keyed."""
    return dev << 64 | ino


@dataclass(frozen=True, slots=True)
class WatchedFiles:
    """The rules' path of each file found, by file_key; the paths and prefixes scanned; the prefixes whose walk
    stopped at the limit."""

    names: Mapping[int, str]
    exact: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    incomplete: tuple[str, ...] = ()
    #: `names` by inode, then device: what an open looks up, its (device, inode) pair not made one int.
    by_inode: Mapping[int, Mapping[int, str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_inode: dict[int, dict[int, str]] = {}
        for key, path in self.names.items():
            by_inode.setdefault(key & _INODE_MASK, {})[key >> 64] = path
        object.__setattr__(self, "by_inode", by_inode)

    def made_in(self, dev: int, dir_ino: int, dirent: str) -> str | None:
        """The rules' path of a new file `dirent` made in watched directory `dir_ino`; None when not watched."""
        directory = self.names.get(file_key(dev, dir_ino)) if dirent else None
        return directory.rstrip("/") + "/" + dirent if directory is not None else None

    def covers(self, path: str) -> bool:
        """Whether the rules name `path` itself: then it keeps its name (a rule on `/bin/...` must still see
        `/bin/ls`, though `/usr/bin/ls` is that file)."""
        return path in self.exact or path.startswith(self.prefixes)

    def ids(self) -> frozenset[tuple[int, int]]:
        """The (device, inode) pairs, as the probe's map holds them."""
        return frozenset((key >> 64, key & _INODE_MASK) for key in self.names)


def scan(exact: Iterable[str], prefixes: Iterable[str], *, limit: int) -> WatchedFiles:
    """The files now at the `exact` paths and under the `prefixes` (a path starting with one), symlinks not
    followed (a link is not the file the rules name: what it points to is found under its own path)."""
    names: dict[int, str] = {}
    exact, prefixes = frozenset(exact), tuple(sorted(set(prefixes)))
    for path in sorted(exact):
        if len(names) < limit:
            _add(names, path)
    incomplete = []
    for prefix in prefixes:
        for path in _under(prefix):
            if len(names) >= limit:
                incomplete.append(prefix)
                break
            _add(names, path)
    return WatchedFiles(names, exact, prefixes, tuple(incomplete))


def _add(names: dict[int, str], path: str) -> None:
    try:
        info = os.lstat(path)
    except (OSError, ValueError):
        return
    if stat.S_ISLNK(info.st_mode):
        return
    names.setdefault(file_key(info.st_dev, info.st_ino), path)


def _under(prefix: str) -> Iterator[str]:
    """The paths starting with `prefix`, walked from the deepest directory it names, depth first; a prefix ending
    in `/` names its directory too (a file made there has it for parent)."""
    if not prefix.startswith("/"):
        return
    root = (prefix.rstrip("/") if prefix.endswith("/") else os.path.dirname(prefix)) or "/"
    if prefix.endswith("/"):
        yield root
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in sorted(entries, key=lambda e: e.name, reverse=True):
            path = entry.path if directory != "/" else "/" + entry.name
            if _is_pseudo(path, prefix):
                continue
            if path.startswith(prefix):
                yield path
            if (path.startswith(prefix) or prefix.startswith(path + "/")) and entry.is_dir(follow_symlinks=False):
                pending.append(path)


def _is_pseudo(path: str, prefix: str) -> bool:
    return any((path == tree or path.startswith(tree + "/")) and not prefix.startswith(tree)
               for tree in _PSEUDO_TREES)


class WatchedScanner:
    """Scans for the files the rules name: at once when the rules change (`scan_now`), then every `rescan_s` in a
    background thread, whose result `poll` hands over on the caller's thread."""

    def __init__(self, *, limit: int, rescan_s: float = RESCAN_S) -> None:
        self._limit = limit
        self._rescan_s = rescan_s
        self._paths: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
        self._scanned = 0.0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="watched-files")
        self._running: Future[WatchedFiles] | None = None

    def scan_now(self, exact: frozenset[str], prefixes: frozenset[str]) -> WatchedFiles:
        self._paths = (exact, prefixes)
        self._running = None  # a rescan of the paths before is stale
        self._scanned = time.monotonic()
        return scan(exact, prefixes, limit=self._limit)

    def poll(self) -> WatchedFiles | None:
        """A finished rescan of the current paths, if any; starts the next when due."""
        running = self._running
        if running is not None and running.done():
            self._running = None
            try:
                return running.result()
            except Exception:
                # The files scanned before stay watched; the next rescan tries again.
                log.exception("watched_files_scan_failed")
                return None
        if running is None and time.monotonic() - self._scanned >= self._rescan_s:
            self._scanned = time.monotonic()
            exact, prefixes = self._paths
            self._running = self._executor.submit(scan, exact, prefixes, limit=self._limit)
        return None

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
