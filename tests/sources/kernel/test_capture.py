"""Capture files: a run recorded with every host answer replays to the same events and field values."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sources.kernel.capture import read_capture, replay_capture, write_capture
from sources.kernel.state import KernelState
from tests.sources.kernel.state_fixtures import CONTAINER_ID, Stream, default_host, extract, inet, snapshot

FIELDS = ("evt.type", "evt.num", "proc.name", "proc.pname", "proc.exepath", "proc.cmdline", "proc.aname[2]",
          "proc.cwd", "fd.name", "fd.nameraw", "fd.type", "evt.args", "user.name", "group.name", "container.id",
          "container.name", "k8s.ns.name", "proc.env", "thread.cap_effective", "proc.is_exe_from_memfd")


def _record_run(path: Path) -> list[dict[str, object]]:
    host = default_host()
    host.later[210] = snapshot(210, 200, "curl", exepath="/usr/bin/curl", env=["HOME=/root"], cap_effective=3)
    with write_capture(path) as writer:
        state = KernelState(host, observer=writer, fetch_containers=True)
        stream = Stream(host, seed=False)
        stream.state = state
        state.seed()
        state.settle_containers(timeout_s=5)
        stream.spawn(200, 210, "/usr/bin/curl", "-s", "http://x")
        stream.record("socket", 210, res=3, domain=2, type=1, proto=0)
        stream.record("connect", 210, fd=3, addr=inet("192.0.2.1", 80))
        stream.open(300, "../etc/passwd", res=4)
        stream.record("memfd_create", 300, res=5, name="m", flags=0)
        stream.record("symlinkat", 200, target="/etc/shadow", linkdirfd=-100, linkpath="/tmp/s")
        stream.record("openat", 777, res=3, comm="late", dirfd=-100, name="/x", flags=0)
        stream.record("socket", 210, res=6, domain=2, type=1, proto=0)
        stream.record("connect", 210, res=-115, fd=6, addr=inet("192.0.2.1", 443), local_addr=inet("10.0.0.5", 0))
        stream.update("tcp_local", 210, fd=6, local_port=51000)  # recorded, but never an event
        stream.record("dup2", 210, res=1, oldfd=6, newfd=1)
        stream.exit(210)
        state.close()
    return [{name: str(extract(event, name)) for name in FIELDS} for event in stream.events]


def test_replay_gives_the_same_field_values(tmp_path: Path) -> None:
    """Every field of every event replays identically from the capture alone."""
    path = tmp_path / "run.jsonl"
    live = _record_run(path)
    replayed = [{name: str(extract(event, name)) for name in FIELDS} for event in replay_capture(path)]
    assert replayed == live
    assert live[1]["proc.exepath"] == "/usr/bin/curl" and live[4]["container.name"] == "web"
    assert "tcp_local" not in {event["evt.type"] for event in replayed}
    assert replayed[-2]["fd.name"] == "10.0.0.5:51000->192.0.2.1:443"  # the dup2 after the late port


def test_capture_lines(tmp_path: Path) -> None:
    """The file starts with a header, records each host answer before the record that needed it, and
    encodes bytes as base64."""
    path = tmp_path / "run.jsonl"
    _record_run(path)
    lines = list(read_capture(path))
    kinds = [line["kind"] for line in lines]
    assert kinds[0] == "header" and kinds[1] == "processes" and "seeded" in kinds and "container" in kinds
    # The exec's snapshot is written just before the exec record that asked for it.
    assert lines[kinds.index("process") + 1]["type"] == "execve"
    connect = next(line for line in lines if line.get("type") == "connect")
    assert "$b64" in connect["args"]["addr"]
    accounts = next(line for line in lines if line["kind"] == "accounts" and line["container_id"] == CONTAINER_ID)
    assert accounts["answer"]["users"]["0"]["name"] == "root"


def test_not_a_capture(tmp_path: Path) -> None:
    """A file that is not a capture is refused with its name and line."""
    path = tmp_path / "other.jsonl"
    path.write_bytes(orjson.dumps({"kind": "record"}) + b"\n")
    with pytest.raises(ValueError, match=r"other\.jsonl:1"):
        list(read_capture(path))
