"""An agent driven through its audit webhook: where it listens, posts to the webhook, its /healthz, and an agent
whose one rule raises an alert on every audit event, naming its auditID, so that tests count what was evaluated."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Any

from tests.support.agent_process import Agent

WAIT_S = 20.0
#: Every audit event alerts, naming its auditID. The output also renders a sub-document, as the shipped rules do
#: (`%json.value[/sourceIPs/0]`), so that what an event holds must be writable for its alert to come out.
EVERY_EVENT_RULE = """\
- rule: Every Audit Event
  desc: one alert per audit event, naming it
  condition: ka.auditid exists
  output: audit event seen (id=%ka.auditid source=%json.value[/sourceIPs/0])
  priority: WARNING
  source: k8s_audit
"""


@dataclass(frozen=True, slots=True)
class Endpoints:
    webhook: str  # the webhook's URL
    metrics: str  # the metrics server's URL without a path: /healthz and /metrics are under it


def audit_event(audit_id: str, **fields: Any) -> dict[str, Any]:
    """The smallest audit event the webhook takes (about 70 bytes), with `fields` added."""
    return {"auditID": audit_id, "stageTimestamp": "2026-11-29T10:00:00.000000Z", **fields}


def every_event_agent(folder: Path, *options: str) -> tuple[Agent, Endpoints]:
    """A started agent, webhook on 127.0.0.1:0, whose only rule is EVERY_EVENT_RULE (written into `folder`)."""
    rules = folder / "every-event.yaml"
    rules.write_text(EVERY_EVENT_RULE)
    agent = Agent("-r", str(rules), "-o", "sources.k8s_audit.webhook.listen=127.0.0.1:0", *options)
    urls = listening(agent, "webhook_listening", "metrics_listening")
    return agent, Endpoints(urls["webhook_listening"], urls["metrics_listening"].removesuffix("/metrics"))


def listening(agent: Agent, *events: str) -> dict[str, str]:
    """The URLs the agent logs with `events` (webhook_listening, metrics_listening), in whatever order they come."""
    urls: dict[str, str] = {}
    deadline = time.monotonic() + WAIT_S
    while len(urls) < len(events):
        try:
            entry = agent.logs.get(timeout=max(0.0, deadline - time.monotonic()))
        except Empty:
            raise AssertionError(f"not listening; stderr: {''.join(agent.stderr)}") from None
        if entry.get("event") in events:
            urls[entry["event"]] = entry["url"]
    return urls


def post(url: str, body: Any, *, content_type: str = "application/json",
         timeout_s: float = WAIT_S) -> tuple[int, dict[str, Any]]:
    """POST `body` (bytes as they are, anything else as JSON) to the webhook at `url`: the status and the answer,
    parsed when it is JSON, else as {"text": ...}."""
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
    try:
        conn.request("POST", "/k8s-audit", body=body if isinstance(body, bytes) else json.dumps(body),
                     headers={"Content-Type": content_type})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    is_json = response.getheader("Content-Type", "").startswith("application/json")
    return response.status, json.loads(raw) if is_json else {"text": raw.decode(errors="replace")}


def post_until_accepted(url: str, body: Any, timeout_s: float = WAIT_S) -> dict[str, Any]:
    """POST `body` again while the webhook answers 503 (its queue is full), as the API server does; the 200 answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, answer = post(url, body)
        if status != 503 or time.monotonic() > deadline:
            assert status == 200, (status, answer)
            return answer
        time.sleep(0.05)


def healthz(metrics: str) -> tuple[int, dict[str, Any]]:
    """The status (200 or 503) and answer of /healthz on the metrics server at `metrics` (its URL without a path)."""
    try:
        with urllib.request.urlopen(metrics + "/healthz", timeout=WAIT_S) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
