"""Falco priorities: names, ranks and parsing."""

from __future__ import annotations

from enum import IntEnum


class Priority(IntEnum):
    """Lower value means more severe, as in Falco and its protobuf enum."""

    EMERGENCY = 0
    ALERT = 1
    CRITICAL = 2
    ERROR = 3
    WARNING = 4
    NOTICE = 5
    INFORMATIONAL = 6
    DEBUG = 7

    @property
    def label(self) -> str:
        """The canonical spelling printed in alerts (`Informational`, never `Info`)."""
        return self.name.capitalize()

    @classmethod
    def parse(cls, text: str) -> Priority:
        """Accept any case of a canonical name, and `info`; raise ValueError otherwise."""
        key = text.strip().upper()
        if key == "INFO":
            return cls.INFORMATIONAL
        try:
            return cls[key]
        except KeyError:
            raise ValueError(f"Invalid priority '{text}'") from None
