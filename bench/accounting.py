"""What a benchmark really did: a figure is printed only for work that was done.

Every benchmark counts the events it offered and the events the engine (or the agent) really evaluated,
and states whether its samples are known to alert. `Tally.verify()` raises `BenchmarkInvalid` when the
two counts differ or an alerting sample raised nothing; `main_guard` turns that into a message on stderr
and exit status 1, so no figure measured on skipped work reaches a note or a dashboard.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

EXIT_INVALID = 1


class BenchmarkInvalid(Exception):
    """The benchmark did less work than it claims to measure; its figures must not be used."""


def require_none(problems: list[str]) -> None:
    """BenchmarkInvalid naming every problem, if there is any."""
    if problems:
        raise BenchmarkInvalid("; ".join(problems))


@dataclass
class Tally:
    """One measured phase: what was offered, what was evaluated, what it raised."""

    phase: str
    offered: int = 0
    evaluated: int = 0
    alerts: int = 0
    #: The samples of this phase are known to raise alerts (Falco's regression traces, attack logs...).
    expect_alerts: bool = False
    #: Why some offered input may legitimately never be evaluated (none: every item must be).
    notes: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        out = []
        if self.offered <= 0:
            out.append(f"{self.phase}: nothing was offered")
        elif self.evaluated != self.offered:
            out.append(f"{self.phase}: {self.evaluated:,} events evaluated of {self.offered:,} offered")
        if self.expect_alerts and self.evaluated > 0 and self.alerts == 0:
            out.append(f"{self.phase}: samples known to alert raised no alert")
        return out

    def verify(self) -> None:
        problems = self.problems()
        if problems:  # the notes explain a shortfall; alone they are no problem
            require_none(problems + self.notes)

    def as_figures(self) -> dict[str, int]:
        return {f"{self.phase}_offered": self.offered, f"{self.phase}_evaluated": self.evaluated,
                f"{self.phase}_alerts": self.alerts}


class _EngineStats(Protocol):
    events: int
    alerts: int


class Counting(Protocol):
    """An engine: its own counters of events evaluated and alerts raised."""

    @property
    def stats(self) -> _EngineStats: ...


@contextmanager
def counted(engine: Counting, tally: Tally, offered: int) -> Iterator[None]:
    """Count into `tally` the `offered` events, what the engine evaluated and the alerts it raised while the
    block ran (from the engine's own counters), and verify it when the block ends."""
    events, alerts = engine.stats.events, engine.stats.alerts
    yield
    tally.offered = offered
    tally.evaluated = engine.stats.events - events
    tally.alerts = engine.stats.alerts - alerts
    tally.verify()


def main_guard(main: Callable[[], int]) -> int:
    """Run a benchmark's main; an invalid run prints why on stderr and exits 1 with no figures."""
    try:
        return main()
    except BenchmarkInvalid as exc:
        print(f"benchmark invalid, no figures: {exc}", file=sys.stderr)
        return EXIT_INVALID
