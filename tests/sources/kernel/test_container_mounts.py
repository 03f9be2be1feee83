"""container.mounts and container.mount*[ARG]: a container's mounts as its runtime answered, picked the way
Falco's container plugin picks them (a position, or a path pattern searched in the source or destination)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.builtin_sources import new_engine
from agent.engine.engine import RulesText
from agent.event import Event
from sources.kernel.capture import replay_capture
from sources.kernel.state import ContainerMeta, KernelState
from sources.kernel.state.host import ContainerMount
from sources.kernel.state.runtime_api import RuntimeClient, cri_mounts, docker_mounts, meta_from_docker
from tests.sources.kernel.state_fixtures import (
    CONTAINER_ID,
    FakeHost,
    Stream,
    default_host,
    extract,
    recorded_stream,
)
from tests.support.docker_api import FakeDockerApi, bind_mount
from tests.support.queue_consumer import eventually

PROC = ContainerMount("/proc", "/host/proc", "ro", False, "rprivate")
DATA = ContainerMount("/srv/data", "/data", "", True, "rslave")
MOUNTS = [bind_mount("/proc", "/host/proc", read_only=True),
          bind_mount("/srv/data", "/data", propagation="rslave")]


class RuntimeHost(FakeHost):
    """The fake host, but container metadata comes from a real Docker API client over a unix socket."""

    def __init__(self, socket_path: Path) -> None:
        base = default_host()
        super().__init__(snapshots=base.snapshots, users=base.users)
        self.client = RuntimeClient(docker_sockets=[str(socket_path)], cri_sockets=[])

    def container(self, container_id: str) -> ContainerMeta | None:
        return self.client.container(container_id)


@pytest.fixture
def stream(tmp_path: Path) -> Iterator[Stream]:
    """Process 300 runs in a container the fake Docker API describes with two mounts; 200 runs on the host."""
    with FakeDockerApi(tmp_path / "docker.sock") as api:
        api.add(CONTAINER_ID, namespace="prod", pod="web-0", mounts=MOUNTS)
        host = RuntimeHost(api.socket_path)
        state = KernelState(host, fetch_containers=True)
        try:
            s = Stream(host, seed=False)
            s.state = state
            state.seed()
            def answered() -> bool:  # the fetch runs on the state's thread; on a busy machine it may take a while
                state.settle_containers(timeout_s=0.5)
                return api.answered == [CONTAINER_ID]

            assert eventually(answered)
            yield s
        finally:
            state.close()


def in_container(s: Stream) -> Event:
    return s.open(300, "/etc/hosts")


def test_the_runtime_answer_carries_the_mounts(stream: Stream) -> None:
    """All mounts in one text, each `source:dest:mode:rdwr:propagation`, in the runtime's order."""
    assert extract(in_container(stream), "container.mounts") == (
        "/proc:/host/proc:ro:false:rprivate,/srv/data:/data::true:rslave")


@pytest.mark.parametrize(("field", "value"), [
    ("container.mount[0]", "/proc:/host/proc:ro:false:rprivate"),
    ("container.mount[1]", "/srv/data:/data::true:rslave"),
    ("container.mount[/srv/data]", "/srv/data:/data::true:rslave"),
    ("container.mount.source[0]", "/proc"),
    ("container.mount.source[/data]", "/srv/data"),
    ("container.mount.dest[1]", "/data"),
    ("container.mount.dest[/proc*]", "/host/proc"),
    ("container.mount.mode[0]", "ro"),
    ("container.mount.mode[/srv/data]", ""),
    ("container.mount.rdwr[0]", "false"),
    ("container.mount.rdwr[/srv]", "true"),
    ("container.mount.propagation[1]", "rslave"),
    ("container.mount.propagation[/proc]", "rprivate"),
])
def test_one_mount_by_position_or_path(stream: Stream, field: str, value: str) -> None:
    """A position picks the n-th mount; a path picks by source, except `.source`, which picks by destination."""
    assert extract(in_container(stream), field) == value


@pytest.mark.parametrize("field", [
    "container.mount[2]", "container.mount.dest[/var/run/docker.sock]", "container.mount.source[/srv/data]",
    "container.mount.mode[7]", "container.mount.rdwr[/etc]", "container.mount.propagation[/root*]",
])
def test_past_the_end_or_no_match_has_no_value(stream: Stream, field: str) -> None:
    assert extract(in_container(stream), field) is None


def test_a_path_is_a_pattern_searched_anywhere(stream: Stream) -> None:
    """As in the container plugin, the key is a regular expression found anywhere in the path, not a glob:
    `[/proc*]` finds `/host/proc` among destinations, and `[^/srv]` only sources starting with /srv."""
    event = in_container(stream)
    assert extract(event, "container.mount.source[/proc*]") == "/proc"
    assert extract(event, "container.mount.dest[^/srv]") == "/data"
    assert extract(event, "container.mount.dest[^/data]") is None


@pytest.mark.parametrize("field", ["container.mounts", "container.mount[0]", "container.mount.dest[/proc*]"])
def test_a_host_process_has_no_mounts(stream: Stream, field: str) -> None:
    assert extract(stream.open(200, "/etc/hosts"), field) is None


def test_a_container_the_runtime_does_not_know_has_no_mounts() -> None:
    """No answer: not even an empty list (`<NA>`, as every other runtime field)."""
    host = default_host()
    host.containers.clear()
    event = Stream(host).open(300, "/x")
    assert extract(event, "container.mounts") is None and extract(event, "container.mount[0]") is None


def test_a_container_without_mounts_has_an_empty_list() -> None:
    host = default_host()
    host.containers[CONTAINER_ID] = ContainerMeta(CONTAINER_ID, name="web", mounts=())
    s = Stream(host)
    s.state.learn_container(host.containers[CONTAINER_ID])
    event = s.open(300, "/x")
    assert extract(event, "container.mounts") == "" and extract(event, "container.mount.dest[/]") is None


def test_a_bad_pattern_is_refused_at_load() -> None:
    """A key that is not a regular expression is a load error naming the field, not a rule that never fires."""
    result = new_engine().load_rules([RulesText("bad.yaml", (
        "- rule: bad\n  desc: d\n  condition: evt.type=execve and container.mount.dest[/proc(] = x\n"
        "  output: o\n  priority: INFO\n"))])
    assert not result.successful
    assert any("container.mount.dest" in p.as_text() and "regular expression" in p.as_text() for p in result.errors)


SENSITIVE = """
- macro: sensitive_mount
  condition: (not container.mount.dest[/proc*] in ("<NA>","N/A") or
              not container.mount.dest[/var/run/docker.sock] in ("<NA>","N/A"))
- rule: proc mounted
  desc: d
  condition: evt.type in (open, openat) and container.mount.dest[/proc*] = /host/proc
  output: "mounts=%container.mounts first=%container.mount[0]"
  priority: INFO
- rule: sensitive mount (sandbox form)
  desc: d
  condition: evt.type in (open, openat) and container.id != host and sensitive_mount
  output: o
  priority: INFO
- rule: docker socket mounted
  desc: d
  condition: evt.type in (open, openat) and container.mount.dest[/var/run/docker.sock] != "N/A"
  output: o
  priority: INFO
"""


def test_rules_see_the_mounts_and_a_missing_one_compares_false(stream: Stream) -> None:
    """In rules: a present mount compares; a missing one makes every comparison false, as in libsinsp, so `!=`
    is false too, while `not ... in (...)` (Falco's sandbox macro) is true, exactly as in Falco."""
    engine = new_engine(rule_matching="all")
    result = engine.load_rules([RulesText("sensitive.yaml", SENSITIVE)])
    assert result.successful, [p.as_text() for p in result.errors]
    fired = {alert.rule: alert for alert in engine.process(in_container(stream))}
    assert set(fired) == {"proc mounted", "sensitive mount (sandbox form)"}
    proc = "/proc:/host/proc:ro:false:rprivate"
    assert fired["proc mounted"].output.endswith(f"mounts={proc},/srv/data:/data::true:rslave first={proc}")


def test_docker_mounts_parse() -> None:
    """Docker's Mounts map field by field; entries that are not objects are skipped; no list is no mounts."""
    assert docker_mounts([*MOUNTS, "junk"]) == (PROC, DATA)
    assert docker_mounts(None) == ()
    doc = {"Id": CONTAINER_ID, "Mounts": MOUNTS}
    assert meta_from_docker(doc, "docker").mounts == (PROC, DATA)


def test_cri_mounts_parse() -> None:
    """CRI mounts have no mode text; propagation comes by enum name or number, in the plugin's words."""
    mounts = [{"containerPath": "/host/proc", "hostPath": "/proc", "readonly": True},
              {"containerPath": "/data", "hostPath": "/srv/data", "propagation": "PROPAGATION_HOST_TO_CONTAINER"},
              {"containerPath": "/shared", "hostPath": "/mnt", "propagation": 2},
              {"containerPath": "/odd", "hostPath": "/odd", "propagation": ["?"]}]
    assert cri_mounts(mounts) == (ContainerMount("/proc", "/host/proc", "", False, "private"),
                                  ContainerMount("/srv/data", "/data", "", True, "rslave"),
                                  ContainerMount("/mnt", "/shared", "", True, "rshared"),
                                  ContainerMount("/odd", "/odd", "", True, "unknown"))


def test_a_capture_replays_the_mounts(tmp_path: Path) -> None:
    """A recorded run keeps the runtime's mounts: the replay shows the same field values with no runtime."""
    host = default_host()
    host.containers[CONTAINER_ID] = ContainerMeta(CONTAINER_ID, name="web", mounts=(PROC, DATA))
    path = tmp_path / "run.capture"
    with recorded_stream(host, path) as s:
        live = in_container(s)
    replayed = [e for e in replay_capture(path) if e.type == "openat"]
    assert len(replayed) == 1
    for field in ("container.mounts", "container.mount.dest[/proc]", "container.mount.rdwr[1]"):
        assert extract(replayed[0], field) == extract(live, field) is not None
