"""Container metadata: fetched off the record path, integrated between records, cached, never an error."""

from __future__ import annotations

from sources.kernel.record import SyscallRecord
from sources.kernel.state import ContainerMeta, KernelState
from sources.kernel.state.runtime_api import meta_from_crictl, meta_from_docker, parse_time_ns
from tests.sources.kernel.state_fixtures import CONTAINER_ID, FakeHost, Stream, default_host, extract


class TestRegistry:
    def test_metadata_arrives_in_the_background(self) -> None:
        """Container fields are not available until the runtime answered, then show its metadata once."""
        host = default_host()
        state = KernelState(host, fetch_containers=True)
        try:
            state.seed()
            state.settle_containers(timeout_s=5)
            assert host.asked.count(("container", CONTAINER_ID)) == 1
            s = Stream(host, seed=False)
            s.state = state
            event = s.open(300, "/etc/hosts")
            assert extract(event, "container.name") == "web" and extract(event, "container.privileged") is True
            assert extract(event, "container.image.repository") == "docker.io/library/nginx"
            assert extract(event, "container.image.tag") == "1.25" and extract(event, "container.start_ts") == 5
            assert extract(event, "k8s.ns.name") == "prod" and extract(event, "k8s.pod.name") == "web-0"
            assert extract(event, "container.type") == "docker"
        finally:
            state.close()

    def test_a_new_containers_first_event_carries_its_metadata(self) -> None:
        """A runtime that answers quickly is waited for: the exec that starts a container already shows its pod."""
        host = default_host()
        state = KernelState(host, fetch_containers=True)
        try:
            s = Stream(host, seed=False)
            s.state = state
            state.seed()  # seeding asks for the container of process 300 ...
            state.settle_containers(timeout_s=5)
            fresh = "b" * 64
            host.containers[fresh] = ContainerMeta(fresh, name="job", labels={
                "io.kubernetes.pod.namespace": "batch", "io.kubernetes.pod.name": "job-1"})
            host.cgroups[77] = fresh
            s.fork(300, 310)
            event = s.state.apply(SyscallRecord("execve", s.ts_ns + 1, 310, 310, 0, 0, "job", 0,
                                                {"filename": "/job", "argv": ["/job"]}, cgroup_id=77))
            assert event is not None
            assert extract(event, "container.name") == "job" and extract(event, "k8s.pod.name") == "job-1"
        finally:
            state.close()

    def test_unknown_container_is_not_available(self) -> None:
        """A container the runtime does not know has an id but no name; the host is `host`."""
        host = default_host()
        host.containers.clear()
        s = Stream(host)
        event = s.open(300, "/x")
        assert extract(event, "container.id") == CONTAINER_ID[:12] and extract(event, "container.name") is None
        assert extract(event, "k8s.ns.name") is None
        on_host = s.open(200, "/x")
        assert extract(on_host, "container.id") == "host" and extract(on_host, "container.name") == "host"

    def test_container_users_come_from_the_container(self) -> None:
        """A containerized process's user names come from its own passwd file."""
        s = Stream()
        s.record("setuid", 300, uid=1000)
        event = s.open(300, "/x")
        assert extract(event, "user.uid") == 1000 and extract(event, "user.name") == "<NA>"
        assert extract(s.open(200, "/x"), "user.name") == "alice"


def test_docker_inspect_answer() -> None:
    """The Docker API's container JSON maps to name, image, privileged flag, start time and labels (and no
    `Mounts` list to no mounts, an answer unlike an unknown container's None)."""
    doc = {"Id": CONTAINER_ID, "Name": "/web", "Image": "sha256:abc",
           "Config": {"Image": "nginx:1.25", "Labels": {"io.kubernetes.pod.name": "p"}},
           "HostConfig": {"Privileged": True}, "State": {"StartedAt": "2024-05-01T10:00:00.123456789Z"}}
    meta = meta_from_docker(doc, "docker")
    assert meta == ContainerMeta(CONTAINER_ID, "web", "nginx:1.25", "sha256:abc", True,
                                 1714557600123456789, "docker", {"io.kubernetes.pod.name": "p"}, mounts=())


def test_crictl_inspect_answer() -> None:
    """`crictl inspect` output maps to the same metadata."""
    doc = {"status": {"id": CONTAINER_ID, "metadata": {"name": "app"}, "image": {"image": "redis:7"},
                      "imageRef": "sha256:def", "startedAt": "2024-05-01T10:00:00Z",
                      "labels": {"io.kubernetes.pod.namespace": "ns"}},
           "info": {"config": {"linux": {"security_context": {"privileged": False}}}}}
    meta = meta_from_crictl(doc)
    assert (meta.name, meta.image, meta.privileged, meta.labels) == ("app", "redis:7", False,
                                                                     {"io.kubernetes.pod.namespace": "ns"})
    assert meta.start_ns == 1714557600 * 10**9


def test_zero_time_is_unknown() -> None:
    """Docker's zero time and garbage parse to None."""
    assert parse_time_ns("0001-01-01T00:00:00Z") is None and parse_time_ns("garbage") is None


def test_fake_host_is_a_host_view() -> None:
    """The test host answers every HostView question (a static check that the protocol fits)."""
    host: FakeHost = default_host()
    assert host.container("nope") is None and host.process(1) is None
