"""Issue 13, case 1: event times Falco's clock cannot hold must not kill the agent nor loop it on a checkpoint.

Falco keeps an event's time as uint64 nanoseconds since the epoch (1970-01-01 to 2554-07-21). A stageTimestamp of
9999-12-31T23:59:59.999999Z made the JSON outputs raise `Integer exceeds 64-bit range`, 0001-01-01T00:00:00Z made the
text output raise `year 0 is out of range`, and the agent exited 1; a CloudTrail file or a followed audit log holding
such a record killed every restart, as the checkpoint never passed it. Each test reproduces one path of the report.
"""

from __future__ import annotations

import io
import json
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.alert import Alert
from agent.builtin_sources import new_engine
from agent.engine.engine import Engine
from agent.event import Event
from agent.event_queue import EventQueue
from agent.generic_fields import generic_fields
from agent.grpc.server import AlertServer
from agent.outputs.stdout import StdoutOutput
from agent.priority import Priority
from agent.runtime import AgentRuntime
from sources.k8saudit.decoder import K8sAuditDecoder
from tests.agent.test_runtime import exec_event
from tests.support.agent_process import REPO, Agent
from tests.support.webhook_agent import post

WAIT_S = 20.0
FAR_FUTURE = "9999-12-31T23:59:59.999999Z"
YEAR_ONE = "0001-01-01T00:00:00Z"
RANGE = "(1970-01-01T00:00:00Z to 2554-07-21T23:34:33.709551615Z)"
EXEC_RULE = "Interactive Session Opened In Pod"


def audit_event(n: int, stamp: str | None = None) -> dict[str, Any]:
    """kubectl exec into pod cart-<n>, which the shipped rules report; at `stamp` when given."""
    event = exec_event(n)
    if stamp is not None:
        event["stageTimestamp"] = stamp
    return event


def ct_record(user: str, event_time: str = "2024-08-01T13:33:28Z") -> dict[str, Any]:
    """An IAM CreateUser call, which the shipped CloudTrail rules report naming the new user."""
    return {"eventVersion": "1.08", "eventTime": event_time, "eventType": "AwsApiCall",
            "eventSource": "iam.amazonaws.com", "eventName": "CreateUser", "awsRegion": "us-east-1",
            "sourceIPAddress": "192.0.2.7", "userAgent": "aws-cli/2.15",
            "userIdentity": {"type": "IAMUser", "userName": "mallory", "accountId": "123456789012",
                             "arn": "arn:aws:iam::123456789012:user/mallory"},
            "requestParameters": {"userName": user}}


def post_batch(url: str, items: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    """POST an EventList to the webhook; the status and the JSON answer."""
    return post(url, {"kind": "EventList", "items": items})


def refused(stamp: str, index: int) -> str:
    return f"webhook from 127.0.0.1 record '{index}': stageTimestamp '{stamp}' is outside the event times Falco can " \
           f"hold {RANGE}"


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_webhook_events_falco_cannot_time_are_refused_and_the_agent_stays_up(as_json: bool) -> None:
    """Good events around 9999 and year-1 ones all alert; the bad ones are refused naming the field, the agent lives.

    Before the fix the batch holding the bad events was answered 200, the output raised and the agent exited 1:
    that batch's good event and every later one were lost."""
    agent = Agent("-o", "sources.k8s_audit.webhook.listen=127.0.0.1:0", *(["--json"] if as_json else []))
    try:
        url = agent.wait_for_log("webhook_listening")["url"]
        assert post_batch(url, [audit_event(1)])[0] == 200
        status, answer = post_batch(url, [audit_event(2, FAR_FUTURE), audit_event(3), audit_event(4, YEAR_ONE)])
        assert (status, answer["accepted"], answer["rejected_count"]) == (200, 1, 2)
        assert answer["rejected"] == [refused(FAR_FUTURE, 0), refused(YEAR_ONE, 2)]
        status, answer = post_batch(url, [audit_event(5, FAR_FUTURE)])
        assert status == 400 and answer["rejected"] == [refused(FAR_FUTURE, 0)]
        assert post_batch(url, [audit_event(6)])[0] == 200
        assert agent.proc.poll() is None, "the agent died"
    finally:
        code, out = agent.stop()
    assert code == 0, "".join(agent.stderr)
    lines = out.splitlines()
    if as_json:
        alerts = [json.loads(line) for line in lines]
        assert [(a["rule"], a["output_fields"]["ka.target.name"]) for a in alerts] == [
            (EXEC_RULE, f"cart-{n}") for n in (1, 3, 6)]
    else:
        assert len(lines) == 3
        for line, n in zip(lines, (1, 3, 6), strict=True):
            assert ": Notice Interactive session into pod " in line and f"pod=shop/cart-{n} " in line


def ct_agent(trails: Path, checkpoint: Path) -> Agent:
    agent = Agent("--json", "-o", "sources.k8s_audit.webhook.enabled=false",
                  "-o", f"sources.aws_cloudtrail.directory.paths=[{trails}]",
                  "-o", f"sources.aws_cloudtrail.directory.checkpoint_path={checkpoint}",
                  "-o", "sources.aws_cloudtrail.directory.poll_interval_s=0.1")
    agent.read_alerts()
    return agent


def new_users(alerts: list[dict[str, Any]]) -> list[str]:
    return [a["output_fields"]["ct.request.username"] for a in alerts]


@pytest.mark.server
@pytest.mark.slow
def test_cloudtrail_file_with_a_9999_record_is_passed_and_a_restart_does_not_loop(tmp_path: Path) -> None:
    """The 9999 record is skipped and reported, the rest of its file and the next file alert; after a restart
    the checkpoint has moved past both files and a new one is read. Before the fix every start died on it."""
    trails = tmp_path / "trails"
    trails.mkdir()
    checkpoint = tmp_path / "cloudtrail.json"
    (trails / "trail_0001.json").write_text(json.dumps(
        {"Records": [ct_record("alpha"), ct_record("ghost", "9999-12-31T23:59:59Z")]}))
    (trails / "trail_0002.json").write_text(json.dumps({"Records": [ct_record("bravo")]}))

    agent = ct_agent(trails, checkpoint)
    try:
        skipped = agent.wait_for_log("cloudtrail_records_skipped")
        first = agent.wait_for_alerts(2)
    finally:
        code, _ = agent.stop()
    assert code == 0, "".join(agent.stderr)
    assert sorted(new_users(first)) == ["alpha", "bravo"] and agent.alerts.empty()
    assert (skipped["object"], skipped["count"], skipped["first_record"]) == (str(trails / "trail_0001.json"), 1, "1")
    assert skipped["reason"] == f"CloudTrail record eventTime '9999-12-31T23:59:59Z' is outside the event times " \
                                f"Falco can hold {RANGE}"

    restarted = ct_agent(trails, checkpoint)
    try:
        restarted.wait_for_log("agent_started")
        (trails / "trail_0003.json").write_text(json.dumps({"Records": [ct_record("charlie")]}))
        later = restarted.wait_for_alerts(1)
    finally:
        code, _ = restarted.stop()
    assert code == 0, "".join(restarted.stderr)
    assert new_users(later) == ["charlie"] and restarted.alerts.empty(), "a file was read again"
    assert "cloudtrail_records_skipped" not in "".join(restarted.stderr)


def audit_files_agent(logs: Path, checkpoint: Path) -> Agent:
    agent = Agent("--json", "-o", "sources.k8s_audit.webhook.enabled=false",
                  "-o", f"sources.k8s_audit.files.paths=[{logs}]",
                  "-o", f"sources.k8s_audit.files.checkpoint_path={checkpoint}",
                  "-o", "sources.k8s_audit.files.poll_interval_s=0.05")
    agent.read_alerts()
    return agent


def write_lines(path: Path, events: list[dict[str, Any]]) -> None:
    with path.open("a") as handle:
        for event in events:
            handle.write(json.dumps(event) + "\n")


def pods(alerts: list[dict[str, Any]]) -> list[str]:
    return [a["output_fields"]["ka.target.name"] for a in alerts]


@pytest.mark.server
@pytest.mark.slow
def test_followed_audit_log_line_falco_cannot_time_is_passed_and_a_restart_reads_on(tmp_path: Path) -> None:
    """Bad-time lines between good ones are rejected with their line and reason; the checkpoint passes them, so a
    restart neither dies on them nor reads anything twice, and lines written later are read."""
    logs = tmp_path / "audit"
    logs.mkdir()
    live = logs / "audit.log"
    checkpoint = tmp_path / "audit-checkpoint.json"
    write_lines(live, [audit_event(1), audit_event(2, FAR_FUTURE), audit_event(3), audit_event(4, YEAR_ONE),
                       audit_event(5)])

    agent = audit_files_agent(logs, checkpoint)
    try:
        rejections = [agent.wait_for_log("audit_line_rejected") for _ in range(2)]
        first = agent.wait_for_alerts(3)
    finally:
        code, _ = agent.stop()
    assert code == 0, "".join(agent.stderr)
    assert pods(first) == ["cart-1", "cart-3", "cart-5"] and agent.alerts.empty()
    assert [(r["line"], r["reason"]) for r in rejections] == [(2, "time_out_of_range"), (4, "time_out_of_range")]
    assert rejections[0]["detail"] == f"stageTimestamp '{FAR_FUTURE}' is outside the event times Falco can hold {RANGE}"

    write_lines(live, [audit_event(6)])
    restarted = audit_files_agent(logs, checkpoint)
    try:
        later = restarted.wait_for_alerts(1)
    finally:
        code, _ = restarted.stop()
    assert code == 0, "".join(restarted.stderr)
    assert pods(later) == ["cart-6"] and restarted.alerts.empty(), "a line was read again"
    assert "audit_line_rejected" not in "".join(restarted.stderr)


def replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", "replay", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def logged(stderr: str, event: str) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [entry for entry in entries if entry["event"] == event]


@pytest.mark.parametrize("text", [False, True], ids=["json", "text"])
def test_replay_reports_the_records_it_skips_and_alerts_on_the_others(tmp_path: Path, text: bool) -> None:
    """`replay` of an audit log and a CloudTrail file with out-of-range times: exit 0, every good record alerts,
    each bad one is reported naming the file, line or record, the field and the value."""
    audit_log = tmp_path / "audit.log"
    write_lines(audit_log, [audit_event(1), audit_event(2, FAR_FUTURE), audit_event(3, YEAR_ONE), audit_event(4)])
    trail = tmp_path / "trail.json"
    trail.write_text(json.dumps({"Records": [ct_record("ghost", "9999-12-31T23:59:59Z"), ct_record("alpha")]}))

    done = replay("-r", "rules/k8s_audit.yaml", "-r", "rules/aws_cloudtrail.yaml", *(["--text"] if text else []),
                  str(audit_log), str(trail))

    assert done.returncode == 0, done.stderr
    assert "replay: 3 events, 3 alerts, 3 records skipped" in done.stderr
    skipped = [(entry["where"], entry["reason"]) for entry in logged(done.stderr, "record_skipped")]
    outside = f"is outside the event times Falco can hold {RANGE}"
    assert skipped == [
        (f"{audit_log}:2 record '0'", f"stageTimestamp '{FAR_FUTURE}' {outside}"),
        (f"{audit_log}:3 record '0'", f"stageTimestamp '{YEAR_ONE}' {outside}"),
        (f"{trail} record '0'", f"CloudTrail record eventTime '9999-12-31T23:59:59Z' {outside}"),
    ]
    lines = done.stdout.splitlines()
    if text:
        needles = ("pod=shop/cart-1 ", "pod=shop/cart-4 ", "new_user=alpha ")
        assert len(lines) == 3 and all(needle in line for line, needle in zip(lines, needles, strict=True)), lines
    else:
        alerts = [json.loads(line) for line in lines]
        assert [a["output_fields"].get("ka.target.name") or a["output_fields"]["ct.request.username"]
                for a in alerts] == ["cart-1", "cart-4", "alpha"]


YEAR_9999_NS = 253_402_300_799_999_999_000
YEAR_ONE_NS = -62_135_596_800_000_000_000


def exec_alert(n: int, ts_ns: int, code: int = 101) -> Alert:
    return Alert(rule=EXEC_RULE, priority=Priority.NOTICE, source="k8s_audit", ts_ns=ts_ns,
                 output=f"pod=shop/cart-{n}", hostname="node-1",
                 output_fields={"ka.target.name": f"cart-{n}", "ka.response.code": code})


@pytest.fixture
def serving_foreign_alerts(tmp_path: Path) -> Iterator[AlertServer]:
    """A real alert server on 127.0.0.1 holding good alerts around a 9999 one and a year-1 one: what a subscriber
    receives from an agent that let such times through (before the fix, or another build)."""
    server = AlertServer(spool_dir=tmp_path / "spool", address="127.0.0.1:0", allow_insecure_tcp=True)
    server.start()
    try:
        for alert in (exec_alert(1, 1_780_000_000_000_000_000), exec_alert(9, YEAR_9999_NS, code=2**64),
                      exec_alert(8, YEAR_ONE_NS), exec_alert(2, 1_780_000_000_000_000_001)):
            server.output.emit(alert)
        yield server
    finally:
        server.stop(grace_s=0.5)


def tail_lines(server: AlertServer, count: int, *args: str) -> list[str]:
    """The first `count` stdout lines of `falco-agent tail` against the server; it is then interrupted."""
    target = server.tcp_target
    assert target is not None
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "tail", "--address", target, "--resume-from", "0",
                             *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def read() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    got: list[str] = []
    try:
        for _ in range(count):
            try:
                got.append(lines.get(timeout=WAIT_S))
            except queue.Empty:
                raise AssertionError(f"tail printed {got}; exit {proc.poll()}") from None
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, stderr = proc.communicate(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
    assert proc.returncode == 0, stderr
    return got


@pytest.mark.server
def test_tail_json_prints_alerts_whose_time_is_outside_64_bits(serving_foreign_alerts: AlertServer) -> None:
    """`tail --json` writes the 9999 and year-1 alerts with exact times, wide integers as digits, and goes on."""
    alerts = [json.loads(line) for line in tail_lines(serving_foreign_alerts, 4, "--json")]
    assert [a["output_fields"]["ka.target.name"] for a in alerts] == ["cart-1", "cart-9", "cart-8", "cart-2"]
    far, early = alerts[1], alerts[2]
    assert (far["time"], far["output_fields"]["evt.time"]) == ("9999-12-31T23:59:59.999999000Z", str(YEAR_9999_NS))
    assert far["output_fields"]["ka.response.code"] == str(2**64) and far["seq"] == 2
    assert (early["time"], early["output_fields"]["evt.time"]) == ("0001-01-01T00:00:00.000000000Z", str(YEAR_ONE_NS))


@pytest.mark.server
def test_tail_text_prints_alerts_whose_time_is_outside_64_bits(serving_foreign_alerts: AlertServer) -> None:
    """`tail` text lines go on past the year-1 alert, whose local time (year 0) is printed as its nanoseconds."""
    lines = [line.rstrip() for line in tail_lines(serving_foreign_alerts, 4)]
    assert [line.rsplit(" ", 1)[1] for line in lines] == [f"pod=shop/cart-{n}" for n in (1, 9, 8, 2)]
    assert lines[2] == f"{YEAR_ONE_NS}: Notice pod=shop/cart-8"


def exec_rule_engine() -> Engine:
    engine = new_engine(hostname="node-1")
    assert engine.load_rules_files([REPO / "rules" / "k8s_audit.yaml"]).successful
    return engine


def decoded(n: int) -> Event:
    [event] = K8sAuditDecoder(hostname="node-1").events(audit_event(n), origin="test")
    assert isinstance(event, Event)
    return event


@pytest.mark.server
def test_an_alert_one_output_cannot_take_is_reported_and_skipped_not_fatal(tmp_path: Path) -> None:
    """An alert the gRPC output refuses (its time is past the wire's int64 seconds) is logged naming the rule and
    output, and skipped there only: the other output gets every alert and the batch is still acknowledged."""
    unreachable = decoded(2)
    unreachable.ts_ns = 10**30  # no decoder yields it; it stands for any alert an output cannot take
    server = AlertServer(spool_dir=tmp_path / "spool", address="127.0.0.1:0", allow_insecure_tcp=True)
    server.start()
    stream = io.BytesIO()
    acknowledged = threading.Event()
    try:
        runtime = AgentRuntime(exec_rule_engine(), [], [server.output, StdoutOutput(as_json=True, iso8601=False,
                                                                                     stream=stream)], EventQueue(10))
        runtime.queue.put([decoded(1), unreachable, decoded(3)], on_done=acknowledged.set)
        runtime.request_stop()  # the queued batch is evaluated in the drain
        with capture_logs() as logs:
            runtime.run()
    finally:
        server.stop(grace_s=0.5)
    failures = [entry for entry in logs if entry["event"] == "alert_output_failed"]
    assert [(f["rule"], f["output"], f["log_level"]) for f in failures] == [(EXEC_RULE, "grpc", "error")]
    assert "Value out of range" in failures[0]["error"]
    assert [json.loads(line)["output_fields"]["ka.target.name"] for line in stream.getvalue().splitlines()] == [
        "cart-1", "cart-2", "cart-3"]
    assert server.output.fanout.published == 2 and acknowledged.is_set()


@pytest.mark.parametrize(("ts_ns", "iso8601"), [
    (2**64 - 1, "2554-07-21T23:34:33.709551615+0000"),
    (YEAR_9999_NS, "9999-12-31T23:59:59.999999000+0000"),
    (YEAR_ONE_NS, "0001-01-01T00:00:00.000000000+0000"),
    (-(10**30), str(-(10**30))),
])
def test_every_generic_time_field_extracts_for_any_event_time(ts_ns: int, iso8601: str) -> None:
    """Decoders refuse such times, but a crafted kernel capture replays unchecked: its `evt.*` time fields still
    extract, as calendar text where the calendar reaches, else as the nanoseconds."""
    event = Event(source="k8s_audit", ts_ns=ts_ns, payload={})
    values = {spec.name: spec.bind_uncached(None)(event) for spec in generic_fields() if spec.name.startswith("evt.")}
    assert values["evt.time.iso8601"] == iso8601 and values["evt.rawtime"] == ts_ns
    if iso8601 == str(ts_ns):
        assert values["evt.time"] == values["evt.datetime"] == values["evt.time.s"] == str(ts_ns)
