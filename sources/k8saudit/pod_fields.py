"""The `ka.req.pod.*`, `ka.req.container.*` and `ka.req.volume.*` fields: what a pod spec asks for.

The three container lists of a pod spec (`containers`, `initContainers`, `ephemeralContainers`)
share one set of field builders; each field walks `requestObject.spec.<list>[*]` (or only
element N under an `[N]` argument) and shapes what it finds the way the k8saudit plugin does.
"""

from __future__ import annotations

from typing import Any

from agent.event import Event
from agent.fields import ArgKind, Extractor, ExtractorFactory, FieldFlag, FieldSpec, FieldType, Value
from sources.k8saudit.extraction import (
    MISSING,
    SELF,
    Shaper,
    all_texts,
    collected,
    computed,
    finish,
    list_at,
    path_walker,
    present_texts,
    scalar_at,
    text,
    value_at,
    walk,
    walker,
)

_SPEC = ("requestObject", "spec")
_STRING = FieldType.STRING


def repository(image: str) -> str:
    """The image cut at its first `:` and then its first `@`, as the plugin does.

    A registry with a port (`reg:5000/app:1`) therefore gives just `reg`; rules rely on this.
    """
    return image.split(":", 1)[0].split("@", 1)[0]


def _repositories(found: list[Any]) -> list[str] | None:
    images = all_texts(found)
    return None if images is None else [repository(image) for image in images]


def _joined(found: list[Any]) -> list[str]:
    """One text per container: its command (or args) array joined with single spaces."""
    values: list[str] = []
    for value in found:
        if value is MISSING:
            continue
        if value.__class__ is list:
            values.append(" ".join([text(item) for item in value]))
        else:
            values.append(text(value))
    return values


def _host_ports(found: list[Any]) -> list[str] | None:
    """Each port's hostPort, or its containerPort (the same port under hostNetwork)."""
    values: list[str] = []
    for ports in found:
        if ports is MISSING:
            continue
        if ports.__class__ is not list:
            return None
        for port in ports:
            if port.__class__ is not dict:
                continue
            chosen = port.get("hostPort", MISSING)
            if chosen is MISSING:
                chosen = port.get("containerPort", MISSING)
            if chosen is not MISSING:
                values.append(text(chosen))
    return values


def _effective_id(containers: str, key: str) -> ExtractorFactory:
    """The uid/gid a container starts with: its own `key`, else the pod spec's, else `0`.

    Both places are read directly under the container and the pod spec (not under
    `securityContext`, where Kubernetes puts them), exactly like the plugin, so real pod specs
    give `0` for every container; rules written against Falco expect that.
    """
    keys = (*_SPEC, containers, key)
    pod_keys = (*_SPEC, key)

    def factory(arg: str | None) -> Extractor:
        index = None if arg is None else int(arg)
        walk_path = walker(keys, index)

        def extract(event: Event) -> Value:
            payload = event.payload
            if payload.__class__ is not dict or "auditID" not in payload:
                return None
            found = walk_path(payload)
            if found is None:
                return None
            pod_value = value_at(payload, pod_keys)
            default = "0" if pod_value is MISSING else text(pod_value)
            return finish([default if value is MISSING else text(value) for value in found], index)

        return extract

    return factory


#: (field suffix, path below one container, shaper, description with {who}); None path = special.
_CONTAINER_FIELDS: tuple[tuple[str, tuple[str, ...], Shaper | None, str], ...] = (
    ("name", ("name",), present_texts, "names of the pod's {who}"),
    ("image", ("image",), all_texts, "images of the pod's {who}, as written in the spec"),
    ("image.repository", ("image",), _repositories,
     "images of the pod's {who} without tag or digest (cut at the first ':' then '@')"),
    ("command", ("command",), _joined, "command of each of the pod's {who}, words joined by spaces"),
    ("args", ("args",), _joined, "arguments of each of the pod's {who}, joined by spaces"),
    ("privileged", ("securityContext", "privileged"), present_texts,
     "privileged flag of the pod's {who} that set one"),
    ("allow_privilege_escalation", ("securityContext", "allowPrivilegeEscalation"), present_texts,
     "allowPrivilegeEscalation flag of the pod's {who} that set one"),
    ("read_only_fs", ("securityContext", "readOnlyRootFilesystem"), present_texts,
     "readOnlyRootFilesystem flag of the pod's {who} that set one"),
    ("run_as_user", ("securityContext", "runAsUser"), present_texts,
     "runAsUser of the pod's {who} that set one"),
    ("eff_run_as_user", (), None, "uid each of the pod's {who} starts with (0 unless set; see docs)"),
    ("run_as_group", ("securityContext", "runAsGroup"), present_texts,
     "runAsGroup of the pod's {who} that set one"),
    ("eff_run_as_group", (), None, "gid each of the pod's {who} starts with (0 unless set; see docs)"),
    ("proc_mount", ("securityContext", "procMount"), present_texts,
     "procMount type of the pod's {who} that set one"),
    ("add_capabilities", ("securityContext", "capabilities", "add"), present_texts,
     "capabilities added by each of the pod's {who}, one JSON array per container"),
    ("host_port", ("ports",), _host_ports, "host ports (else container ports) of the pod's {who}"),
)

#: Container list in the spec, its word in descriptions, and whether it has ports.
_CONTAINER_LISTS = (
    ("containers", "containers", True),
    ("initContainers", "init containers", True),
    ("ephemeralContainers", "ephemeral containers", False),
)


def _container_specs() -> list[FieldSpec]:
    specs = []
    for containers, who, has_ports in _CONTAINER_LISTS:
        for suffix, path, shape, description in _CONTAINER_FIELDS:
            if suffix == "host_port" and not has_ports:
                continue
            if shape is None:
                factory = _effective_id(containers, "runAsUser" if "user" in suffix else "runAsGroup")
            else:
                factory = collected((*_SPEC, containers, *path), shape)
            specs.append(FieldSpec(f"ka.req.pod.{containers}.{suffix}", _STRING,
                                   description.format(who=who), factory,
                                   is_list=True, arg=ArgKind.INDEX))
    return specs


def _first_container(shape: Shaper) -> ExtractorFactory:
    keys = (*_SPEC, "containers", "image")

    def compute(payload: dict[str, Any], _arg: str | None) -> Value:
        found = walk(payload, keys, 0, 0)
        values = None if found is None else shape(found)
        return values[0] if values else None

    return computed(compute)


_WALK_PRIVILEGED = path_walker((*_SPEC, "containers", "securityContext", "privileged"))
_WALK_HOST_PATHS = path_walker((*_SPEC, "volumes", "hostPath", "path"))


def _any_privileged(payload: dict[str, Any], _arg: str | None) -> Value:
    found = _WALK_PRIVILEGED(payload)
    if found is None:
        return None
    return "true" if any(value is True for value in found) else "false"


def _uses_host_path(payload: dict[str, Any], arg: str | None) -> Value:
    """`true` when a hostPath volume mounts `arg` exactly, or under `arg` minus a trailing `*`."""
    found = _WALK_HOST_PATHS(payload)
    if found is None or arg is None:
        return None
    prefix = arg[:-1] if arg.endswith("*") else None
    for path in present_texts(found):
        if path == arg or (prefix is not None and path.startswith(prefix)):
            return "true"
    return "false"


def _volume_types(found: list[Any]) -> list[str]:
    """Every key of each volume except `name`: the volume source kinds (`hostPath`, ...)."""
    return [key for volume in found if volume.__class__ is dict for key in volume if key != "name"]


def pod_fields() -> list[FieldSpec]:
    """The field specs about pods, their containers and volumes."""
    deprecated = FieldFlag.DEPRECATED
    index = ArgKind.INDEX
    return [
        FieldSpec("ka.req.pod.host_ipc", _STRING, "hostIPC setting of the requested pod",
                  scalar_at(*_SPEC, "hostIPC")),
        FieldSpec("ka.req.pod.host_network", _STRING, "hostNetwork setting of the requested pod",
                  scalar_at(*_SPEC, "hostNetwork")),
        FieldSpec("ka.req.pod.host_pid", _STRING, "hostPID setting of the requested pod",
                  scalar_at(*_SPEC, "hostPID")),
        FieldSpec("ka.req.pod.run_as_user", _STRING, "runAsUser of the requested pod's security context",
                  scalar_at(*_SPEC, "securityContext", "runAsUser")),
        FieldSpec("ka.req.pod.run_as_group", _STRING, "runAsGroup of the requested pod's security context",
                  scalar_at(*_SPEC, "securityContext", "runAsGroup")),
        FieldSpec("ka.req.pod.fs_group", _STRING, "fsGroup of the requested pod's security context",
                  scalar_at(*_SPEC, "securityContext", "fsGroup")),
        FieldSpec("ka.req.pod.supplemental_groups", _STRING,
                  "supplementalGroups of the requested pod's security context",
                  list_at(*_SPEC, "securityContext", "supplementalGroups"), is_list=True),
        *_container_specs(),
        FieldSpec("ka.req.pod.volumes.hostpath", _STRING, "host paths of the pod's hostPath volumes",
                  collected((*_SPEC, "volumes", "hostPath", "path"), present_texts),
                  is_list=True, arg=index),
        FieldSpec("ka.req.pod.volumes.flexvolume_driver", _STRING, "drivers of the pod's flexVolume volumes",
                  collected((*_SPEC, "volumes", "flexVolume", "driver"), present_texts),
                  is_list=True, arg=index),
        FieldSpec("ka.req.pod.volumes.volume_type", _STRING,
                  "source kinds of the pod's volumes (every volume key except name)",
                  collected((*_SPEC, "volumes", SELF), _volume_types), is_list=True, arg=index),
        FieldSpec("ka.req.container.image", _STRING, "image of the pod's first container (old name)",
                  _first_container(all_texts), flags=deprecated),
        FieldSpec("ka.req.container.image.repository", _STRING,
                  "image repository of the pod's first container (old name)",
                  _first_container(_repositories), flags=deprecated),
        FieldSpec("ka.req.container.host_network", _STRING, "old name of ka.req.pod.host_network",
                  scalar_at(*_SPEC, "hostNetwork"), flags=deprecated),
        FieldSpec("ka.req.container.privileged", _STRING,
                  "true when any container of the pod is privileged, else false",
                  computed(_any_privileged), flags=deprecated),
        FieldSpec("ka.req.volume.hostpath", _STRING,
                  "true when a hostPath volume uses the given path (trailing * matches a prefix)",
                  computed(_uses_host_path), arg=ArgKind.KEY | ArgKind.REQUIRED, flags=deprecated),
    ]
