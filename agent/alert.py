"""An alert: what a rule said about an event, and its text and Falco JSON forms."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from agent.generic_fields import format_iso8601, format_json_time, format_time
from agent.priority import Priority


@dataclass(slots=True)
class Alert:
    """One rule match. `output` is the rendered rule output without time and priority."""

    rule: str
    priority: Priority
    source: str
    ts_ns: int
    output: str
    output_fields: dict[str, Any]
    hostname: str = ""
    tags: tuple[str, ...] = ()
    seq: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def text_line(self, *, iso8601: bool = False) -> str:
        """`<time>: <Priority> <output>`, escaped like a JSON string body, as Falco prints it."""
        stamp = format_iso8601(self.ts_ns) if iso8601 else format_time(self.ts_ns)
        line = f"{stamp}: {self.priority.label} {self.output}"
        return orjson.dumps(line).decode()[1:-1]

    def falco_json(self, *, iso8601: bool = False) -> dict[str, Any]:
        """Falco's JSON alert object, with the time field of the prefix added to output_fields."""
        stamp = format_iso8601(self.ts_ns) if iso8601 else format_time(self.ts_ns)
        fields = dict(self.output_fields)
        fields["evt.time.iso8601" if iso8601 else "evt.time"] = self.ts_ns
        return {
            "hostname": self.hostname,
            "output": f"{stamp}: {self.priority.label} {self.output}",
            "output_fields": dict(sorted(fields.items())),
            "priority": self.priority.label,
            "rule": self.rule,
            "source": self.source,
            "tags": sorted(self.tags),
            "time": format_json_time(self.ts_ns),
        }

    def falco_json_line(self, *, iso8601: bool = False) -> bytes:
        return orjson.dumps(self.falco_json(iso8601=iso8601))
