"""The one event type every source produces, with its per-event cache of extracted fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Event:
    """One event of any source.

    `payload` is the decoded raw input (the parsed JSON object for the JSON sources, a decoded
    syscall record for the kernel). `type` is the source's own event type (the syscall name,
    the audit verb, the CloudTrail eventName). `cache` maps a bound field key to the value
    extracted for this event, so that a field is extracted at most once per event.
    """

    source: str
    ts_ns: int
    payload: Any
    type: str = ""
    hostname: str = ""
    num: int = 0
    cache: dict[str, Any] = field(default_factory=dict)
