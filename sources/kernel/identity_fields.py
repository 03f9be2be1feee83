"""Extractors of `user.*`, `group.*`, `container.*` and `k8s.*`: who runs the thread, and where.

The network, namespace, sandbox and probe fields give what Falco's container plugin gives: for a container its
runtime described, the runtime's answer or the plugin's empty value (`""`, false, `NONE` for a probe it does not
have); for a host thread the plugin's host entry (the same empty values); for a container not described yet,
no value. `k8s.pod.ip` and `k8s.pod.cni.json` are the container's own for a container of a pod sandbox (all
containers of a pod share its network), empty for any other.

A container mount (`container.mount*`) is picked as Falco's container plugin picks it: by position (`[0]`), or by a
path pattern, a regular expression searched anywhere in the mount's source (in its destination for
`container.mount.source`), so `[/proc*]` also finds `/host/proc`. A host thread, a container its runtime has not
described, a position past the end and a pattern no mount matches give no value (`<NA>`); a described container
without mounts has an empty `container.mounts`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import re2

from agent.event import Event
from agent.fields import Extractor, ExtractorFactory, Value
from sources.kernel.evt_fields import payload_of, simple
from sources.kernel.health_probes import probe_kind
from sources.kernel.state.accounts import UNKNOWN_NAME
from sources.kernel.state.cgroup import SHORT_ID_LEN, short_id
from sources.kernel.state.host import ContainerMeta, ContainerMount, ProbeKind, UserEntry
from sources.kernel.state.payload import SyscallEvent

K8S_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
K8S_POD_NAME_LABEL = "io.kubernetes.pod.name"
K8S_POD_UID_LABEL = "io.kubernetes.pod.uid"
_HOST = "host"
#: What the container plugin gives for a probe the container does not have.
_NO_PROBE = "NONE"


def _user(ev: SyscallEvent, uid: int) -> UserEntry | None:
    return ev.lookups.accounts.user(ev.thread.container_id, uid)


def _user_attr(fn: Callable[[UserEntry], str]) -> ExtractorFactory:
    def get(ev: SyscallEvent) -> Value:
        entry = _user(ev, ev.thread.euid)
        return fn(entry) if entry is not None else UNKNOWN_NAME

    return simple(get)


def _loginname(ev: SyscallEvent) -> Value:
    if ev.thread.loginuid < 0:
        return UNKNOWN_NAME
    # The login uid is a host login: names come from the host's accounts.
    entry = ev.lookups.accounts.user("", ev.thread.loginuid)
    return entry.name if entry is not None else UNKNOWN_NAME


def _group_name(ev: SyscallEvent) -> Value:
    return ev.lookups.accounts.group_name(ev.thread.container_id, ev.thread.egid) or UNKNOWN_NAME


def _meta(ev: SyscallEvent) -> ContainerMeta | None:
    cid = ev.thread.container_id
    return ev.lookups.containers.get(cid) if cid else None


def _container(fn: Callable[[ContainerMeta], Value], *, on_host: Value = None) -> ExtractorFactory:
    """A metadata field: `on_host` for host threads, not available until the runtime answered."""

    def get(ev: SyscallEvent) -> Value:
        if not ev.thread.container_id:
            return on_host
        meta = _meta(ev)
        return fn(meta) if meta is not None else None

    return simple(get)


def _described(fn: Callable[[ContainerMeta], Value], *, on_host: Value) -> ExtractorFactory:
    """A field of the runtime's description: no value until the runtime described the container."""
    return _container(lambda m: fn(m) if m.described else None, on_host=on_host)


def _probe_text(kind: ProbeKind) -> Callable[[ContainerMeta], Value]:
    def text(meta: ContainerMeta) -> Value:
        probe = meta.probe(kind)
        return probe.as_text() if probe is not None else _NO_PROBE

    return text


def _runs_probe(kind: ProbeKind) -> ExtractorFactory:
    # Always a value, as in the plugin: a thread it has not tagged runs no probe.
    return simple(lambda ev: probe_kind(ev.thread, ev.lookups.containers.get) is kind)


def _of_pod(fn: Callable[[ContainerMeta], str]) -> Callable[[ContainerMeta], Value]:
    return lambda m: fn(m) if m.pod_sandbox_id else ""


def split_image(image: str) -> tuple[str, str, str]:
    """`registry:5000/repo:tag@sha256:...` as (repository, tag, digest)."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1:], digest
    return name, "", digest


def _image_part(index: int) -> Callable[[ContainerMeta], Value]:
    return lambda m: (split_image(m.image)[index] or None) if m.image else None


def _label_factory(arg: str | None) -> Extractor:
    def extract(event: Event) -> Value:
        ev = payload_of(event)
        meta = _meta(ev) if ev is not None else None
        return meta.labels.get(arg or "") if meta is not None else None

    return extract


def _labels_text(labels: dict[str, str]) -> Value:
    return ", ".join(f"{k}:{v}" for k, v in labels.items()) or None


_MountPicker = Callable[[tuple[ContainerMount, ...]], ContainerMount | None]
_POSITION = re.compile(r"[0-9]+")
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad pattern is a load error; RE2 need not print it on stderr too


def _mount_picker(field: str, arg: str, *, by_dest: bool) -> _MountPicker:
    """Picks the mount at position `arg`, or the first whose source (`by_dest`: destination) `arg` matches.

    Raises ValueError naming the field when `arg` is not a regular expression.
    """
    if _POSITION.fullmatch(arg):
        position = int(arg)
        return lambda mounts: mounts[position] if position < len(mounts) else None
    try:
        # RE2, as every pattern a rule gives: linear in the path, whatever the pattern.
        search = re2.compile(arg, _RE2_OPTIONS).search
    except re2.error as exc:
        reason = f"'{arg}' is not a valid path pattern (a regular expression): {exc}"
        raise ValueError(f"field '{field}': {reason}") from None

    def pick(mounts: tuple[ContainerMount, ...]) -> ContainerMount | None:
        for mount in mounts:
            if search(mount.dest if by_dest else mount.source):
                return mount
        return None

    return pick


def _mount_field(field: str, part: Callable[[ContainerMount], str], *, by_dest: bool = False) -> ExtractorFactory:
    def factory(arg: str | None) -> Extractor:
        # The table marks the argument required, so binding refuses a bare use before this runs.
        pick = _mount_picker(field, arg or "", by_dest=by_dest)

        def extract(event: Event) -> Value:
            ev = payload_of(event)
            meta = _meta(ev) if ev is not None else None
            mount = pick(meta.mounts) if meta is not None and meta.mounts else None
            return part(mount) if mount is not None else None

        return extract

    return factory


#: The part of the picked mount each field gives; `container.mount.source` picks by destination, the others by source.
_MOUNT_PARTS: dict[str, Callable[[ContainerMount], str]] = {
    "container.mount": ContainerMount.as_text,
    "container.mount.source": lambda m: m.source,
    "container.mount.dest": lambda m: m.dest,
    "container.mount.mode": lambda m: m.mode,
    "container.mount.rdwr": lambda m: "true" if m.rdwr else "false",
    "container.mount.propagation": lambda m: m.propagation,
}


def _mounts_text(mounts: tuple[ContainerMount, ...] | None) -> Value:
    return None if mounts is None else ",".join(mount.as_text() for mount in mounts)


def _duration(ev: SyscallEvent) -> Value:
    meta = _meta(ev)
    if meta is None or meta.start_ns is None:
        return None
    return max(ev.record.ts_ns - meta.start_ns, 0)


IDENTITY_EXTRACTORS: dict[str, ExtractorFactory] = {
    "user.uid": simple(lambda ev: ev.thread.euid),
    "user.name": _user_attr(lambda u: u.name),
    "user.homedir": _user_attr(lambda u: u.home),
    "user.shell": _user_attr(lambda u: u.shell),
    "user.loginuid": simple(lambda ev: ev.thread.loginuid),
    "user.loginname": simple(_loginname),
    "group.gid": simple(lambda ev: ev.thread.egid),
    "group.name": simple(_group_name),
    "container.id": simple(lambda ev: short_id(ev.thread.container_id)),
    "container.full_id": simple(lambda ev: ev.thread.container_id or _HOST),
    "container.name": _container(lambda m: m.name, on_host=_HOST),
    "container.image": _container(lambda m: m.image),
    "container.image.id": _container(lambda m: m.image_id),
    "container.image.repository": _container(_image_part(0)),
    "container.image.tag": _container(_image_part(1)),
    "container.image.digest": _container(_image_part(2)),
    "container.type": _container(lambda m: m.runtime),
    "container.privileged": _container(lambda m: m.privileged),
    "container.start_ts": _container(lambda m: m.start_ns),
    "container.duration": simple(_duration),
    "container.label": _label_factory,
    "container.labels": _container(lambda m: _labels_text(m.labels)),
    "container.mounts": _container(lambda m: _mounts_text(m.mounts)),
    **{name: _mount_field(name, part, by_dest=name == "container.mount.source") for name, part in _MOUNT_PARTS.items()},
    "k8s.ns.name": _container(lambda m: m.labels.get(K8S_NAMESPACE_LABEL)),
    "k8s.pod.name": _container(lambda m: m.labels.get(K8S_POD_NAME_LABEL)),
    "k8s.pod.uid": _container(lambda m: m.labels.get(K8S_POD_UID_LABEL)),
    "k8s.pod.id": _container(lambda m: m.labels.get(K8S_POD_UID_LABEL)),
    "k8s.pod.label": _label_factory,
    "k8s.pod.labels": _container(lambda m: _labels_text(m.labels)),
    "container.ip": _described(lambda m: m.ip, on_host=""),
    "container.cni.json": _described(lambda m: m.cni_json, on_host=""),
    "container.host_pid": _described(lambda m: m.host_pid, on_host=False),
    "container.host_network": _described(lambda m: m.host_network, on_host=False),
    "container.host_ipc": _described(lambda m: m.host_ipc, on_host=False),
    "container.healthcheck": _described(_probe_text(ProbeKind.HEALTHCHECK), on_host=_NO_PROBE),
    "container.liveness_probe": _described(_probe_text(ProbeKind.LIVENESS), on_host=_NO_PROBE),
    "container.readiness_probe": _described(_probe_text(ProbeKind.READINESS), on_host=_NO_PROBE),
    "proc.is_container_healthcheck": _runs_probe(ProbeKind.HEALTHCHECK),
    "proc.is_container_liveness_probe": _runs_probe(ProbeKind.LIVENESS),
    "proc.is_container_readiness_probe": _runs_probe(ProbeKind.READINESS),
    "k8s.pod.sandbox_id": _described(lambda m: m.pod_sandbox_id[:SHORT_ID_LEN], on_host=""),
    "k8s.pod.full_sandbox_id": _described(lambda m: m.pod_sandbox_id, on_host=""),
    "k8s.pod.ip": _described(_of_pod(lambda m: m.ip), on_host=""),
    "k8s.pod.cni.json": _described(_of_pod(lambda m: m.cni_json), on_host=""),
}
