"""The agent as a real subprocess, kernel source live, asking a fake Docker API about a process in a cgroup named
like Docker's: an alert about it carries the container's two mounts as the runtime described them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.agent_process import Agent, alerts_until
from tests.support.docker_api import FakeDockerApi, bind_mount
from tests.support.kernel import docker_like_cgroup, marker_read_rule, require_probe, run_script

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.slow]

RULE = "Marker read in a container with /proc mounted"


def test_a_container_alert_shows_its_mounts(tmp_path: Path) -> None:
    require_probe()
    marker, rules = marker_read_rule(
        tmp_path, RULE, desc="a file read in a container that mounts the host's /proc",
        condition="container.mount.dest[/proc] = /host/proc",
        output="read by %proc.name mounts=%container.mounts second=%container.mount[1]"
               " data_rw=%container.mount.rdwr[/srv/data] docker_sock=%container.mount.dest[docker.sock]")
    with docker_like_cgroup() as cgroup, FakeDockerApi(tmp_path / "docker.sock") as api:
        api.add(cgroup.name, namespace="prod", pod="web-0", mounts=[
            bind_mount("/proc", "/host/proc", read_only=True), bind_mount("/srv/data", "/data")])
        agent = Agent("-r", str(rules), "--json", "-o", f"sources.kernel.container_runtime_sockets=[{api.socket_path}]",
                      kernel=True)
        agent.read_alerts()
        try:
            agent.wait_for_log("agent_started", timeout_s=90)
            # The first exec in the cgroup makes the agent ask the runtime; the read comes once it answered.
            for _ in range(3):
                run_script("true", cgroup=cgroup)
                if api.wait_answered(cgroup.name, timeout_s=5):
                    break
            run_script(f"cat {marker}", cgroup=cgroup)
            alert = next(a for a in alerts_until(agent, {RULE}) if a["rule"] == RULE)
        finally:
            code, _ = agent.stop()
    assert code == 0
    # The default append_output adds the container and pod fields after the rule's own text.
    assert (
        "read by cat mounts=/proc:/host/proc:ro:false:rprivate,/srv/data:/data::true:rprivate"
        " second=/srv/data:/data::true:rprivate data_rw=true docker_sock=<NA> container_id=") in alert["output"]

