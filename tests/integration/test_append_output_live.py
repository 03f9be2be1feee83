"""The agent as a real subprocess, kernel source live, with the default `append_output` (suggested_output, as in
Falco's falco.yaml): an alert about a process in a cgroup named like Docker's carries the container and pod
fields in its text and in its JSON output_fields, though the rule's output names none of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.agent_process import Agent, alerts_until
from tests.support.kernel import docker_like_cgroup, marker_read_rule, require_probe, run_script

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.slow]

RULE = "Marker read in a container"
SUGGESTED = ("container.id", "container.name", "container.image.repository", "container.image.tag",
             "k8s.pod.name", "k8s.ns.name")


def test_a_container_alert_carries_the_suggested_fields(tmp_path: Path) -> None:
    require_probe()
    marker, rules = marker_read_rule(tmp_path, RULE, desc="a file read inside a container",
                                     condition="container.id != host", output="marker read by %proc.name")
    agent = Agent("-r", str(rules), "--json", kernel=True)
    agent.read_alerts()
    try:
        agent.wait_for_log("agent_started", timeout_s=90)
        with docker_like_cgroup() as cgroup:
            run_script(f"cat {marker}", cgroup=cgroup)
            alert = next(a for a in alerts_until(agent, {RULE}) if a["rule"] == RULE)
    finally:
        code, _ = agent.stop()
    assert code == 0
    short_id = cgroup.name[:12]
    fields = alert["output_fields"]
    assert fields["container.id"] == short_id and fields["proc.name"] == "cat"
    assert set(SUGGESTED) <= set(fields)
    # No runtime knows this container: its name, image and pod are not available, shown as Falco shows them.
    assert fields["container.name"] is None and fields["k8s.pod.name"] is None
    assert alert["output"].endswith(
        f"marker read by cat container_id={short_id} container_name=<NA> container_image_repository=<NA> "
        "container_image_tag=<NA> k8s_pod_name=<NA> k8s_ns_name=<NA>")

