"""An alert: what a rule said about an event, and its text and Falco JSON forms."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from agent.generic_fields import format_iso8601, format_json_time, format_time
from agent.priority import Priority

# What orjson writes as a JSON integer; a wider one (only a subscriber receiving a foreign alert can hold
# one, as decoders refuse such times) is written as a string of its digits: exact, and readable by any consumer.
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1
# Lone surrogates stand for bytes that were not UTF-8 (kernel paths decoded with surrogateescape);
# Falco writes invalid UTF-8 as U+FFFD.
_SURROGATES = re.compile("[\ud800-\udfff]")


def json_bytes(value: Any) -> bytes:
    """Compact JSON of an alert document, or of any value an alert can hold, without raising.

    The fast path is orjson as is; only a document it refuses is made writable, value by value.
    """
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return orjson.dumps(_writable(value), default=_text)


def _writable(value: Any) -> Any:
    """`value` with what orjson refuses turned into what it writes: wide integers and surrogates as text."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if _INT_MIN <= value <= _INT_MAX else str(value)
    if isinstance(value, str):
        return _SURROGATES.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_text(key): _writable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_writable(item) for item in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value  # None and floats as they are; any other object reaches `_text` through orjson's default


def _text(value: Any) -> str:
    return _SURROGATES.sub("\ufffd", value if value.__class__ is str else str(value))


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
        return json_bytes(line).decode()[1:-1]

    def falco_json(self, *, iso8601: bool = False) -> dict[str, Any]:
        """Falco's JSON alert object, with the time field of the prefix added to output_fields.

        Serialise it with `json_bytes`: its values are as the rule extracted them.
        """
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
        return json_bytes(self.falco_json(iso8601=iso8601))
