"""CloudTrail through the running agent: S3 polling and SQS notifications against a local moto endpoint."""

from __future__ import annotations

import gzip
import json
import time
from collections import Counter
from pathlib import Path
from queue import Empty
from typing import Any

import boto3
import pytest

from agent.builtin_sources import new_engine
from sources.cloudtrail.decoder import CloudTrailDecoder
from sources.cloudtrail.objects import decode_object
from tests.support.agent_process import REPO, Agent

pytestmark = [pytest.mark.server, pytest.mark.slow]
STRATUS = REPO.parent / "shared" / "reference" / "samples" / "cloudtrail" / "stratus"
RULES = REPO / "rules" / "aws_cloudtrail.yaml"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def objects(reference: Path) -> dict[str, bytes]:
    """The Stratus samples as gzipped log files under the organisation-trail layout, by key."""
    out = {}
    for n, path in enumerate(sorted(STRATUS.glob("*.json"))):
        records = json.loads(path.read_text())
        account = records[0].get("recipientAccountId", "123456789012")
        key = (f"AWSLogs/o-test123/{account}/CloudTrail/us-east-1/2024/08/01/"
               f"{account}_CloudTrail_us-east-1_20240801T0000Z_{n:04d}.json.gz")
        out[key] = gzip.compress(json.dumps({"Records": records}).encode())
    return out


def expected_alerts(objects: dict[str, bytes]) -> Counter[tuple[str, str]]:
    """What one agent reports for these objects, computed in-process from the same rules."""
    engine = new_engine()
    assert engine.load_rules_files([RULES]).successful
    decoder = CloudTrailDecoder(hostname="test")
    found: Counter[tuple[str, str]] = Counter()
    for key, data in objects.items():
        for event in decode_object(data, name=key, decoder=decoder).events:
            found.update((a.rule, a.output) for a in engine.process(event))
    return found


def alert_keys(alerts: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter((a["rule"], a["output"].split(": ", 1)[1].split(" ", 1)[1]) for a in alerts)


def start_agent(endpoint: str, *overrides: str) -> Agent:
    options = ["-r", str(RULES), "--json", "-o", "sources.k8s_audit.enabled=false",
               "-o", f"sources.aws_cloudtrail.aws.endpoint_url={endpoint}",
               "-o", "sources.aws_cloudtrail.aws.region=us-east-1"]
    for override in overrides:
        options += ["-o", override]
    agent = Agent(*options, env=AWS_ENV)
    agent.read_alerts()
    agent.wait_for_log("agent_started")
    return agent


def clients(endpoint: str) -> tuple[Any, Any]:
    kwargs = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "testing",
              "aws_secret_access_key": "testing"}
    return boto3.client("s3", **kwargs), boto3.client("sqs", **kwargs)


def test_s3_bucket_alerts_and_restart_resumes(aws_endpoint: str, objects: dict[str, bytes], tmp_path: Path) -> None:
    """Objects in an organisation-layout bucket raise the expected alerts; a restarted agent reads only new ones."""
    s3, _ = clients(aws_endpoint)
    s3.create_bucket(Bucket="org-trail-e2e")
    keys = sorted(objects)
    first, later = keys[:-3], keys[-3:]
    for key in first:
        s3.put_object(Bucket="org-trail-e2e", Key=key, Body=objects[key])
    settings = ("sources.aws_cloudtrail.s3.bucket=org-trail-e2e", "sources.aws_cloudtrail.s3.poll_interval_s=0.2",
                f"sources.aws_cloudtrail.s3.checkpoint_path={tmp_path / 's3.json'}")
    expected_first = expected_alerts({k: objects[k] for k in first})
    agent = start_agent(aws_endpoint, *settings)
    try:
        got = agent.wait_for_alerts(sum(expected_first.values()), timeout_s=60)
    finally:
        assert agent.stop()[0] == 0
    assert alert_keys(got) == expected_first
    for key in later:
        s3.put_object(Bucket="org-trail-e2e", Key=key, Body=objects[key])
    expected_later = expected_alerts({k: objects[k] for k in later})
    agent = start_agent(aws_endpoint, *settings)
    try:
        got = agent.wait_for_alerts(sum(expected_later.values()), timeout_s=60)
    finally:
        assert agent.stop()[0] == 0
    assert alert_keys(got) == expected_later and agent.alerts.empty()


def test_two_agents_share_one_queue_and_a_restart_loses_nothing(aws_endpoint: str, objects: dict[str, bytes]) -> None:
    """Two agents on one SQS queue report, together, exactly what one agent would; a stop and restart loses none."""
    s3, sqs = clients(aws_endpoint)
    s3.create_bucket(Bucket="trail-sqs-e2e")
    queue_url = sqs.create_queue(QueueName="trail-e2e", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    for key, data in objects.items():
        s3.put_object(Bucket="trail-sqs-e2e", Key=key, Body=data)
        notice = {"s3Bucket": "trail-sqs-e2e", "s3ObjectKey": [key]}
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(
            {"Type": "Notification", "Message": json.dumps(notice)}))
    expected = expected_alerts(objects)
    settings = (f"sources.aws_cloudtrail.sqs.queue_url={queue_url}", "sources.aws_cloudtrail.sqs.wait_time_s=1",
                "sources.aws_cloudtrail.sqs.concurrency=2")
    first = start_agent(aws_endpoint, *settings)
    second = start_agent(aws_endpoint, *settings)
    collected: list[dict[str, Any]] = []
    try:
        collected += first.wait_for_alerts(3, timeout_s=60)
    finally:
        assert first.stop()[0] == 0  # stopped in the middle: what it had not finished is redelivered
    while not first.alerts.empty():
        collected.append(first.alerts.get())
    restarted = start_agent(aws_endpoint, *settings)
    deadline = time.monotonic() + 90
    try:
        while len(collected) < sum(expected.values()) and time.monotonic() < deadline:
            for agent in (second, restarted):
                try:
                    collected.append(agent.alerts.get(timeout=0.1))
                except Empty:
                    continue
    finally:
        for agent in (second, restarted):
            assert agent.stop()[0] == 0
    for agent in (second, restarted):
        while not agent.alerts.empty():
            collected.append(agent.alerts.get())
    assert alert_keys(collected) == expected
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
