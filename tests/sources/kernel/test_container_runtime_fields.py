"""The container plugin's network, namespace, sandbox and health-probe fields (`container.ip`,
`container.host_*`, `container.healthcheck`, `proc.is_container_healthcheck`, `k8s.pod.sandbox_id`,
`k8s.pod.ip`, `k8s.pod.cni.json`, ...): from a Docker API over a unix socket, from `crictl inspect` and
`crictl inspectp` run as processes, through the kernel state, a rule and a capture replay."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.builtin_sources import new_engine
from agent.engine.engine import RulesText
from agent.event import Event
from sources.kernel.capture import replay_capture
from sources.kernel.record import SyscallRecord
from sources.kernel.state import ContainerMeta, KernelState
from sources.kernel.state.cni_result import cni_result
from sources.kernel.state.host import HealthProbe, ProbeKind
from sources.kernel.state.runtime_api import RuntimeClient, meta_from_crictl, meta_from_docker
from sources.kernel.state.runtime_probes import docker_probes, pod_spec_probes
from tests.sources.kernel.state_fixtures import (
    CONTAINER_ID,
    FakeHost,
    Stream,
    default_host,
    extract,
    recorded_stream,
)
from tests.support.docker_api import FakeDockerApi, Networking, inspect_document
from tests.support.queue_consumer import eventually

SANDBOX_ID = "5" * 64
HEALTHCHECK = ("CMD-SHELL", "curl -f http://localhost/ || exit 1")
PROBE_ARGV = ["/bin/sh", "-c", "curl -f http://localhost/ || exit 1"]
APP_CGROUP = 77


class RuntimeHost(FakeHost):
    """The fake host, but container metadata comes from a real RuntimeClient."""

    def __init__(self, client: RuntimeClient) -> None:
        base = default_host()
        super().__init__(snapshots=base.snapshots, users=base.users, cgroups={APP_CGROUP: CONTAINER_ID})
        self.client = client

    def container(self, container_id: str) -> ContainerMeta | None:
        return self.client.container(container_id)


def _stream_for(host: RuntimeHost) -> Iterator[Stream]:
    state = KernelState(host, fetch_containers=True)
    try:
        s = Stream(host, seed=False)
        s.state = state
        state.seed()

        def described() -> bool:  # the fetch runs in the background; on a busy machine it may take a while
            state.settle_containers(timeout_s=0.5)
            meta = state.ctx.containers.get(CONTAINER_ID)
            return meta is not None and meta.described

        assert eventually(described)
        yield s
    finally:
        state.close()


@pytest.fixture
def docker_pod(tmp_path: Path) -> Iterator[Stream]:
    """Process 300 runs in the app container of a pod whose sandbox (its own container) holds the network;
    the app container shares the host's pid and IPC namespaces and has a HEALTHCHECK."""
    with FakeDockerApi(tmp_path / "docker.sock") as api:
        api.add(SANDBOX_ID, namespace="prod", pod="web-0", networking=Networking(ip="10.244.1.7"))
        api.add(CONTAINER_ID, namespace="prod", pod="web-0", healthcheck=HEALTHCHECK,
                networking=Networking(peer=SANDBOX_ID, pid_mode="host", ipc_mode="host"),
                labels={"io.kubernetes.sandbox.id": SANDBOX_ID})
        yield from _stream_for(RuntimeHost(RuntimeClient(docker_sockets=[str(api.socket_path)], cri_sockets=[])))


def in_container(s: Stream) -> Event:
    return s.open(300, "/etc/hosts")


@pytest.mark.parametrize(("field", "value"), [
    ("container.ip", "10.244.1.7"),
    ("container.host_pid", True),
    ("container.host_network", False),
    ("container.host_ipc", True),
    ("container.cni.json", ""),
    ("container.healthcheck", "/bin/sh -c curl -f http://localhost/ || exit 1"),
    ("container.liveness_probe", "NONE"),
    ("container.readiness_probe", "NONE"),
    ("k8s.pod.sandbox_id", SANDBOX_ID[:12]),
    ("k8s.pod.full_sandbox_id", SANDBOX_ID),
    ("k8s.pod.ip", "10.244.1.7"),
    ("k8s.pod.cni.json", ""),
])
def test_docker_answer(docker_pod: Stream, field: str, value: Any) -> None:
    """A container that joined its sandbox's network has the sandbox's address, which is the pod's."""
    assert extract(in_container(docker_pod), field) == value


@pytest.mark.parametrize(("field", "value"), [
    ("container.ip", ""), ("container.host_pid", False), ("container.host_network", False),
    ("container.healthcheck", "NONE"), ("k8s.pod.sandbox_id", ""), ("k8s.pod.ip", ""),
    ("proc.is_container_healthcheck", False),
])
def test_a_host_thread_has_the_plugins_host_values(docker_pod: Stream, field: str, value: Any) -> None:
    assert extract(docker_pod.open(200, "/etc/hosts"), field) == value


@pytest.mark.parametrize("field", ["container.ip", "container.host_network", "container.healthcheck",
                                   "k8s.pod.sandbox_id", "k8s.pod.ip", "container.cni.json"])
def test_a_container_not_described_has_no_value(field: str) -> None:
    host = default_host()
    host.containers.clear()
    event = Stream(host).open(300, "/x")
    assert extract(event, field) is None
    assert extract(event, "proc.is_container_healthcheck") is False


def test_a_container_outside_any_pod_has_no_pod_address() -> None:
    doc = inspect_document(CONTAINER_ID, namespace="", pod="", networking=Networking(ip="172.17.0.3",
                                                                                    network_mode="host"))
    meta = meta_from_docker(doc, "docker")
    assert (meta.ip, meta.host_network, meta.pod_sandbox_id) == ("172.17.0.3", True, "")
    host = default_host()
    host.containers[CONTAINER_ID] = meta
    s = Stream(host)
    s.state.learn_container(meta)
    event = s.open(300, "/x")
    assert extract(event, "container.ip") == "172.17.0.3" and extract(event, "k8s.pod.ip") == ""


# --- health probes -------------------------------------------------------------------------------------------

def _probe_stream(probes: tuple[HealthProbe, ...]) -> Stream:
    """Host process 400 stands for the runtime's shim; the container (init 300) has `probes`."""
    host = default_host()
    host.cgroups[APP_CGROUP] = CONTAINER_ID
    meta = ContainerMeta(CONTAINER_ID, name="web", runtime="docker", mounts=(), probes=probes)
    host.containers[CONTAINER_ID] = meta
    s = Stream(host)
    s.state.learn_container(meta)
    s.spawn(1, 400, "/usr/bin/containerd-shim-runc-v2", "-id", "x")
    return s


def _exec_in_container(s: Stream, tid: int, argv: list[str]) -> Event:
    """An exec that enters the container's cgroup, as runc's does."""
    s.ts_ns += 1_000_000
    event = s.state.apply(SyscallRecord("execve", s.ts_ns, tid, tid, 0, 0, argv[0].rsplit("/", 1)[-1][:15], 0,
                                        {"filename": argv[0], "argv": argv}, cgroup_id=APP_CGROUP))
    assert event is not None
    return event


HEALTH = HealthProbe(ProbeKind.HEALTHCHECK, PROBE_ARGV[0], tuple(PROBE_ARGV[1:]))


def test_the_runtime_running_the_probe_command_is_a_healthcheck() -> None:
    """The shim starts the probe command in the container: it is the healthcheck, and so is what it starts."""
    s = _probe_stream((HEALTH,))
    s.fork(400, 410)
    probe = _exec_in_container(s, 410, PROBE_ARGV)
    assert extract(probe, "proc.is_container_healthcheck") is True
    assert extract(probe, "proc.is_container_liveness_probe") is False
    s.fork(410, 411)
    child = _exec_in_container(s, 411, ["curl", "-f", "http://localhost/"])
    assert extract(child, "proc.is_container_healthcheck") is True


def test_the_same_command_from_inside_the_container_is_not() -> None:
    """Started by the container's init (or anything under it), the same argv is the container's own work."""
    s = _probe_stream((HEALTH,))
    s.fork(300, 310)
    own = _exec_in_container(s, 310, PROBE_ARGV)
    assert extract(own, "proc.is_container_healthcheck") is False


def test_another_command_from_the_runtime_is_not() -> None:
    """`docker exec` of anything else is no probe; an argv must equal the probe's, not merely start with it."""
    s = _probe_stream((HEALTH,))
    s.fork(400, 420)
    assert extract(_exec_in_container(s, 420, ["/bin/sh", "-c", "id"]), "proc.is_container_healthcheck") is False
    s.fork(400, 421)
    assert extract(_exec_in_container(s, 421, ["/bin/sh"]), "proc.is_container_healthcheck") is False


def test_kubernetes_probes_are_told_apart() -> None:
    s = _probe_stream((HealthProbe(ProbeKind.LIVENESS, "/bin/healthcheck", ("--live",)),
                       HealthProbe(ProbeKind.READINESS, "/bin/healthcheck", ("--ready",))))
    s.fork(400, 430)
    ready = _exec_in_container(s, 430, ["/bin/healthcheck", "--ready"])
    assert extract(ready, "proc.is_container_readiness_probe") is True
    assert extract(ready, "proc.is_container_liveness_probe") is False
    assert extract(ready, "container.liveness_probe") == "/bin/healthcheck --live"
    assert extract(ready, "container.healthcheck") == "NONE"


def test_docker_probe_sources() -> None:
    """Docker's HEALTHCHECK (`CMD` as is, `CMD-SHELL` through /bin/sh -c, `NONE` none); a pod spec recorded
    in the labels gives Kubernetes probes instead, for the container named in them."""
    assert docker_probes({"Healthcheck": {"Test": ["CMD", "/bin/check", "-q"]}}) == (
        HealthProbe(ProbeKind.HEALTHCHECK, "/bin/check", ("-q",)),)
    assert docker_probes({"Healthcheck": {"Test": ["NONE"]}}) == ()
    assert docker_probes({"Healthcheck": None}) == ()
    spec = {"spec": {"containers": [
        {"name": "sidecar", "livenessProbe": {"exec": {"command": ["/bin/side"]}}},
        {"name": "app", "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}},
         "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}}}]}}
    config = {"Healthcheck": {"Test": ["CMD", "/bin/check"]},
              "Labels": {"io.kubernetes.container.name": "app",
                         "annotation.kubectl.kubernetes.io/last-applied-configuration": json.dumps(spec)}}
    assert docker_probes(config) == (HealthProbe(ProbeKind.READINESS, "cat", ("/tmp/ready",)),)


def test_a_malformed_pod_spec_gives_no_probes() -> None:
    assert pod_spec_probes("{not json", "app") == ()
    assert pod_spec_probes("[" * 100_000, "app") == ()
    assert pod_spec_probes('{"spec": {"containers": 3}}', None) == ()
    assert pod_spec_probes('{"spec": {"containers": [{"livenessProbe": {"exec": {"command": []}}}]}}', None) == ()


# --- CRI -----------------------------------------------------------------------------------------------------

CONTAINERD_CNI = {"cniResult": {"Interfaces": {
    "bridge": {"IPConfigs": None, "Mac": "ce:64:08:76:88:6a"},
    "eth0": {"IPConfigs": [{"IP": "10.244.0.2", "Gateway": "10.244.0.1"}], "Mac": "fe:06:00:f8:2f:4d",
             "Sandbox": "/var/run/netns/cni-1"},
    "lo": {"IPConfigs": [{"IP": "127.0.0.1"}]},
    "veth71b0e931": {"IPConfigs": None, "Mac": "72:b7:4f:bc:e4:a4"}}}}
TRIMMED_CNI = '{"bridge":{"IPConfigs":null},"eth0":{"IPConfigs":[{"Gateway":"10.244.0.1","IP":"10.244.0.2"}]}}'
POD_SPEC = {"spec": {"containers": [{"name": "app", "livenessProbe": {"exec": {"command": ["/bin/check", "--live"]}}}]}}


def crictl_container() -> dict[str, Any]:
    """`crictl inspect` of a pod's container on containerd (the parts read)."""
    return {"status": {"id": CONTAINER_ID, "metadata": {"name": "app"}, "image": {"image": "redis:7"},
                       "imageRef": "sha256:def", "startedAt": "2024-05-01T10:00:00Z",
                       "labels": {"io.kubernetes.pod.namespace": "ns", "io.kubernetes.pod.name": "cache-0"}},
            "info": {"sandboxID": SANDBOX_ID,
                     "config": {"linux": {"security_context": {"namespace_options": {"network": 2}}}}}}


def crictl_sandbox(info: dict[str, Any]) -> dict[str, Any]:
    """`crictl inspectp` of that pod's sandbox: host network, its own pid and IPC namespaces."""
    return {"status": {"id": SANDBOX_ID, "network": {"ip": "10.244.0.2", "additionalIps": []},
                       "linux": {"namespaces": {"options": {"ipc": "POD", "network": "NODE", "pid": "CONTAINER"}}},
                       "annotations": {"kubectl.kubernetes.io/last-applied-configuration": json.dumps(POD_SPEC)}},
            "info": info}


def test_cri_answer_with_its_sandbox() -> None:
    meta = meta_from_crictl(crictl_container(), crictl_sandbox(CONTAINERD_CNI))
    assert (meta.ip, meta.pod_sandbox_id, meta.host_network, meta.host_pid, meta.host_ipc) == (
        "10.244.0.2", SANDBOX_ID, True, False, False)
    assert meta.cni_json == TRIMMED_CNI
    assert meta.labels["io.kubernetes.sandbox.id"] == SANDBOX_ID
    assert meta.probes == (HealthProbe(ProbeKind.LIVENESS, "/bin/check", ("--live",)),)


def test_cri_answer_without_its_sandbox() -> None:
    """The sandbox did not answer: no address nor CNI result, the namespaces containerd recorded in the
    container's own config (2 is NODE)."""
    meta = meta_from_crictl(crictl_container())
    assert (meta.ip, meta.cni_json, meta.host_network, meta.host_pid, meta.probes) == ("", "", True, False, ())


def test_cri_o_cni_result_is_its_annotation() -> None:
    text = '{"cniVersion":"1.0.0","ips":[{"interface":2,"address":"10.244.0.3/16"}]}'
    assert cni_result({"runtimeSpec": {"annotations": {"io.kubernetes.cri-o.CNIResult": text}}}) == text
    assert cni_result({}) == "" and cni_result(None) == ""


def _fake_crictl(bin_dir: Path, answers: dict[str, dict[str, Any]]) -> None:
    """A `crictl` on PATH answering `inspect ID` / `inspectp ID` from `answers` (keyed "inspect ID"), failing
    as crictl does for an id the runtime does not know."""
    bin_dir.mkdir()
    data = bin_dir / "answers.json"
    data.write_text(json.dumps(answers))
    script = bin_dir / "crictl"
    script.write_text(f"""#!{sys.executable}
import json, sys
# crictl --runtime-endpoint unix://SOCKET COMMAND ID
answer = json.load(open({str(data)!r})).get(" ".join(sys.argv[3:5]))
if answer is None:
    sys.exit("no such object")
print(json.dumps(answer))
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def cri_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stream]:
    _fake_crictl(tmp_path / "bin", {f"inspect {CONTAINER_ID}": crictl_container(),
                                    f"inspectp {SANDBOX_ID}": crictl_sandbox(CONTAINERD_CNI)})
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    socket_path = tmp_path / "containerd.sock"
    socket_path.touch()
    client = RuntimeClient(docker_sockets=[], cri_sockets=[str(socket_path)], timeout_s=10)
    yield from _stream_for(RuntimeHost(client))


@pytest.mark.parametrize(("field", "value"), [
    ("container.ip", "10.244.0.2"), ("k8s.pod.ip", "10.244.0.2"), ("container.cni.json", TRIMMED_CNI),
    ("k8s.pod.cni.json", TRIMMED_CNI), ("container.host_network", True), ("container.host_pid", False),
    ("k8s.pod.sandbox_id", SANDBOX_ID[:12]), ("container.liveness_probe", "/bin/check --live"),
    ("container.healthcheck", "NONE"), ("container.label[io.kubernetes.sandbox.id]", SANDBOX_ID),
])
def test_cri_runtime_through_crictl(cri_pod: Stream, field: str, value: Any) -> None:
    """`crictl inspect` names the sandbox, `crictl inspectp` of it gives the pod's network and spec."""
    assert extract(in_container(cri_pod), field) == value


# --- rules and replay ----------------------------------------------------------------------------------------

RULES = """
- rule: shell outside the health check
  desc: d
  condition: evt.type = execve and container.id != host and proc.name = sh and proc.is_container_healthcheck = false
  output: "shell in %container.name ip=%container.ip pod_ip=%k8s.pod.ip sandbox=%k8s.pod.sandbox_id"
  priority: WARNING
- rule: host network container
  desc: d
  condition: evt.type = execve and container.host_network = true
  output: o
  priority: INFO
"""


def test_rules_use_the_fields(docker_pod: Stream) -> None:
    """A shell the runtime starts as the health check is quiet; the same shell started from inside alerts,
    with the pod's address and sandbox in the output; a container on the pod network is not on the host's."""
    engine = new_engine(rule_matching="all")
    result = engine.load_rules([RulesText("probes.yaml", RULES)])
    assert result.successful, [p.as_text() for p in result.errors]
    s = docker_pod
    s.spawn(1, 400, "/usr/bin/containerd-shim-runc-v2")
    s.fork(400, 410)
    assert list(engine.process(_exec_in_container(s, 410, PROBE_ARGV))) == []
    s.fork(300, 310)
    fired = list(engine.process(_exec_in_container(s, 310, PROBE_ARGV)))
    assert [a.rule for a in fired] == ["shell outside the health check"]
    assert fired[0].output.endswith(f"ip=10.244.1.7 pod_ip=10.244.1.7 sandbox={SANDBOX_ID[:12]}")


@pytest.mark.parametrize("field", ["k8s.deployment.name", "k8s.rs.labels", "k8s.svc.label[app]", "k8s.ns.id",
                                   "k8s.rc.name", "k8s.ns.label[team]"])
def test_fields_that_need_the_api_server_are_refused(field: str) -> None:
    """The runtime knows nothing of deployments, services or namespaces: a rule naming one does not load."""
    result = new_engine().load_rules([RulesText("k8s.yaml", (
        f"- rule: r\n  desc: d\n  condition: evt.type = execve and {field} = x\n  output: o\n  priority: INFO\n"))])
    assert not result.successful
    assert any(field.split("[")[0] in p.as_text() and "not supported" in p.as_text() for p in result.errors)


def test_a_capture_replays_network_and_probes(tmp_path: Path) -> None:
    """The replay shows the runtime's network, sandbox and probes with no runtime, and tells the probe apart."""
    host = default_host()
    host.cgroups[APP_CGROUP] = CONTAINER_ID
    host.containers[CONTAINER_ID] = meta_from_crictl(crictl_container(), crictl_sandbox(CONTAINERD_CNI))
    path = tmp_path / "run.capture"
    fields = ("container.ip", "container.cni.json", "container.host_network", "k8s.pod.full_sandbox_id",
              "container.liveness_probe", "proc.is_container_liveness_probe")
    with recorded_stream(host, path) as s:
        s.spawn(1, 400, "/usr/bin/containerd-shim-runc-v2")
        s.fork(400, 410)
        live = _exec_in_container(s, 410, ["/bin/check", "--live"])
        live_values = {field: extract(live, field) for field in fields}
    replayed = [e for e in replay_capture(path) if e.type == "execve" and e.payload.thread.tid == 410]
    assert len(replayed) == 1
    assert {field: extract(replayed[0], field) for field in fields} == live_values
    assert live_values["proc.is_container_liveness_probe"] is True and live_values["container.ip"] == "10.244.0.2"
