#!/usr/bin/env python3
"""SIEM bridge: agent alerts to Splunk HEC or Elasticsearch `_bulk`, batched, retried, resumed from a state file.

`siem.format: splunk_hec` POSTs `<url>/services/collector/event` with `Authorization: Splunk <token>` and one JSON
event per line; each event carries the alert's `seq`, so a batch resent after a lost answer can be found
(`| stats count by event.seq, host | where count > 1`). `siem.format: elasticsearch` POSTs `<url>/_bulk` NDJSON
`index` actions whose `_id` is `<hostname>-<seq>`: a resent batch overwrites the same documents instead of adding
copies. Items the bulk answer reports as failed are retried alone when the status says a retry can help (429, 5xx)
and rejected (dead-lettered) otherwise.

Run: `python examples/forwarders/siem_bridge.py --config examples/forwarders/siem-splunk.yaml`
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from forwarder_cli import run_forwarder
from forwarder_config import ForwarderSettings
from forwarding import DeliveryFailed, Outcome, Sink
from http_delivery import HttpPoster, check_reply

from agent.alert import Alert

__all__ = ["ElasticsearchSink", "SiemSettings", "SplunkHecSink", "build_sink", "main"]


@dataclass(frozen=True, slots=True)
class SiemSettings:
    """The `siem:` section."""

    format: Literal["splunk_hec", "elasticsearch"] = "splunk_hec"
    # Splunk HEC
    token: str = ""
    index: str = ""  # Splunk index, or Elasticsearch index name (default "falco")
    sourcetype: str = "falco"
    source: str = "falco-agent"
    host: str = ""  # overrides the alert's hostname
    # Elasticsearch
    username: str = ""
    password: str = ""
    api_key: str = ""
    pipeline: str = ""


def _endpoint(base: str, path: str) -> str:
    return base if base.rstrip("/").endswith(path) else base.rstrip("/") + path


class SplunkHecSink:
    """One HEC request per batch: all events are accepted or none (HEC answers for the whole request)."""

    name = "splunk_hec"

    def __init__(self, settings: ForwarderSettings, siem: SiemSettings) -> None:
        self.url = _endpoint(settings.http.url, "/services/collector/event")
        self.siem = siem
        self._poster = HttpPoster(settings.http, timeout_s=settings.delivery.timeout_s)
        self._headers = {"Authorization": f"Splunk {siem.token}", "Content-Type": "application/json"}

    def event(self, alert: Alert) -> dict[str, Any]:
        """The HEC envelope: epoch seconds with a fraction (microseconds), metadata, the Falco JSON alert + seq."""
        seconds, ns = divmod(alert.ts_ns, 1_000_000_000)
        envelope: dict[str, Any] = {
            "time": float(f"{seconds}.{ns // 1000:06d}"),
            "host": self.siem.host or alert.hostname,
            "source": self.siem.source,
            "sourcetype": self.siem.sourcetype,
            "event": {**alert.falco_json(), "seq": alert.seq},
        }
        if self.siem.index:
            envelope["index"] = self.siem.index
        return envelope

    def deliver(self, alerts: list[Alert]) -> Outcome:
        body = b"\n".join(orjson.dumps(self.event(alert)) for alert in alerts)
        reply = self._poster.post(self.url, body, headers=self._headers)
        if check_reply(reply):
            return Outcome()
        # HEC indexes a batch in order and stops at the first invalid event, naming it: the events before it were
        # indexed, it is refused for good, and the ones after it were never looked at, so they are retried.
        try:
            bad = int(orjson.loads(reply.body)["invalid-event-number"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            bad = -1
        if 0 <= bad < len(alerts):
            return Outcome(rejected=[(alerts[bad], reply.summary())], retry=alerts[bad + 1:],
                           reason="events after an invalid one")
        return Outcome(rejected=[(alert, reply.summary()) for alert in alerts])

    def close(self) -> None:
        self._poster.close()


class ElasticsearchSink:
    """One `_bulk` request per batch; the answer's per-item statuses decide what is retried or rejected."""

    name = "elasticsearch"

    def __init__(self, settings: ForwarderSettings, siem: SiemSettings) -> None:
        self.url = _endpoint(settings.http.url, "/_bulk")
        if siem.pipeline:
            self.url += f"?pipeline={siem.pipeline}"
        self.index = siem.index or "falco"
        self._poster = HttpPoster(settings.http, timeout_s=settings.delivery.timeout_s)
        self._headers = {"Content-Type": "application/x-ndjson"}
        if siem.api_key:
            self._headers["Authorization"] = f"ApiKey {siem.api_key}"
        elif siem.username:
            token = base64.b64encode(f"{siem.username}:{siem.password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"

    @staticmethod
    def document_id(alert: Alert) -> str:
        """Stable per alert, so a resent alert overwrites its earlier copy."""
        return f"{alert.hostname or 'unknown'}-{alert.seq}"

    def body(self, alerts: list[Alert]) -> bytes:
        lines = []
        for alert in alerts:
            document = {**alert.falco_json(), "seq": alert.seq}
            document["@timestamp"] = document["time"]
            lines.append(orjson.dumps({"index": {"_index": self.index, "_id": self.document_id(alert)}}))
            lines.append(orjson.dumps(document))
        return b"\n".join(lines) + b"\n"  # the bulk API wants the last line terminated too

    def deliver(self, alerts: list[Alert]) -> Outcome:
        reply = self._poster.post(self.url, self.body(alerts), headers=self._headers)
        if not check_reply(reply):
            return Outcome(rejected=[(alert, reply.summary()) for alert in alerts])
        try:
            answer = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            raise DeliveryFailed(f"unreadable bulk answer: {reply.summary()}") from None
        if not answer.get("errors"):
            return Outcome()
        items = answer.get("items") or []
        if len(items) != len(alerts):
            raise DeliveryFailed(f"bulk answer has {len(items)} items for {len(alerts)} actions")
        outcome = Outcome()
        for alert, item in zip(alerts, items, strict=True):
            result: dict[str, Any] = next(iter(item.values()), {})
            status = int(result.get("status", 500))
            if 200 <= status < 300:
                continue
            error = result.get("error") or {}
            reason = f"{status} {error.get('type', '')}: {error.get('reason', '')}".strip()
            if status == 429 or status >= 500:
                outcome.retry.append(alert)
                outcome.reason = reason
            else:
                outcome.rejected.append((alert, reason))
        return outcome

    def close(self) -> None:
        self._poster.close()


def build_sink(settings: ForwarderSettings, siem: SiemSettings) -> Sink:
    if siem.format == "elasticsearch":
        return ElasticsearchSink(settings, siem)
    return SplunkHecSink(settings, siem)


def main(argv: Sequence[str] | None = None) -> int:
    return run_forwarder(argv, name="siem-bridge", own_key="siem", own_cls=SiemSettings, build_sink=build_sink,
                         description="Forward falco-agent alerts to Splunk HEC or Elasticsearch.")


if __name__ == "__main__":
    sys.exit(main())
