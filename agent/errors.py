"""The error root of the project: every error we raise on purpose carries a location."""

from __future__ import annotations

from agent.location import Location


class AgentError(Exception):
    """Base of all errors the agent reports to a user."""

    def __init__(self, message: str, location: Location | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location

    def __str__(self) -> str:
        if self.location is None:
            return self.message
        return f"{self.location}: {self.message}"


class RulesError(AgentError):
    """A rules file or condition is invalid."""


class ConfigError(AgentError):
    """The agent configuration is invalid."""


class DecodeError(AgentError):
    """An input record could not be decoded into an event; the record is skipped.

    `reason` is a short snake_case code for metrics (`missing_stage_timestamp`, `missing_event_time`...),
    set by the decoder that knows it, so that no consumer has to parse the message.
    """

    def __init__(self, message: str, location: Location | None = None, *, reason: str = "invalid") -> None:
        super().__init__(message, location)
        self.reason = reason
