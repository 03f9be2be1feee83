"""Falco's periodic metrics snapshot: every `metrics.interval`, the metrics as the internal alert "Falco internal:
metrics snapshot" (`metrics.output_rule`) and/or one JSON line `{"sample": N, "output_fields": {...}}` appended to
`metrics.output_file`, as Falco writes them (agent.falco_metrics.SnapshotFields names the fields).

The interval takes Falco's durations: a number and a unit (`ms`, `s`, `m`, `h`, `d`, `w`, `y`), several of them
one after the other (`1h30m`), at least 100 ms.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import IO

import structlog

from agent.alert import Alert, json_bytes
from agent.config.schema import MetricsConfig
from agent.errors import ConfigError
from agent.falco_metrics import FalcoMetricsReader, SnapshotFields
from agent.internal_alerts import InternalAlerts
from agent.metrics import MetricsSnapshot
from agent.priority import Priority

__all__ = ["MetricsSnapshotWriter", "parse_interval"]

log = structlog.get_logger(__name__)

_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400, "y": 365 * 86_400}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_DURATION = re.compile(f"(?:{_PART.pattern})+")
MIN_INTERVAL_S = 0.1


def parse_interval(text: str) -> float:
    """Seconds of a Falco duration; ConfigError naming `metrics.interval` when it is not one or under 100 ms."""
    spelled = text.strip()
    if not _DURATION.fullmatch(spelled):
        raise ConfigError(f"metrics.interval: '{text}' is not a duration; write a number and a unit (ms, s, m, h, "
                          "d, w, y), e.g. 15m or 1h30m")
    seconds = sum(int(count) * _UNIT_S[unit] for count, unit in _PART.findall(spelled))
    if seconds < MIN_INTERVAL_S:
        raise ConfigError(f"metrics.interval: '{text}' is under the 100ms minimum")
    return seconds


class MetricsSnapshotWriter:
    """Writes a snapshot every interval from its own thread: `emit` hands the alert to the outputs when
    `output_rule`, `output_file` takes the JSON lines when not empty."""

    def __init__(self, settings: MetricsConfig, *, collect: Callable[[], MetricsSnapshot],
                 falco: FalcoMetricsReader, alerts: InternalAlerts, emit: Callable[[Alert], None],
                 min_priority: str = "debug") -> None:
        """`min_priority` is the `priority` key: as in Falco, the informational alert is raised only when it passes."""
        self.interval_s = parse_interval(settings.interval)
        self._path = settings.output_file
        self._collect = collect
        self._falco = falco
        self._fields = SnapshotFields(settings)
        self._alerts = alerts
        self._emit: Callable[[Alert], None] | None = emit if settings.output_rule else None
        if settings.output_rule and Priority.parse(min_priority) < Priority.INFORMATIONAL:
            log.warning("metrics_snapshot_alert_hidden", priority=min_priority,
                        hint="metrics.output_rule raises an informational alert: set priority to informational or "
                             "debug to see it")
            self._emit = None
        self._samples = 0
        self._file: IO[bytes] | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Open the file (ConfigError naming `metrics.output_file` when it cannot) and start the thread."""
        if self._path:
            try:
                self._file = open(self._path, "ab")  # noqa: SIM115 - open until stop()
            except OSError as exc:
                raise ConfigError(f"metrics.output_file: cannot append to '{self._path}': {exc.strerror}; make its "
                                  "folder writable or change the key") from None
        self._thread = threading.Thread(target=self._run, name="metrics-snapshots", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            try:
                self.write()
            except Exception as exc:  # one failed snapshot (a full disk...) must not end the next ones
                log.error("metrics_snapshot_failed", error=f"{type(exc).__name__}: {exc}")

    def write(self) -> None:
        """One snapshot now."""
        fields = self._fields.fields(self._falco.read(self._collect()))
        self._samples += 1
        if self._file is not None:
            self._file.write(json_bytes({"sample": self._samples, "output_fields": fields}) + b"\n")
            self._file.flush()
        if self._emit is not None:
            self._emit(self._alerts.metrics_snapshot(dict(fields)))

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        if self._file is not None:
            self._file.close()
            self._file = None

