"""The kernel source's process state on real processes: five generations of ancestry, and a pid reused
after exit that is not confused with the process that had it before."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.alert import Alert
from agent.builtin_sources import new_engine
from agent.engine.engine import RulesText
from tests.support.kernel import AlertLog, copy_binary, live_kernel_source

pytestmark = [pytest.mark.root, pytest.mark.bpf]

MARKER = "/tmp/falco-agent-state-"
RULE = f"""
- rule: Marker file opened
  desc: test rule reporting who opened a marker file
  condition: evt.type in (open, openat) and fd.name startswith {MARKER}
  output: >
    file=%fd.name name=%proc.name pid=%proc.pid ppid=%proc.ppid exepath=%proc.exepath a1=%proc.aname[1]
    a2=%proc.aname[2] a3=%proc.aname[3] a4=%proc.aname[4] a5=%proc.aname[5] p5=%proc.apid[5]
  priority: NOTICE
"""


@pytest.fixture(scope="module")
def alerts() -> Iterator[AlertLog]:
    engine = new_engine(rule_matching="all")
    result = engine.load_rules([RulesText("marker.yaml", RULE)])
    assert result.successful, result.as_text()
    with live_kernel_source(engine) as log:
        yield log


def _opened(alerts: AlertLog, marker: str) -> Alert:
    hit = alerts.wait_for(lambda a: a.output_fields.get("fd.name") == marker, timeout_s=2.0)
    assert hit is not None, f"no alert for {marker} within 2 s"
    return hit


def test_ancestry_over_five_generations(alerts: AlertLog, tmp_path: Path) -> None:
    marker = f"{MARKER}{uuid.uuid4().hex}"
    Path(marker).write_text("x")
    step = f"cat {marker} > /dev/null; true\n"
    for generation in range(5, 0, -1):
        copy_binary("/bin/sh", tmp_path / f"gen{generation}")
        (tmp_path / f"step{generation}.sh").write_text(step)
        step = f"{tmp_path / f'gen{generation}'} {tmp_path / f'step{generation}.sh'}; true\n"
    top = subprocess.Popen([str(tmp_path / "gen1"), str(tmp_path / "step1.sh")])
    top.wait(timeout=10)
    fields = _opened(alerts, marker).output_fields
    Path(marker).unlink()
    assert fields["proc.name"] == "cat"
    assert [fields[f"proc.aname[{n}]"] for n in range(1, 6)] == ["gen5", "gen4", "gen3", "gen2", "gen1"]
    assert fields["proc.apid[5]"] == top.pid


def _spawn_with_pid(argv: list[str], pid: int, attempts: int = 20) -> subprocess.Popen[bytes] | None:
    """Start argv as pid `pid` by steering the kernel's next pid (other forks on the machine may race)."""
    for _ in range(attempts):
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        proc = subprocess.Popen(argv)
        if proc.pid == pid:
            return proc
        proc.wait(timeout=10)
    return None


def test_a_reused_pid_is_a_new_process(alerts: AlertLog, tmp_path: Path) -> None:
    first, second = f"{MARKER}{uuid.uuid4().hex}", f"{MARKER}{uuid.uuid4().hex}"
    for marker in (first, second):
        Path(marker).write_text("x")
    alpha, beta = copy_binary("/bin/cat", tmp_path / "alpha"), copy_binary("/bin/cat", tmp_path / "beta")
    old = subprocess.Popen([str(alpha), first], stdout=subprocess.DEVNULL)
    old.wait(timeout=10)
    before = _opened(alerts, first).output_fields
    new = _spawn_with_pid([str(beta), second], old.pid)
    if new is None:
        pytest.skip("could not get the same pid again: the machine forks too much to steer ns_last_pid")
    new.wait(timeout=10)
    after = _opened(alerts, second).output_fields
    for marker in (first, second):
        Path(marker).unlink()
    assert before["proc.pid"] == after["proc.pid"] == old.pid
    assert (before["proc.name"], after["proc.name"]) == ("alpha", "beta")
    assert after["proc.exepath"] == str(beta)
