"""The outcome of loading rules: errors and warnings as data, each with a code and a location."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from agent.location import Location


class ErrorCode(Enum):
    """Falco's load error codes; any of them fails the load."""

    LOAD_ERR_FILE_READ = "LOAD_ERR_FILE_READ"
    LOAD_ERR_YAML_PARSE = "LOAD_ERR_YAML_PARSE"
    LOAD_ERR_YAML_VALIDATE = "LOAD_ERR_YAML_VALIDATE"
    LOAD_ERR_COMPILE_CONDITION = "LOAD_ERR_COMPILE_CONDITION"
    LOAD_ERR_COMPILE_OUTPUT = "LOAD_ERR_COMPILE_OUTPUT"
    LOAD_ERR_VALIDATE = "LOAD_ERR_VALIDATE"
    LOAD_ERR_EXTENSION = "LOAD_ERR_EXTENSION"


class WarningCode(Enum):
    """Falco's load warning codes; loading goes on."""

    LOAD_UNKNOWN_SOURCE = "LOAD_UNKNOWN_SOURCE"
    LOAD_UNSAFE_NA_CHECK = "LOAD_UNSAFE_NA_CHECK"
    LOAD_NO_EVTTYPE = "LOAD_NO_EVTTYPE"
    LOAD_UNKNOWN_FILTER = "LOAD_UNKNOWN_FILTER"
    LOAD_UNUSED_MACRO = "LOAD_UNUSED_MACRO"
    LOAD_UNUSED_LIST = "LOAD_UNUSED_LIST"
    LOAD_UNKNOWN_ITEM = "LOAD_UNKNOWN_ITEM"
    LOAD_DEPRECATED_ITEM = "LOAD_DEPRECATED_ITEM"
    LOAD_WARNING_EXTENSION = "LOAD_WARNING_EXTENSION"
    LOAD_APPEND_NO_VALUES = "LOAD_APPEND_NO_VALUES"
    LOAD_EXCEPTION_NAME_NOT_UNIQUE = "LOAD_EXCEPTION_NAME_NOT_UNIQUE"
    LOAD_INVALID_MACRO_NAME = "LOAD_INVALID_MACRO_NAME"
    LOAD_INVALID_LIST_NAME = "LOAD_INVALID_LIST_NAME"
    LOAD_COMPILE_CONDITION = "LOAD_COMPILE_CONDITION"
    LOAD_UNKNOWN_KEY = "LOAD_UNKNOWN_KEY"


@dataclass(frozen=True, slots=True)
class LoadProblem:
    """One error or warning: its code, a message, and where it is."""

    code: ErrorCode | WarningCode
    message: str
    location: Location

    @property
    def is_error(self) -> bool:
        return isinstance(self.code, ErrorCode)

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.location.file,
            "line": self.location.line,
            "column": self.location.column,
            "item": f"{self.location.item_kind} '{self.location.item_name}'" if self.location.item_kind else "",
            "code": self.code.value,
            "message": self.message,
        }

    def as_text(self) -> str:
        kind = "error" if self.is_error else "warning"
        return f"{self.location}: {kind} {self.code.value}: {self.message}"


class LoadAborted(Exception):
    """Raised inside the loader to stop reading a file after an error already recorded."""


@dataclass(slots=True)
class LoadResult:
    """Everything loading reported, in order; `successful` when there is no error."""

    problems: list[LoadProblem] = field(default_factory=list)

    def error(self, code: ErrorCode, message: str, location: Location) -> LoadAborted:
        """Record an error and return the exception that stops the current file."""
        self.problems.append(LoadProblem(code, message, location))
        return LoadAborted(message)

    def warn(self, code: WarningCode, message: str, location: Location) -> None:
        self.problems.append(LoadProblem(code, message, location))

    @property
    def errors(self) -> list[LoadProblem]:
        return [p for p in self.problems if p.is_error]

    @property
    def warnings(self) -> list[LoadProblem]:
        return [p for p in self.problems if not p.is_error]

    @property
    def successful(self) -> bool:
        return not self.errors

    @property
    def has_warnings(self) -> bool:
        return bool(self.warnings)

    def as_json(self) -> dict[str, list[dict[str, object]]]:
        return {
            "errors": [p.as_dict() for p in self.errors],
            "warnings": [p.as_dict() for p in self.warnings],
        }

    def as_text(self) -> str:
        return "\n".join(p.as_text() for p in self.problems)
