"""Alerts on standard output: Falco's text line or its JSON object, one per line."""

from __future__ import annotations

import sys
from typing import BinaryIO

from agent.alert import FALCO_JSON, Alert, JsonAlertFormat, alert_encoder


class StdoutOutput:
    """Lines go through the stream's buffer; the runtime flushes it after each batch, or with `flush_each_alert`
    (Falco's `buffered_outputs: false`) every alert is flushed as it is written, for a reader at the other end of a
    pipe that acts on each alert at once."""

    name = "stdout"

    def __init__(self, *, as_json: bool, iso8601: bool, json_format: JsonAlertFormat = FALCO_JSON,
                 flush_each_alert: bool = False, stream: BinaryIO | None = None) -> None:
        self._encode = alert_encoder(as_json=as_json, iso8601=iso8601, json_format=json_format)
        self._flush_each_alert = flush_each_alert
        self._stream = stream or sys.stdout.buffer
        self.delivered = 0

    def emit(self, alert: Alert) -> None:
        self._stream.write(self._encode(alert) + b"\n")
        if self._flush_each_alert:
            self._stream.flush()
        self.delivered += 1

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        self.flush()
