"""Alerts on standard output: Falco's text line or its JSON object, one per line."""

from __future__ import annotations

import sys
from typing import BinaryIO

from agent.alert import Alert


class StdoutOutput:
    name = "stdout"

    def __init__(self, *, as_json: bool, iso8601: bool, stream: BinaryIO | None = None) -> None:
        self._as_json = as_json
        self._iso8601 = iso8601
        self._stream = stream or sys.stdout.buffer
        self.delivered = 0

    def emit(self, alert: Alert) -> None:
        if self._as_json:
            line = alert.falco_json_line(iso8601=self._iso8601)
        else:
            line = alert.text_line(iso8601=self._iso8601).encode()
        self._stream.write(line + b"\n")
        self.delivered += 1

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        self.flush()
