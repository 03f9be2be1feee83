"""Tests for the k8saudit-eks plugin (sources/k8saudit/eks.py): a real moto CloudWatch Logs endpoint in server mode,
Falco's k8s audit regression traces as the log events, k8s_audit batches out, each event once."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from botocore.exceptions import ClientError
from structlog.testing import capture_logs

from agent.builtin_sources import new_engine
from agent.event import Event
from agent.event_queue import EventQueue
from sources.cloudtrail.aws import AwsSettings, backoff_s
from sources.k8saudit.decoder import K8sAuditDecoder
from sources.k8saudit.eks import EksAuditLogs, logs_client
from sources.k8saudit.eks_logs import STREAM_PREFIX, log_group
from tests.support.agent_process import Agent
from tests.support.queue_consumer import eventually, running

pytestmark = [pytest.mark.server, pytest.mark.timeout(60)]

REFERENCE = Path(__file__).resolve().parents[3].parent / "shared" / "reference"
TRACES = REFERENCE / "samples" / "k8s_audit" / "falco-regression"
RULES = REFERENCE / "rules" / "k8s_audit_rules.yaml"
STREAMS = (f"{STREAM_PREFIX}-6f1e0c", f"{STREAM_PREFIX}-9a2b4d")
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def audit_id(event: Event) -> str:
    return str(event.payload["auditID"])


@pytest.fixture(scope="module")
def messages() -> list[str]:
    """One audit event per message, unique auditIDs: the lines of Falco's k8s audit regression traces that decode."""
    if not TRACES.is_dir() or not RULES.is_file():
        pytest.skip(f"reference samples missing: {TRACES}")
    decoder = K8sAuditDecoder()
    found: dict[str, str] = {}
    for path in sorted(path for path in TRACES.glob("*.json") if not path.name.startswith("expected")):
        for line in path.read_text().splitlines():
            document = orjson.loads(line) if line.strip() else None
            if isinstance(document, dict) and "auditID" in document and all(
                    isinstance(item, Event) for item in decoder.events(document, origin=path.name)):
                found.setdefault(document["auditID"], line)
    return list(found.values())


@pytest.fixture()
def logs(aws_endpoint: str) -> Any:
    return boto3.client("logs", endpoint_url=aws_endpoint, region_name="us-east-1")


@pytest.fixture()
def cluster(logs: Any) -> str:
    """A cluster's log group with two apiserver audit streams and one other stream."""
    name = f"eks-{uuid.uuid4().hex[:12]}"
    group = log_group(name)
    logs.create_log_group(logGroupName=group)
    for stream in (*STREAMS, "authenticator-0a1b2c"):
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    return name


def put(logs: Any, cluster: str, stream: str, messages: list[str]) -> None:
    """Write messages to a stream, one log event each, a millisecond apart, the last one now."""
    now_ms = int(time.time() * 1000)
    events = [{"timestamp": now_ms - len(messages) + n, "message": message} for n, message in enumerate(messages)]
    logs.put_log_events(logGroupName=log_group(cluster), logStreamName=stream, logEvents=events)


def source(aws_endpoint: str, cluster: str, tmp_path: Path, **options: Any) -> EksAuditLogs:
    settings = {"buffer_size": 7, "polling_interval_s": 0.05, "shift_s": 3600.0,
                "checkpoint_path": tmp_path / "eks.checkpoint.json", "backoff": lambda failures: 0.01, **options}
    return EksAuditLogs(cluster=cluster, aws=AwsSettings(region="us-east-1", endpoint_url=aws_endpoint),
                        hostname="test", **settings)


def audit_ids(messages: list[str]) -> list[str]:
    return [orjson.loads(message)["auditID"] for message in messages]


def test_upstream_k8s_audit_rules_alert_on_events_read_page_by_page(
        aws_endpoint: str, logs: Any, cluster: str, messages: list[str], tmp_path: Path) -> None:
    """Every audit event of both streams reaches a real engine once, in pages of buffer_size, and raises the alerts
    the upstream rules raise on the same events decoded directly; the other stream is not read."""
    half = len(messages) // 2
    put(logs, cluster, STREAMS[0], messages[:half])
    put(logs, cluster, STREAMS[1], messages[half:])
    put(logs, cluster, "authenticator-0a1b2c", ['{"kind": "Event", "auditID": "not-audit"}'])
    engine = new_engine()
    assert engine.load_rules_files([RULES]).successful
    expected: Counter[tuple[str, str]] = Counter()
    decoder = K8sAuditDecoder(hostname="test")
    for message in messages:
        for event in decoder.events(orjson.loads(message), origin="trace"):
            assert isinstance(event, Event)
            expected.update((alert.rule, audit_id(event)) for alert in engine.process(event))
    assert len(expected) > 30

    queue = EventQueue(10_000)
    seen: Counter[str] = Counter()
    raised: Counter[tuple[str, str]] = Counter()
    stopping = threading.Event()

    def evaluate() -> None:  # the runtime's part: evaluate each batch, then acknowledge it
        while not stopping.is_set():
            batch = queue.get(timeout_s=0.02)
            if batch is None:
                continue
            for event in batch.events:
                seen[audit_id(event)] += 1
                raised.update((alert.rule, audit_id(event)) for alert in engine.process(event))
            if batch.on_done is not None:
                batch.on_done()

    consumer = threading.Thread(target=evaluate, daemon=True)
    consumer.start()
    eks = source(aws_endpoint, cluster, tmp_path)
    eks.start(queue)
    try:
        assert eventually(lambda: sum(seen.values()) >= len(messages))
        time.sleep(0.3)  # a few more polls: nothing comes twice
    finally:
        eks.stop()
        stopping.set()
        consumer.join(5)
    assert seen == Counter(audit_ids(messages))
    assert raised == expected
    metrics = eks.metrics()
    assert metrics["pages"] >= len(messages) // 7
    assert metrics["log_events_read"] == len(messages) and metrics["events"] == len(messages)
    assert metrics["streams"] == 2 and metrics["checkpoint_writes"] >= 1
    assert eks.failure() is None


def test_a_restart_reads_only_new_events(aws_endpoint: str, logs: Any, cluster: str, messages: list[str],
                                         tmp_path: Path) -> None:
    first, later = messages[:20], messages[20:30]
    put(logs, cluster, STREAMS[0], first)
    with running(source(aws_endpoint, cluster, tmp_path), id_of=audit_id) as consumer:
        assert sorted(consumer.wait_for(len(first))) == sorted(audit_ids(first))
    put(logs, cluster, STREAMS[0], later[:5])
    put(logs, cluster, STREAMS[1], later[5:])
    with running(source(aws_endpoint, cluster, tmp_path), id_of=audit_id) as consumer:
        assert sorted(consumer.wait_for(len(later))) == sorted(audit_ids(later))
        time.sleep(0.3)
        assert len(consumer.event_ids) == len(later)


def test_a_batch_not_acknowledged_is_read_again_and_no_acknowledged_one(
        aws_endpoint: str, logs: Any, cluster: str, messages: list[str], tmp_path: Path) -> None:
    """The engine evaluates one batch and dies with the others queued: the restart reads exactly those."""
    batch = messages[:25]
    put(logs, cluster, STREAMS[0], batch)
    with running(source(aws_endpoint, cluster, tmp_path, buffer_size=5), id_of=audit_id,
                 ack_limit=1) as consumer:
        assert consumer.wait_acked(1)
        acknowledged = list(consumer.event_ids)
    assert len(acknowledged) == 5
    with running(source(aws_endpoint, cluster, tmp_path, buffer_size=5), id_of=audit_id) as consumer:
        again = consumer.wait_for(len(batch) - 5)
        time.sleep(0.3)
        assert len(consumer.event_ids) == len(batch) - 5
    assert sorted(acknowledged + again) == sorted(audit_ids(batch))


def test_a_malformed_message_is_skipped_counted_and_named(aws_endpoint: str, logs: Any, cluster: str,
                                                         messages: list[str], tmp_path: Path) -> None:
    good = messages[:4]
    bad = ['{"kind": "Event", "auditID": "cut-', '{"kind": "Event", "auditID": "big"' + " [Truncated...]",
           '{"kind": "Event", "auditID": "no-time"}', '["not", "an", "event"]']
    put(logs, cluster, STREAMS[0], [good[0], bad[0], good[1], bad[1], bad[2], good[2], bad[3], good[3]])
    eks = source(aws_endpoint, cluster, tmp_path)
    with capture_logs() as captured, running(eks, id_of=audit_id) as consumer:
        assert sorted(consumer.wait_for(len(good))) == sorted(audit_ids(good))
        assert eventually(lambda: eks.metrics()["log_events_read"] == len(good) + len(bad))
    metrics = eks.metrics()
    reasons = ("invalid_json", "truncated", "missing_stage_timestamp", "not_audit_event")
    assert [metrics[f"rejected_{reason}"] for reason in reasons] == [1, 1, 1, 1]
    assert eks.failure() is None
    rejected = [entry for entry in captured if entry["event"] == "eks_audit_event_rejected"]
    assert len(rejected) == 4
    assert all(entry["stream"] == STREAMS[0] and entry["event_id"] for entry in rejected)
    with running(source(aws_endpoint, cluster, tmp_path), id_of=audit_id) as consumer:  # skipped, and remembered
        time.sleep(0.3)
        assert consumer.event_ids == []


class Throttled:
    """The real CloudWatch Logs client, but the FilterLogEvents calls numbered in `refuse` fail as AWS fails a call
    over its rate once botocore's retries gave up: moto never throttles, so the refusal is injected at the client's
    call boundary as the ClientError botocore raises."""

    def __init__(self, client: Any, refuse: set[int]) -> None:
        self._client = client
        self._refuse = refuse
        self.calls = 0

    def filter_log_events(self, **request: Any) -> Any:
        self.calls += 1
        if self.calls in self._refuse:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}},
                              "FilterLogEvents")
        return self._client.filter_log_events(**request)


def test_throttling_backs_off_and_resumes_without_loss_or_repeat(aws_endpoint: str, logs: Any, cluster: str,
                                                                messages: list[str], tmp_path: Path) -> None:
    batch = messages[:20]
    put(logs, cluster, STREAMS[0], batch)
    clients: list[Throttled] = []

    def connect(aws: AwsSettings) -> Throttled:
        clients.append(Throttled(logs_client(aws), refuse={1, 3, 4}))  # the first call, then mid-pagination twice
        return clients[-1]

    waits: list[int] = []

    def backoff(failures: int) -> float:
        waits.append(failures)
        return 0.01

    eks = source(aws_endpoint, cluster, tmp_path, buffer_size=5, connect=connect, backoff=backoff)
    with capture_logs() as captured, running(eks, id_of=audit_id) as consumer:
        assert sorted(consumer.wait_for(len(batch))) == sorted(audit_ids(batch))
        time.sleep(0.3)
        assert len(consumer.event_ids) == len(batch)
    assert waits == [1, 2, 3]  # the run of failures goes on until a poll reads through its last page
    assert (eks.metrics()["throttled"], eks.metrics()["aws_errors"]) == (3, 3)
    failed = [entry for entry in captured if entry["event"] == "aws_call_failed"]
    assert [entry["error"] for entry in failed] == ["ThrottlingException: Rate exceeded"] * 3
    assert eks.failure() is None


def test_the_backoff_grows_is_capped_and_jittered() -> None:
    for failures in range(1, 12):
        ceiling = min(30.0, 0.5 * 2 ** (failures - 1))
        delays = [backoff_s(failures) for _ in range(50)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(set(delays)) > 1


def test_a_missing_log_group_is_retried_until_it_exists(aws_endpoint: str, logs: Any, messages: list[str],
                                                        tmp_path: Path) -> None:
    """Audit logging not enabled yet: the input keeps trying, and reads the log once it appears."""
    name = f"eks-{uuid.uuid4().hex[:12]}"
    eks = source(aws_endpoint, name, tmp_path)
    with running(eks, id_of=audit_id) as consumer:
        assert eventually(lambda: eks.metrics()["aws_errors"] >= 2)
        logs.create_log_group(logGroupName=log_group(name))
        logs.create_log_stream(logGroupName=log_group(name), logStreamName=STREAMS[0])
        put(logs, name, STREAMS[0], messages[:3])
        assert sorted(consumer.wait_for(3)) == sorted(audit_ids(messages[:3]))
    assert eks.metrics()["throttled"] == 0


@pytest.fixture()
def agent_config(aws_endpoint: str, cluster: str, tmp_path: Path) -> Iterator[Path]:
    config = tmp_path / "agent.yaml"
    config.write_text(f"""\
plugins:
  - name: k8saudit-eks
    library_path: k8saudit-eks
    init_config:
      region: us-east-1
      endpoint_url: {aws_endpoint}
      polling_interval: 0.2
      shift: 3600
      checkpoint_path: {tmp_path / "state" / "eks.json"}
    open_params: {cluster}
load_plugins: [k8saudit-eks]
""")
    yield config


@pytest.mark.slow
def test_the_agent_raises_upstream_k8s_alerts_from_cloudwatch(logs: Any, cluster: str, messages: list[str],
                                                              agent_config: Path) -> None:
    privileged = (TRACES / "create_nginx_pod_privileged.json").read_text().strip()
    exec_pod = (TRACES / "exec_pod.json").read_text().strip()
    put(logs, cluster, STREAMS[0], [privileged, exec_pod])
    agent = Agent("-c", str(agent_config), "-r", str(RULES), "--json", "-o", "sources.k8s_audit.webhook.enabled=false",
                  "-o", "sources.aws_cloudtrail.enabled=false", env=AWS_ENV)
    agent.read_alerts()
    try:
        alerts = agent.wait_for_alerts(2)
    finally:
        code, _ = agent.stop()
    assert code == 0
    assert {alert["rule"] for alert in alerts} == {"Create Privileged Pod", "Attach/Exec Pod"}
    assert {alert["source"] for alert in alerts} == {"k8s_audit"}

