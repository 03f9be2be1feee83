"""The agent as a real subprocess with all three sources live at once: a syscall behaviour (kernel, eBPF),
an audit event posted to the webhook and a CloudTrail file dropped into the watched directory each give their
alert on stdout, in the output file and to a gRPC subscriber."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from queue import Empty
from typing import Any

import pytest

from agent.alert import Alert
from agent.grpc.client import AlertClient
from tests.agent.test_runtime import exec_event, post
from tests.support.agent_process import REPO, Agent
from tests.support.kernel import require_probe

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.server, pytest.mark.slow]

TRAIL = next((REPO / "examples" / "cloudtrail" / "AWSLogs").rglob("*.json.gz"))
EXPECTED = {"syscall": "Sensitive File Read By Unexpected Program", "k8s_audit": None, "aws_cloudtrail": None}


def test_kernel_audit_and_cloudtrail_alerts_reach_stdout_file_and_grpc(tmp_path: Path) -> None:
    require_probe()
    trails = tmp_path / "trails"
    trails.mkdir()
    alerts_file = tmp_path / "alerts.json"
    agent = Agent("-o", "sources.k8s_audit.webhook.listen=127.0.0.1:0", "-o",
                  f"sources.aws_cloudtrail.directory.paths=[{trails}]", "-o", "outputs.file.enabled=true",
                  "-o", f"outputs.file.path={alerts_file}", "--json", kernel=True)
    agent.read_alerts()
    received: list[Alert] = []
    try:
        url = agent.wait_for_log("webhook_listening")["url"]
        started = agent.wait_for_log("agent_started", timeout_s=90)
        assert sorted(started["sources"]) == ["aws_cloudtrail", "k8s_audit", "kernel"]
        client = AlertClient(socket_path=agent.state / "grpc.sock")
        listener = threading.Thread(target=lambda: received.extend(_collect(client)), daemon=True)
        listener.start()

        subprocess.run(["cat", "/etc/shadow"], stdout=subprocess.DEVNULL, check=True)
        assert post(url, exec_event(7)) == 200
        shutil.copy(TRAIL, trails / TRAIL.name)

        seen: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 30
        while set(seen) != set(EXPECTED) and time.monotonic() < deadline:
            for alert in agent.wait_for_alerts(1, timeout_s=30):
                seen.setdefault(alert["source"], alert)
        assert set(seen) == set(EXPECTED), f"alerts only from {sorted(seen)}"
        shadow = [a for a in _stdout_alerts(agent, seen) if a["rule"] == EXPECTED["syscall"]]
        assert shadow and shadow[0]["output_fields"]["fd.name"] == "/etc/shadow"
        _wait(lambda: {a.source for a in received} >= set(EXPECTED))
    finally:
        code, _ = agent.stop()
    assert code == 0
    in_file = [json.loads(line) for line in alerts_file.read_text().splitlines()]
    assert {a["source"] for a in in_file} >= set(EXPECTED)
    assert any(a["rule"] == EXPECTED["syscall"] for a in in_file)


def _collect(client: AlertClient) -> list[Alert]:
    out = []
    for item in client.subscribe(resume_after=0, reconnect=False):
        assert isinstance(item, Alert), item  # a fresh agent has lost nothing, so there is no gap
        out.append(item)
        if {a.source for a in out} >= set(EXPECTED):
            break
    return out


def _stdout_alerts(agent: Agent, seen: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = list(seen.values())
    while not agent.alerts.empty():
        out.append(agent.alerts.get_nowait())
    return out


def _wait(predicate: Any, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "the gRPC subscriber did not get an alert of every source"
        time.sleep(0.05)


def test_syscalls_lost_in_the_kernel_raise_the_drop_alert() -> None:
    """A ring buffer too small for a flood: the agent says so with Falco's "syscall event drop" alert.

    Started as a Falco user would run syscalls alone: `--enable-source syscall`."""
    require_probe()
    agent = Agent("--enable-source", "syscall", "-o", "sources.kernel.ring_buffer_pages=1",
                  "-o", "sources.kernel.drops.alert_interval_s=0", "--json", kernel=True)
    agent.read_alerts()
    try:
        assert agent.wait_for_log("event_sources_enabled", timeout_s=90)["sources"] == ["syscall"]
        assert agent.wait_for_log("agent_started", timeout_s=90)["sources"] == ["kernel"]
        flood = [sys.executable, "-c", "import os\nfor _ in range(30000): os.close(os.open('/', 0))"]
        drop = None
        deadline = time.monotonic() + 30
        while drop is None and time.monotonic() < deadline:
            subprocess.run(flood, check=True, timeout=60)
            settle = time.monotonic() + 2  # the agent measures losses per second
            while drop is None and time.monotonic() < settle:
                try:
                    alert = agent.alerts.get(timeout=0.2)
                except Empty:
                    continue
                if alert["rule"] == "Falco internal: syscall event drop":
                    drop = alert
    finally:
        agent.stop()
    assert drop is not None, "no syscall event drop alert"
    assert drop["source"] == "internal" and drop["output_fields"]["internal.count"] > 0
