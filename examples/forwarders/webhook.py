#!/usr/bin/env python3
"""Generic webhook forwarder: Falcosidekick-compatible JSON alerts, one POST per alert or a JSON array per batch.

The body is Falco's JSON alert (`output`, `priority`, `rule`, `time`, `output_fields`, `source`, `tags`,
`hostname`), which is what Falcosidekick's `/` endpoint takes, plus a `uuid` derived from hostname and seq (the
same alert always gets the same uuid, so a receiver can drop a copy resent after a lost answer) and, unless
`webhook.include_seq: false`, the agent's `seq`. Custom headers and TLS options come from the `http:` section.

Run: `WEBHOOK_URL=http://falcosidekick:2801/ python examples/forwarders/webhook.py --config webhook.yaml`
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from forwarder_cli import run_forwarder
from forwarder_config import ForwarderSettings
from forwarding import Outcome, Sink
from http_delivery import HttpPoster, check_reply, deliver_each

from agent.alert import Alert

__all__ = ["WebhookSettings", "WebhookSink", "alert_uuid", "main"]

_UUID_NAMESPACE = uuid.UUID("6f1c1f2e-7a4b-4c1e-9b7e-0d5a0f2b8c11")  # falco-agent webhook alerts


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """The `webhook:` section."""

    batch: bool = False  # true: one POST per batch, a JSON array; false: one POST per alert
    include_seq: bool = True
    iso8601_output: bool = False  # time prefix of `output` in ISO 8601, as Falco's time_format_iso_8601


def alert_uuid(alert: Alert) -> str:
    """The same uuid for the same alert of the same agent spool, on every resend."""
    return str(uuid.uuid5(_UUID_NAMESPACE, f"{alert.hostname}/{alert.seq}"))


class WebhookSink:
    name = "webhook"

    def __init__(self, settings: ForwarderSettings, webhook: WebhookSettings) -> None:
        self.url = settings.http.url
        self.webhook = webhook
        self._poster = HttpPoster(settings.http, timeout_s=settings.delivery.timeout_s)
        self._headers = {"Content-Type": "application/json"}

    def payload(self, alert: Alert) -> dict[str, Any]:
        body = {"uuid": alert_uuid(alert), **alert.falco_json(iso8601=self.webhook.iso8601_output)}
        if self.webhook.include_seq:
            body["seq"] = alert.seq
        return body

    def deliver(self, alerts: list[Alert]) -> Outcome:
        if self.webhook.batch:
            reply = self._poster.post(self.url, orjson.dumps([self.payload(a) for a in alerts]), headers=self._headers)
            if check_reply(reply):
                return Outcome()
            return Outcome(rejected=[(alert, reply.summary()) for alert in alerts])
        return deliver_each(alerts, lambda a: self._poster.post(self.url, orjson.dumps(self.payload(a)),
                                                                headers=self._headers))

    def close(self) -> None:
        self._poster.close()


def _build_sink(settings: ForwarderSettings, webhook: WebhookSettings) -> Sink:
    return WebhookSink(settings, webhook)


def main(argv: Sequence[str] | None = None) -> int:
    return run_forwarder(argv, name="webhook-forwarder", own_key="webhook", own_cls=WebhookSettings,
                         build_sink=_build_sink, description="Forward falco-agent alerts to an HTTP webhook.")


if __name__ == "__main__":
    sys.exit(main())
