"""The Output protocol every alert destination implements."""

from __future__ import annotations

from typing import Protocol

from agent.alert import Alert


class Output(Protocol):
    name: str

    def emit(self, alert: Alert) -> None:
        """Take one alert; must not block the engine for long (queue internally if slow)."""
        ...

    def flush(self) -> None:
        """Deliver what is buffered."""
        ...

    def close(self) -> None:
        """Flush and release resources."""
        ...
