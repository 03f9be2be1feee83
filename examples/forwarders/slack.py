#!/usr/bin/env python3
"""Slack forwarder: one incoming-webhook message per alert, coloured by priority, resumed from a state file.

Each message has one attachment: the rule as title, the output as text, and priority, source, hostname, time,
tags and a few output fields as short fields. Slack answers 429 with `Retry-After` when rate limiting; the
forwarder waits that long before trying again. Messages are posted in seq order and a batch stops at the first
failure, so a retry never re-posts a message Slack already took (except when its answer was lost).

Run: `SLACK_WEBHOOK_URL=https://hooks.slack.com/services/... python examples/forwarders/slack.py -c slack.yaml`
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from forwarder_cli import run_forwarder
from forwarder_config import ForwarderSettings
from forwarding import Outcome, Sink
from http_delivery import HttpPoster, HttpReply, deliver_each

from agent.alert import Alert
from agent.priority import Priority

__all__ = ["PRIORITY_COLOURS", "SlackSettings", "SlackSink", "main"]

PRIORITY_COLOURS = {
    Priority.EMERGENCY: "#e01e5a",
    Priority.ALERT: "#e01e5a",
    Priority.CRITICAL: "#e01e5a",
    Priority.ERROR: "#ff5400",
    Priority.WARNING: "#f2a900",
    Priority.NOTICE: "#3aa3e3",
    Priority.INFORMATIONAL: "#a0a0a0",
    Priority.DEBUG: "#a0a0a0",
}


@dataclass(frozen=True, slots=True)
class SlackSettings:
    """The `slack:` section."""

    channel: str = ""  # only for legacy webhooks; app webhooks post to their own channel
    username: str = "falco-agent"
    icon_url: str = ""
    output_fields: tuple[str, ...] = ()  # which output fields to show; empty: the first `max_output_fields`
    max_output_fields: int = 6


class SlackSink:
    """Posts to a Slack incoming webhook, one message per alert, in order."""

    name = "slack"

    def __init__(self, settings: ForwarderSettings, slack: SlackSettings) -> None:
        self.url = settings.http.url
        self.slack = slack
        self._poster = HttpPoster(settings.http, timeout_s=settings.delivery.timeout_s)

    def message(self, alert: Alert) -> dict[str, Any]:
        falco = alert.falco_json()
        fields = [
            {"title": "priority", "value": alert.priority.label, "short": True},
            {"title": "source", "value": alert.source, "short": True},
            {"title": "hostname", "value": alert.hostname, "short": True},
            {"title": "time", "value": falco["time"], "short": True},
        ]
        if alert.tags:
            fields.append({"title": "tags", "value": ", ".join(sorted(alert.tags)), "short": False})
        names = self.slack.output_fields or tuple(alert.output_fields)[: self.slack.max_output_fields]
        for name in names:
            if name in alert.output_fields:
                fields.append({"title": name, "value": _text(alert.output_fields[name]), "short": True})
        attachment = {
            "fallback": f"{alert.priority.label}: {alert.rule}: {alert.output}",
            "color": PRIORITY_COLOURS[alert.priority],
            "title": alert.rule,
            "text": alert.output,
            "fields": fields,
            "footer": f"falco-agent seq {alert.seq}",
            "ts": alert.ts_ns // 1_000_000_000,
        }
        message: dict[str, Any] = {"attachments": [attachment], "username": self.slack.username}
        if self.slack.channel:
            message["channel"] = self.slack.channel
        if self.slack.icon_url:
            message["icon_url"] = self.slack.icon_url
        return message

    def deliver(self, alerts: list[Alert]) -> Outcome:
        def send(alert: Alert) -> HttpReply:
            return self._poster.post(self.url, orjson.dumps(self.message(alert)),
                                     headers={"Content-Type": "application/json"})

        return deliver_each(alerts, send)

    def close(self) -> None:
        self._poster.close()


def _text(value: Any) -> str:
    if value is None:
        return "<NA>"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def main(argv: Sequence[str] | None = None) -> int:
    return run_forwarder(argv, name="slack-forwarder", own_key="slack", own_cls=SlackSettings,
                         build_sink=_build_sink, description="Forward falco-agent alerts to a Slack webhook.")


def _build_sink(settings: ForwarderSettings, slack: SlackSettings) -> Sink:
    return SlackSink(settings, slack)


if __name__ == "__main__":
    sys.exit(main())
