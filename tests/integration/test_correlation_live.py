"""A correlation across live sources, end to end: the agent as a process with the shipped rules, the kernel
source (eBPF) and the audit webhook. An exec session into a pod is POSTed to the webhook, then a shell runs
in a cgroup named like a Docker container's, whose pod labels a Docker API on a unix socket serves: the
correlation alert names the Kubernetes user and the kernel's process. The same shell in a pod of another
name stays quiet."""

from __future__ import annotations

import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from queue import Empty
from typing import Any

import pytest

from tests.agent.test_runtime import post
from tests.support.agent_process import Agent
from tests.support.docker_api import FakeDockerApi
from tests.support.kernel import docker_like_cgroup, require_probe, run_script

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.server, pytest.mark.slow]

CORRELATION = "Shell, Secret Read Or Outbound Connection After Exec Into Pod"
SECRET_READ_RULE = "Sensitive File Read By Unexpected Program"
MARKER_RULE = "Link To Sensitive File Created"
DROP_RULE = "Falco internal: syscall event drop"
NAMESPACE = "payments"
ALERT_WAIT_S = 10.0
# A behaviour is run again only when the agent reported losing syscalls meanwhile (a busy machine).
ATTEMPTS = 3

Alert = dict[str, Any]


@dataclass(frozen=True)
class LivePod:
    """A pod's container: a docker-like cgroup whose 64-hex name the fake Docker API knows."""

    name: str
    cgroup: Path

    @property
    def container_id(self) -> str:
        return self.cgroup.name

    @property
    def short_id(self) -> str:
        return self.cgroup.name[:12]


@dataclass
class LiveNode:
    agent: Agent
    webhook_url: str
    pods: dict[str, LivePod]
    work: Path
    seen: list[Alert] = field(default_factory=list)

    def wait_for(self, match: Callable[[Alert], bool], *, since: int, timeout_s: float = ALERT_WAIT_S) -> Alert | None:
        """The first alert from index `since` on that `match`es, reading what the agent prints for up to
        `timeout_s`; every alert read is kept in `seen`."""
        deadline = time.monotonic() + timeout_s
        while True:
            hit = next((a for a in self.seen[since:] if match(a)), None)
            remaining = deadline - time.monotonic()
            if hit is not None or remaining <= 0:
                return hit
            try:
                self.seen.append(self.agent.alerts.get(timeout=remaining))
            except Empty:
                return None

    def lost_syscalls_since(self, since: int) -> bool:
        return any(a["rule"] == DROP_RULE for a in self.seen[since:])


def session_event(pod: str) -> dict[str, Any]:
    """`kubectl exec -it <pod> -- sh` as the API server audits it once the stream is upgraded, timed now."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": str(uuid.uuid4()),
        "stage": "ResponseStarted", "verb": "create",
        "user": {"username": "alice@example.com", "groups": ["developers", "system:authenticated"]},
        "requestURI": f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}/exec?command=sh&container=app&stdin=true&tty=true",
        "objectRef": {"resource": "pods", "namespace": NAMESPACE, "name": pod, "subresource": "exec",
                      "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 101}, "sourceIPs": ["192.0.2.10"],
        "userAgent": "kubectl/v1.30.2", "requestReceivedTimestamp": now, "stageTimestamp": now,
    }


def stopped_cleanly(agent: Agent) -> None:
    code, _ = agent.stop()
    assert code == 0, "".join(agent.stderr[-20:])


def start_container_main(stack: ExitStack, agent: Agent, api: FakeDockerApi, pod: LivePod) -> None:
    """The container's main process: it execs inside the cgroup, so the agent places it and asks the runtime
    about it; it lives until the fixture ends. Another one is started when the agent has not asked within
    ALERT_WAIT_S (its exec lost on a busy machine)."""
    for _ in range(ATTEMPTS):
        main = subprocess.Popen(["/bin/sh", "-c", f"echo $$ > {pod.cgroup / 'cgroup.procs'}; exec cat"],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        stack.callback(main.wait, timeout=10)
        stack.callback(main.kill)
        if api.wait_answered(pod.container_id, timeout_s=ALERT_WAIT_S):
            return
    drops = sum("syscall_event_drop" in line for line in agent.stderr)
    raise AssertionError(f"the agent never asked the runtime about {pod.name}'s container "
                         f"({drops} seconds with lost syscalls logged)")


@pytest.fixture(scope="module")
def node() -> Iterator[LiveNode]:
    """The agent (kernel + webhook, shipped rules) asking a fake Docker API about two running pod containers."""
    require_probe()
    tag = uuid.uuid4().hex[:8]
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fa-corr-")))
        pods = {role: LivePod(f"{role}-{tag}", stack.enter_context(docker_like_cgroup()))
                for role in ("web", "api")}
        api = stack.enter_context(FakeDockerApi(work / "docker.sock"))
        for pod in pods.values():
            api.add(pod.container_id, namespace=NAMESPACE, pod=pod.name)
        # Every second with lost syscalls is reported, so a behaviour lost on a busy machine is known as such.
        agent = Agent("-o", "sources.k8s_audit.webhook.listen=127.0.0.1:0",
                      "-o", f"sources.kernel.container_runtime_sockets=[{api.socket_path}]",
                      "-o", "sources.kernel.drops.alert_interval_s=0", "--json", kernel=True)
        stack.callback(stopped_cleanly, agent)
        agent.read_alerts()
        url = agent.wait_for_log("webhook_listening")["url"]
        started = agent.wait_for_log("agent_started", timeout_s=90)
        assert "kernel" in started["sources"], started
        for pod in pods.values():
            start_container_main(stack, agent, api, pod)
        yield LiveNode(agent, url, pods, work)


def test_shell_in_the_pod_of_an_exec_session_raises_the_correlation(node: LiveNode) -> None:
    """An exec session for a pod, then a shell reading /etc/shadow in that pod's container: one alert within
    seconds, with the user from the audit event and the process and container from the kernel."""
    web = node.pods["web"]
    since = len(node.seen)
    assert post(node.webhook_url, session_event(web.name)) == 200
    for _ in range(ATTEMPTS):
        run_script("cat /etc/shadow > /dev/null", cgroup=web.cgroup)
        alert = node.wait_for(lambda a: a["rule"] == CORRELATION, since=since)
        if alert is not None or not node.lost_syscalls_since(since):
            break
    assert alert is not None, f"no correlation alert within {ALERT_WAIT_S}s; alerts since: {node.seen[since:]}"
    fields = alert["output_fields"]
    assert alert["source"] == "syscall" and alert["priority"] == "Warning"
    assert fields["session.ka.user.name"] == "alice@example.com"
    assert fields["session.ka.target.namespace"] == NAMESPACE and fields["session.ka.target.name"] == web.name
    assert fields["activity.container.id"] == web.short_id
    assert fields["activity.proc.name"] in ("sh", "cat"), fields
    assert "/etc/shadow" in f"{fields['activity.proc.cmdline']} {fields['activity.fd.name']}", fields


def marker_alert(marker: Path) -> Callable[[Alert], bool]:
    """Matches the alert for a symlink created at `marker`."""
    link = str(marker)
    return lambda a: a["rule"] == MARKER_RULE and a["output_fields"].get("evt.arg.linkpath") == link


def test_the_same_shell_in_a_pod_of_another_name_stays_quiet(node: LiveNode) -> None:
    """An exec session for one pod and the same shell in another pod's container: no correlation alert, checked
    once the shell's own file read and a later marker event have been evaluated."""
    web, other = node.pods["web"], node.pods["api"]
    since = len(node.seen)
    assert post(node.webhook_url, session_event(web.name)) == 200
    for _ in range(ATTEMPTS):
        behaviour_at = len(node.seen)
        run_script("cat /etc/shadow > /dev/null", cgroup=other.cgroup)
        marker = node.work / f"marker-{uuid.uuid4().hex[:8]}"
        run_script(f"ln -sf /etc/shadow {marker}; rm -f {marker}")
        marked = node.wait_for(marker_alert(marker), since=behaviour_at)
        read = next((a for a in node.seen[behaviour_at:] if a["rule"] == SECRET_READ_RULE
                     and a["output_fields"].get("container.id") == other.short_id), None)
        if (marked is not None and read is not None) or not node.lost_syscalls_since(behaviour_at):
            break
    assert marked is not None, "the marker step never reached the engine"
    assert read is not None, "the shell's read of /etc/shadow in the other pod was not seen"
    assert [a for a in node.seen[since:] if a["rule"] == CORRELATION
            and a["output_fields"].get("activity.container.id") == other.short_id] == []
