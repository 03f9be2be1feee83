"""An alert: what a rule said about an event, and its text and Falco JSON forms."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
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

    def text_line(self, *, iso8601: bool = False) -> str:
        """`<time>: <Priority> <output>`, escaped like a JSON string body, as Falco prints it."""
        return self.text_bytes(iso8601=iso8601).decode()

    def text_bytes(self, *, iso8601: bool = False) -> bytes:
        """`text_line` encoded as UTF-8, without the decode and encode an output would add."""
        return json_bytes(self.prefixed_output(iso8601))[1:-1]

    def falco_json(self, *, iso8601: bool = False) -> dict[str, Any]:
        """Falco's JSON alert object with Falco's default properties (see JsonAlertFormat)."""
        return FALCO_JSON.document(self, iso8601=iso8601)

    def falco_json_line(self, *, iso8601: bool = False) -> bytes:
        return json_bytes(self.falco_json(iso8601=iso8601))

    def prefixed_output(self, iso8601: bool = False) -> str:
        """The output after its time and priority, as in the text line and JSON `output`, not yet escaped."""
        stamp = format_iso8601(self.ts_ns) if iso8601 else format_time(self.ts_ns)
        return f"{stamp}: {self.priority.label} {self.output}"


@dataclass(frozen=True, slots=True)
class JsonAlertFormat:
    """Which optional properties Falco's JSON alert object holds (Falco's `json_include_*_property` keys).

    `hostname`, `priority`, `rule`, `source` and `time` are always there. Made once from the configuration and
    shared by every output that writes JSON, so that all of them write the same object.
    """

    include_output: bool = True
    include_message: bool = False
    include_output_fields: bool = True
    include_tags: bool = True

    def document(self, alert: Alert, *, iso8601: bool = False) -> dict[str, Any]:
        """The object, keys in sorted order as Falco writes them; the time field of the text prefix is added to
        `output_fields` as an integer of nanoseconds.

        Serialise it with `json_bytes`: its values are as the rule extracted them.
        """
        doc: dict[str, Any] = {"hostname": alert.hostname}
        if self.include_message:
            doc["message"] = alert.output
        if self.include_output:
            doc["output"] = alert.prefixed_output(iso8601)
        if self.include_output_fields:
            fields = dict(alert.output_fields)
            fields["evt.time.iso8601" if iso8601 else "evt.time"] = alert.ts_ns
            doc["output_fields"] = dict(sorted(fields.items()))
        doc["priority"] = alert.priority.label
        doc["rule"] = alert.rule
        doc["source"] = alert.source
        if self.include_tags:
            doc["tags"] = sorted(alert.tags)
        doc["time"] = format_json_time(alert.ts_ns)
        return doc

    def line(self, alert: Alert, *, iso8601: bool = False) -> bytes:
        """The object as one line of compact JSON (no newline)."""
        return json_bytes(self.document(alert, iso8601=iso8601))


#: Falco's defaults: output, output_fields and tags, no message.
FALCO_JSON = JsonAlertFormat()

AlertEncoder = Callable[[Alert], bytes]


def alert_encoder(*, as_json: bool, iso8601: bool, json_format: JsonAlertFormat = FALCO_JSON) -> AlertEncoder:
    """How an output that writes lines turns an alert into one (no newline): Falco's text line or its JSON object.

    Chosen once when the output is built, so that writing an alert tests no setting.
    """
    if as_json:
        return lambda alert: json_format.line(alert, iso8601=iso8601)
    return lambda alert: alert.text_bytes(iso8601=iso8601)
