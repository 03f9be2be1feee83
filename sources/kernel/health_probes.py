"""Whether a thread runs one of its container's health probes (`proc.is_container_healthcheck` and kin).

Falco's container plugin tags a thread each time it starts (clone, exec): a container's init (pid 1 of its pid
namespace) is the container's own, and so is all it starts; a thread whose parent carries a tag takes it; any
other thread whose argv is exactly one of its container's probe commands is that probe, unless a container init
is among its ancestors. A runtime starts a probe from outside the container (docker exec, CRI ExecSync), so the
probe's parent is a host process and the container's own processes can never pass for one. A container the
runtime has not described tags nothing. The same rule is applied here to the thread and its ancestors as they
are now, when a rule asks, so that the record path pays nothing for it.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from sources.kernel.state.host import ContainerMeta, ProbeKind
from sources.kernel.state.threads import ThreadInfo

ContainerLookup = Callable[[str], ContainerMeta | None]


class _Own(Enum):
    """The tag of a container's init and of what it starts: never a probe."""

    CONTAINER = "container"


_Tag = ProbeKind | _Own | None


def _is_container_init(thread: ThreadInfo) -> bool:
    return thread.vpid == 1 and bool(thread.container_id)


def _tag(thread: ThreadInfo, parent_tag: _Tag, init_above: bool, containers: ContainerLookup) -> _Tag:
    meta = containers(thread.container_id) if thread.container_id else None
    if meta is None or not meta.described:
        return None
    if thread.vpid == 1:
        return _Own.CONTAINER
    if parent_tag is not None:
        return parent_tag
    if init_above:
        return None
    return meta.probe_run_as(thread.exe, tuple(arg for arg in thread.args if arg))


def probe_kind(thread: ThreadInfo, containers: ContainerLookup) -> ProbeKind | None:
    """The kind of container probe `thread` runs, or None when it runs none (on the host, too)."""
    # The thread's own tag is None when its container is not described (or it is on the host), whatever its
    # ancestors': answer without walking them.
    own = containers(thread.container_id) if thread.container_id else None
    if own is None or not own.described:
        return None
    tag: _Tag = None
    init_above = False
    # From the oldest known ancestor down, each generation's tag feeding the next.
    for node in reversed([thread, *thread.ancestors()]):
        tag = _tag(node, tag, init_above, containers)
        init_above = init_above or _is_container_init(node)
    return tag if isinstance(tag, ProbeKind) else None
