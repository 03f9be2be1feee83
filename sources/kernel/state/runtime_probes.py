"""The health probes a container runtime runs in a container, read from its answer as Falco's container plugin
reads them: Kubernetes exec liveness and readiness probes from the pod spec `kubectl apply` recorded, else
Docker's HEALTHCHECK. Never raises: a malformed spec gives no probes."""

from __future__ import annotations

import json
from typing import Any

from sources.kernel.state.host import HealthProbe, ProbeKind
from sources.kernel.state.json_shapes import json_object, json_objects, json_path

#: Where the pod spec `kubectl apply` recorded is found: the pod annotation (CRI sandboxes), the plugin's
#: container label, and the label dockershim made of the annotation (Docker as a Kubernetes runtime).
LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"
LAST_APPLIED_LABELS = ("io.kubernetes.container.last-applied-config", f"annotation.{LAST_APPLIED_ANNOTATION}")
K8S_CONTAINER_NAME_LABEL = "io.kubernetes.container.name"

_SHELL = "/bin/sh"
_K8S_PROBES = ((ProbeKind.LIVENESS, "livenessProbe"), (ProbeKind.READINESS, "readinessProbe"))


def _command(value: Any) -> tuple[str, ...]:
    """An argv from JSON: a non-empty list of strings, else nothing."""
    if isinstance(value, list) and value and all(isinstance(word, str) for word in value):
        return tuple(value)
    return ()


def pod_spec_probes(spec_text: str, container_name: str | None) -> tuple[HealthProbe, ...]:
    """The exec liveness and readiness probes of one container of a recorded pod spec (JSON text): the
    container named `container_name`, or the first one when the name is not known."""
    try:
        spec = json.loads(spec_text)
    except (ValueError, RecursionError):  # the label may come from the image: any text, nested at will
        return ()
    containers = json_objects(json_path(spec, "spec", "containers"))
    if container_name is not None:
        containers = [c for c in containers if c.get("name") == container_name]
    if not containers:
        return ()
    probes = []
    for kind, key in _K8S_PROBES:
        argv = _command(json_path(containers[0], key, "exec", "command"))
        if argv:
            probes.append(HealthProbe(kind, argv[0], argv[1:]))
    return tuple(probes)


def docker_healthcheck(healthcheck: Any) -> HealthProbe | None:
    """Docker's `Config.Healthcheck`: `["CMD", exe, args...]` runs as is, `["CMD-SHELL", text]` through
    /bin/sh -c; `["NONE"]`, an empty test or anything else is no probe."""
    test = _command(json_path(healthcheck, "Test"))
    if len(test) < 2:
        return None
    if test[0] == "CMD":
        return HealthProbe(ProbeKind.HEALTHCHECK, test[1], test[2:])
    if test[0] == "CMD-SHELL":
        return HealthProbe(ProbeKind.HEALTHCHECK, _SHELL, ("-c", test[1]))
    return None


def docker_probes(config: dict[str, Any]) -> tuple[HealthProbe, ...]:
    """The probes of a Docker inspect `Config`: Kubernetes ones when its labels carry the pod spec, else its
    HEALTHCHECK (the container plugin ignores the HEALTHCHECK of a container Kubernetes probes)."""
    labels = json_object(config.get("Labels"))
    spec_text = next((labels[key] for key in LAST_APPLIED_LABELS if isinstance(labels.get(key), str)), None)
    if spec_text is not None:
        name = labels.get(K8S_CONTAINER_NAME_LABEL)
        probes = pod_spec_probes(spec_text, name if isinstance(name, str) else None)
        if probes:
            return probes
    healthcheck = docker_healthcheck(config.get("Healthcheck"))
    return (healthcheck,) if healthcheck is not None else ()
