"""Container ids by cgroup v2 id: the kernel names each record's cgroup by its directory inode.

Reading /proc/<pid>/cgroup after an exec races the process (a short `sh -c` is gone before user
space looks); the cgroup id in the record does not. The cgroup2 tree is walked again when an id is
not known, since containers create their cgroups before they run; an id still unknown after a walk
is not looked for again for `retry_after_s`, so ids that never map (cgroup v1 hosts) cost nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from sources.kernel.state.cgroup import container_from_cgroup


def cgroup2_mount(mounts: Path = Path("/proc/self/mounts")) -> Path | None:
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) > 2 and parts[2] == "cgroup2":
            return Path(parts[1])
    return None


class CgroupIndex:
    def __init__(self, root: Path | None, *, retry_after_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._root = root
        self._retry_after_s = retry_after_s
        self._clock = clock
        self._containers: dict[int, str] = {}
        self._missed: dict[int, float] = {}

    def container_of(self, cgroup_id: int) -> str | None:
        """The full container id ("" for a host cgroup), or None when the id is unknown here."""
        if self._root is None or not cgroup_id:
            return None
        found = self._containers.get(cgroup_id)
        if found is not None:
            return found
        now = self._clock()
        if now - self._missed.get(cgroup_id, float("-inf")) < self._retry_after_s:
            return None
        self._scan()
        found = self._containers.get(cgroup_id)
        if found is None:
            if len(self._missed) > 4096:
                self._missed.clear()
            self._missed[cgroup_id] = now
        return found

    def _scan(self) -> None:
        assert self._root is not None
        found: dict[int, str] = {}
        root_text = str(self._root)
        for directory, _subdirs, _files in os.walk(root_text):
            try:
                inode = os.stat(directory).st_ino
            except OSError:
                continue  # removed while walking
            relative = directory[len(root_text):] or "/"
            container = container_from_cgroup(f"0::{relative}")
            found[inode] = container.id if container else ""
        self._containers = found
