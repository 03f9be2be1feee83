"""The agent as an operator runs it: a real subprocess, its webhook on 127.0.0.1, alerts on stdout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from queue import Empty
from typing import Any

import pytest

from tests.support import webhook_agent
from tests.support.agent_process import REPO, Agent
from tests.support.queue_consumer import eventually

pytestmark = pytest.mark.server


def exec_event(n: int) -> dict[str, Any]:
    """An exec into a pod as kubectl sends it, which the shipped rules report."""
    return {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Request", "auditID": f"exec-{n}",
        "stage": "ResponseStarted", "verb": "create", "user": {"username": "alice@example.com", "groups": ["dev"]},
        "requestURI": f"/api/v1/namespaces/shop/pods/cart-{n}/exec?command=sh&container=cart",
        "objectRef": {"resource": "pods", "namespace": "shop", "name": f"cart-{n}", "subresource": "exec",
                      "apiVersion": "v1"},
        "responseStatus": {"code": 101}, "sourceIPs": ["192.0.2.10"], "userAgent": "kubectl/v1.30.2",
        "requestReceivedTimestamp": "2026-11-29T10:00:00.000000Z", "stageTimestamp": "2026-11-29T10:00:00.010000Z",
    }


def post(url: str, body: Any) -> int:
    """POST `body` as JSON to the webhook at `url`; the status."""
    return webhook_agent.post(url, body, timeout_s=5)[0]


def test_webhook_events_become_alerts_and_sigterm_delivers_everything() -> None:
    """Events posted to the running agent's webhook come out as JSON alerts, all of them, after SIGTERM."""
    agent = Agent("-o", "sources.k8s_audit.webhook.listen=127.0.0.1:0", "--json")
    try:
        url = agent.wait_for_log("webhook_listening")["url"]
        batch = {"kind": "EventList", "items": [exec_event(n) for n in range(50)]}
        assert post(url, batch) == 200
    finally:
        code, out = agent.stop()
    alerts = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert len(alerts) == 50 and {a["source"] for a in alerts} == {"k8s_audit"}
    assert {a["output_fields"]["ka.target.name"] for a in alerts} == {f"cart-{n}" for n in range(50)}


def test_the_builtin_configuration_runs_every_source_on_example_data() -> None:
    """With no configuration file: shipped rules, the webhook, the example CloudTrail logs, gRPC and stdout alerts."""
    agent = Agent("-o", "sources.k8s_audit.webhook.listen=127.0.0.1:0", "--json", builtin_config=True)
    agent.read_alerts()
    try:
        loaded = agent.wait_for_log("rules_loaded")
        assert loaded["files"] == [str(p) for p in sorted((REPO / "rules").glob("*.yaml"))]
        assert agent.wait_for_log("grpc_listening")["socket"] == str(agent.state / "grpc.sock")
        url = agent.wait_for_log("webhook_listening")["url"]
        assert sorted(agent.wait_for_log("agent_started")["sources"]) == ["aws_cloudtrail", "k8s_audit"]
        assert post(url, exec_event(1)) == 200
        sources: set[str] = set()
        while sources != {"aws_cloudtrail", "k8s_audit"}:
            sources |= {alert["source"] for alert in agent.wait_for_alerts(1)}
    finally:
        code, _ = agent.stop()
    assert code == 0


@pytest.mark.parametrize(("args", "needle"), [
    (["-o", "sources.k8s_audit.webhok.listen=127.0.0.1:0"], "sources.k8s_audit.webhok: unknown key"),
    (["-o", "queue_capacity_events=many"], "queue_capacity_events: expected a whole number"),
    (["-c", "/nonexistent/agent.yaml"], "cannot read configuration"),
])
def test_config_mistakes_fail_fast_naming_the_key(args: list[str], needle: str) -> None:
    """A configuration mistake stops the agent at once with exit 2 and a message naming the key."""
    proc = subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2 and needle in proc.stderr


def test_broken_rules_stop_the_start(tmp_path: Path) -> None:
    """Rules that do not load keep the agent from starting, with exit 1 and the rules error on stderr."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("- rule: broken\n  condition: ka.verb =\n  output: x\n  desc: x\n  priority: INFO\n"
                   "  source: k8s_audit\n")
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "-r", str(bad),
                           "-o", "sources.k8s_audit.webhook.listen=127.0.0.1:0"],
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "LOAD_ERR_COMPILE_CONDITION" in proc.stderr


def test_port_in_use_is_reported_and_nothing_runs(tmp_path: Path) -> None:
    """When the only source cannot listen, the agent says why and exits 1 instead of idling."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "agent.cli", "-o", "sources.aws_cloudtrail.enabled=false",
                               "-o", "sources.kernel.enabled=false",
                               "-o", f"sources.k8s_audit.webhook.listen=127.0.0.1:{port}"],
                              cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "cannot listen" in proc.stderr


def test_audit_log_followed_across_rotation_and_restart_exactly_once(tmp_path: Path) -> None:
    """Audit log lines become alerts once each, across a log rotation and an agent restart."""
    logs = tmp_path / "audit"
    logs.mkdir()
    live = logs / "audit.log"
    checkpoint = tmp_path / "checkpoint.json"

    def write(path: Path, first: int, count: int) -> None:
        with path.open("a") as handle:
            for n in range(first, first + count):
                handle.write(json.dumps(exec_event(n)) + "\n")

    def run_until(count: int) -> list[dict[str, Any]]:
        agent = Agent("--json", "-o", "sources.k8s_audit.webhook.enabled=false",
                      "-o", f"sources.k8s_audit.files.paths=[{logs}]",
                      "-o", f"sources.k8s_audit.files.checkpoint_path={checkpoint}",
                      "-o", "sources.k8s_audit.files.poll_interval_s=0.05")
        agent.read_alerts()
        try:
            got = agent.wait_for_alerts(count)
        finally:
            code, _ = agent.stop()
        assert code == 0
        assert agent.alerts.empty(), "more alerts than events"
        return got

    write(live, 0, 20)
    first = run_until(20)
    live.rename(logs / "audit-2026-11-29T10-00-00.log")   # rotated while the agent is down
    write(logs / "audit-2026-11-29T10-00-00.log", 20, 5)  # the last lines written before rotation
    write(live, 25, 15)
    second = run_until(20)
    names = [a["output_fields"]["ka.target.name"] for a in first + second]
    assert sorted(names) == sorted(f"cart-{n}" for n in range(40))


def test_grpc_subscriber_receives_the_alerts_of_webhook_events() -> None:
    """A gRPC subscriber on the agent's unix socket gets every alert, with increasing sequence numbers."""
    from agent.grpc.client import AlertClient

    agent = Agent("-o", "sources.k8s_audit.webhook.listen=127.0.0.1:0")
    received: list[Any] = []
    try:
        agent.wait_for_log("grpc_listening")
        url = agent.wait_for_log("webhook_listening")["url"]
        with AlertClient(socket_path=agent.state / "grpc.sock") as client:
            assert post(url, {"kind": "EventList", "items": [exec_event(n) for n in range(5)]}) == 200
            for item in client.subscribe(resume_after=0, reconnect=False):
                received.append(item)
                if len(received) == 5:
                    break
    finally:
        assert agent.stop()[0] == 0
    assert [a.seq for a in received] == sorted(a.seq for a in received)
    assert {a.output_fields["ka.target.name"] for a in received} == {f"cart-{n}" for n in range(5)}


def test_file_output_reopens_on_sigusr1_and_metrics_are_served(tmp_path: Path) -> None:
    """Alerts go to the configured file, a rotated file is reopened on SIGUSR1, and /metrics counts them."""
    import urllib.request

    alerts_file = tmp_path / "alerts.log"
    agent = Agent("-o", "sources.k8s_audit.webhook.listen=127.0.0.1:0", "-o", "outputs.stdout.enabled=false",
                  "-o", "outputs.file.enabled=true", "-o", f"outputs.file.path={alerts_file}")
    try:
        url = agent.wait_for_log("webhook_listening")["url"]
        metrics_url = agent.wait_for_log("metrics_listening")["url"]
        assert post(url, {"kind": "EventList", "items": [exec_event(n) for n in range(3)]}) == 200
        def alerts_counted() -> int:
            text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
            line = next((ln for ln in text.splitlines() if ln.startswith("falco_agent_alerts_total ")), "x 0")
            return int(float(line.split()[1]))

        assert eventually(lambda: alerts_counted() >= 3, timeout_s=20)
        alerts_file.rename(tmp_path / "alerts.log.1")
        agent.proc.send_signal(signal.SIGUSR1)
        assert post(url, exec_event(99)) == 200
    finally:
        code, _ = agent.stop()
    assert code == 0
    assert len((tmp_path / "alerts.log.1").read_text().splitlines()) == 3
    assert "cart-99" in alerts_file.read_text()


def rules_text(version: int) -> str:
    """One k8s_audit rule named after its version, whose output names each event's pod (so repeats show)."""
    return (f"- rule: Exec v{version}\n  desc: exec into a pod\n  condition: ka.verb=create\n"
            f"  output: exec v{version} pod=%ka.target.name\n  priority: NOTICE\n  source: k8s_audit\n")


def write_atomically(path: Path, text: str) -> None:
    """Write then rename, as an operator's deploy tool should, so that no poll sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def reloading_agent(rules: Path) -> Agent:
    agent = Agent("--json", "-r", str(rules), "-o", "sources.k8s_audit.webhook.listen=127.0.0.1:0")
    agent.read_alerts()
    return agent


def alert_until(agent: Agent, seen: list[dict[str, Any]], wanted: Any, timeout_s: float = 20,
                progress: threading.Condition | None = None) -> dict[str, Any]:
    """Collect alerts into `seen` until one satisfies `wanted`, within `timeout_s`; notify `progress` on each."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            alert = agent.alerts.get(timeout=max(0.0, deadline - time.monotonic()))
        except Empty:
            raise AssertionError(f"no such alert after {len(seen)}; stderr: {''.join(agent.stderr)}") from None
        seen.append(alert)
        if progress is not None:
            with progress:
                progress.notify_all()
        if wanted(alert):
            return alert


def test_rules_changed_20_times_under_load_evaluate_every_event_exactly_once(tmp_path: Path) -> None:
    """While events flow, 20 rules changes (file watch and SIGHUP) take effect; no event is lost or seen twice."""
    rules = tmp_path / "rules.yaml"
    write_atomically(rules, rules_text(0))
    agent = reloading_agent(rules)
    posted: list[str] = []
    seen: list[dict[str, Any]] = []
    stop = threading.Event()
    progress = threading.Condition()

    def pump(url: str) -> None:
        n = 0
        while not stop.is_set():
            if post(url, {"kind": "EventList", "items": [exec_event(i) for i in range(n, n + 3)]}) == 200:
                posted.extend(f"cart-{i}" for i in range(n, n + 3))
            n += 3
            with progress:  # keep at most ~300 events in flight, so that each rules change shows quickly
                progress.wait_for(lambda: stop.is_set() or len(posted) - len(seen) < 300, timeout=20)

    try:
        pumper = threading.Thread(target=pump, args=(agent.wait_for_log("webhook_listening")["url"],))
        pumper.start()
        try:
            for version in range(1, 21):
                write_atomically(rules, rules_text(version))
                if version % 2 == 0:
                    agent.proc.send_signal(signal.SIGHUP)
                alert_until(agent, seen, lambda a, v=version: a["rule"] == f"Exec v{v}", progress=progress)
        finally:
            stop.set()
            with progress:
                progress.notify_all()
            pumper.join(timeout=20)
    finally:
        code, _ = agent.stop()
    while not agent.alerts.empty():
        seen.append(agent.alerts.get_nowait())
    assert code == 0
    assert [a for a in seen if a["source"] != "k8s_audit"] == [], "no reload failed"
    assert len(posted) > 20 * 3
    assert sorted(a["output_fields"]["ka.target.name"] for a in seen) == sorted(posted)
    versions = [int(a["rule"].removeprefix("Exec v")) for a in seen]
    assert versions == sorted(versions), "an event was evaluated on older rules after a swap"
    assert set(range(1, 21)) <= set(versions)


def test_invalid_rules_keep_the_running_rules_and_raise_an_internal_alert(tmp_path: Path) -> None:
    """A broken rules change leaves the old rules running and prints an internal alert naming file, line and error."""
    rules = tmp_path / "rules.yaml"
    write_atomically(rules, rules_text(1))
    agent = reloading_agent(rules)
    seen: list[dict[str, Any]] = []
    try:
        url = agent.wait_for_log("webhook_listening")["url"]
        assert post(url, exec_event(0)) == 200
        alert_until(agent, seen, lambda a: a["rule"] == "Exec v1")
        write_atomically(rules, rules_text(2).replace("ka.verb=create", "ka.verb ="))
        internal = alert_until(agent, seen, lambda a: a["source"] == "internal")
        assert post(url, exec_event(1)) == 200
        after = alert_until(agent, seen, lambda a: a["source"] == "k8s_audit")
    finally:
        code, _ = agent.stop()
    assert code == 0
    assert internal["rule"] == "Falco Agent Rules Reload Failed" and internal["priority"] == "Error"
    fields = internal["output_fields"]
    assert fields["internal.file"] == str(rules) and fields["internal.line"] == 3
    assert fields["internal.code"] == "LOAD_ERR_COMPILE_CONDITION"
    assert f"{rules}:3 LOAD_ERR_COMPILE_CONDITION" in internal["output"]
    assert after["rule"] == "Exec v1" and after["output_fields"]["ka.target.name"] == "cart-1"


def test_sighup_forces_a_reload(tmp_path: Path) -> None:
    """SIGHUP reloads the rules even when no file changed, and logs the new counts."""
    rules = tmp_path / "rules.yaml"
    write_atomically(rules, rules_text(1))
    agent = reloading_agent(rules)
    try:
        agent.wait_for_log("agent_started")
        agent.proc.send_signal(signal.SIGHUP)
        reloaded = agent.wait_for_log("rules_reloaded")
    finally:
        code, _ = agent.stop()
    assert code == 0
    assert reloaded["reason"] == "signal" and reloaded["rules"] == 1 and reloaded["rules_by_source"] == {"k8s_audit": 1}
