"""A pod's CNI result as `container.cni.json` shows it, taken from the verbose PodSandboxStatus info the way
libsinsp took it: containerd's `cniResult.Interfaces` without the loopback and host-side veth interfaces and
without their MAC and netns path, as compact JSON with sorted keys; else CRI-O's CNIResult annotation as is."""

from __future__ import annotations

import json
from typing import Any

from sources.kernel.state.json_shapes import json_path

#: An upper bound on the text kept, as the container plugin's; a real CNI result is far smaller.
MAX_CNI_RESULT = 4096
CRIO_CNI_ANNOTATION = "io.kubernetes.cri-o.CNIResult"
_DROPPED_KEYS = ("Mac", "Sandbox")


def _kept_interface(name: str) -> bool:
    return name != "lo" and not name.startswith("veth")


def _trimmed(conf: Any) -> Any:
    return {k: v for k, v in conf.items() if k not in _DROPPED_KEYS} if isinstance(conf, dict) else conf


def cni_result(sandbox_info: Any) -> str:
    """The trimmed CNI result of a sandbox's `info` object; "" when the runtime reports none."""
    interfaces = json_path(sandbox_info, "cniResult", "Interfaces")
    if isinstance(interfaces, dict):
        kept = {name: _trimmed(conf) for name, conf in interfaces.items() if _kept_interface(name)}
        text = json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    else:
        annotation = json_path(sandbox_info, "runtimeSpec", "annotations", CRIO_CNI_ANNOTATION)
        text = annotation if isinstance(annotation, str) else ""
    return text[:MAX_CNI_RESULT]
