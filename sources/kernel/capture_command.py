"""`falco-agent capture FILE`: record live syscalls, with what the state learned from the host, to replay.

The capture holds every decoded record plus every answer the state got from /proc, the account
files and the container runtimes, in order, so `falco-agent replay` rebuilds the same events
and field values later, on any machine and without root.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.event import Event
from sources.kernel.capture import write_capture
from sources.kernel.source import KernelSettings, KernelSource
from sources.kernel.state import live_state


@dataclass(frozen=True, slots=True)
class CaptureSummary:
    records: int
    lost: int
    seconds: float


class _Discard:
    """The capture needs no engine: events are counted and let go."""

    def __init__(self) -> None:
        self.events = 0

    def put(self, events: Sequence[Event], on_done: Callable[[], None] | None = None, *,
            timeout_s: float | None = None) -> bool:
        self.events += len(events)
        if on_done is not None:
            on_done()
        return True

    offer = put


def capture(path: str | Path, *, settings: KernelSettings, rule_types: frozenset[str] | None,
            stop: threading.Event, seconds: float | None = None, hostname: str = "",
            buffer_types: frozenset[str] | None = None) -> CaptureSummary:
    """Capture until `stop` is set or `seconds` pass. `rule_types` None captures every syscall known, and
    `buffer_types` None the I/O buffer of every one that has one (for the rules a replay may bring).

    Raises KernelUnavailable (an AgentError) when the probe cannot load here.
    """
    writer = write_capture(path)
    source = KernelSource(settings, rule_types=lambda: rule_types, buffer_types=lambda: buffer_types,
                          new_state=lambda: live_state(hostname=hostname, observer=writer))
    started = time.monotonic()
    try:
        source.start(_Discard())
        stop.wait(seconds)
        source.stop()
    finally:
        writer.close()
    metrics = source.metrics()
    return CaptureSummary(metrics["records"], metrics["kernel_lost"], time.monotonic() - started)
