"""A followed audit log with a checkpoint, its agent SIGKILLed while it catches up, then restarted.

README.md promises at-least-once: no audit event is lost, and each kill makes the restart evaluate again the events
of at most one batch (`BATCH_EVENTS` lines), whose alerts then appear twice. Every line here raises exactly one
alert naming its unique auditID, so the alerts file tells what was lost and what was repeated.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from sources.k8saudit.files import BATCH_EVENTS
from tests.support.agent_process import Agent
from tests.support.queue_consumer import eventually

TOTAL = 20_000
#: The alerts file sizes (in alerts) at which the agent is killed: one kill in each of the first two runs.
KILL_AT = (5_000, 12_000)
WAIT_S = 60
RULES = """
- rule: Every Audit Event
  desc: one alert per audit event, naming it
  condition: ka.verb = list
  output: audit event seen (id=%ka.auditid)
  priority: WARNING
  source: k8s_audit
"""


def audit_line(n: int) -> bytes:
    event = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": f"id-{n:06d}",
        "stage": "ResponseComplete", "requestURI": "/api/v1/namespaces/default/pods", "verb": "list",
        "user": {"username": "alice", "groups": ["system:authenticated"]}, "sourceIPs": ["10.0.0.12"],
        "objectRef": {"resource": "pods", "namespace": "default", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": "2026-11-29T10:00:00.000000Z", "stageTimestamp": "2026-11-29T10:00:00.000000Z",
    }
    return orjson.dumps(event) + b"\n"


def agent_args(tmp_path: Path, lines: int) -> tuple[str, ...]:
    """Options of an agent following `lines` audit lines in tmp_path/logs with a checkpoint, alerts to a file."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "audit.log").write_bytes(b"".join(audit_line(n) for n in range(lines)))
    (tmp_path / "rules.yaml").write_text(RULES)
    return ("-o", f"rules_files=[{tmp_path / 'rules.yaml'}]", "-o", "sources.k8s_audit.webhook.enabled=false",
            "-o", f"sources.k8s_audit.files.paths=[{logs}]",
            "-o", f"sources.k8s_audit.files.checkpoint_path={tmp_path / 'checkpoint.json'}",
            "-o", "sources.k8s_audit.files.poll_interval_s=0.05", "-o", "outputs.stdout.enabled=false",
            "-o", "outputs.file.enabled=true", "-o", f"outputs.file.path={tmp_path / 'alerts.json'}",
            "-o", "grpc.enabled=false")


def alert_count(alerts: Path) -> int:
    return alerts.read_bytes().count(b"\n") if alerts.exists() else 0


def read_alerts(alerts: Path) -> tuple[Counter[str], int]:
    """Alerts per auditID, and how many lines are no alert (torn by a kill); a last line still being written is
    left out."""
    data = alerts.read_bytes() if alerts.exists() else b""
    per_id: Counter[str] = Counter()
    torn = 0
    for line in data[:data.rfind(b"\n") + 1].splitlines():
        try:
            per_id[orjson.loads(line)["output_fields"]["ka.auditid"]] += 1
        except orjson.JSONDecodeError:
            torn += 1
    return per_id, torn


def kill_once_written(args: tuple[str, ...], alerts: Path, count: int) -> None:
    """Run the agent until the alerts file holds `count` alerts, then SIGKILL it, before it is done."""
    agent = Agent(*args)
    try:
        assert eventually(lambda: alert_count(alerts) >= count, timeout_s=WAIT_S), "".join(agent.stderr)
    finally:
        agent.proc.kill()
        agent.proc.wait()
    assert alert_count(alerts) < TOTAL, "the agent finished before the kill: nothing was tested"


def run_to_the_end(args: tuple[str, ...], alerts: Path, total: int) -> tuple[Counter[str], int]:
    """Run the agent until every auditID has its alert, stop it (SIGTERM: drain, checkpoint), read the alerts."""
    agent = Agent(*args)
    try:
        assert eventually(lambda: len(read_alerts(alerts)[0]) == total, timeout_s=WAIT_S), "events lost"
    finally:
        code, _ = agent.stop()
    assert code == 0, "".join(agent.stderr)
    return read_alerts(alerts)


@pytest.mark.slow
def test_sigkill_while_catching_up_loses_nothing_and_repeats_at_most_one_batch_per_kill(tmp_path: Path) -> None:
    args, alerts = agent_args(tmp_path, TOTAL), tmp_path / "alerts.json"
    for kill_at in KILL_AT:
        kill_once_written(args, alerts, kill_at)
    per_id, torn = run_to_the_end(args, alerts, TOTAL)
    assert len(per_id) == TOTAL
    repeated = sum(count - 1 for count in per_id.values())
    assert repeated <= len(KILL_AT) * BATCH_EVENTS, f"{repeated} alerts repeated"
    assert torn <= len(KILL_AT)


def test_an_alert_line_cut_short_by_a_kill_is_ended_before_the_next_alert(tmp_path: Path) -> None:
    """A kill can stop the write of an alert between two pages: the restarted agent ends that line first, so that
    the alert it writes next (here the same one again: its batch was not checkpointed) is a line of its own."""
    args, alerts = agent_args(tmp_path, 3), tmp_path / "alerts.json"
    cut_short = b'{"hostname":"node-1","output":"10:00:00.0'
    alerts.write_bytes(cut_short)
    per_id, torn = run_to_the_end(args, alerts, 3)
    assert per_id == {"id-000000": 1, "id-000001": 1, "id-000002": 1}
    assert torn == 1 and alerts.read_bytes().startswith(cut_short + b"\n{")
