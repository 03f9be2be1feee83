"""The outcome of loading rules: errors and warnings as data, each with a code and a location."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from agent.location import Location

#: Falco's name for the whole of one rules file: the first location of every problem it reports.
RULES_CONTENT = "rules content"
#: Falco's name for a position that is no rules item (a YAML parse error's mark).
VALUE_FOR = "value for"
#: Our item kinds that Falco spells differently in a location's `item_type`.
_FALCO_ITEM_TYPES = {"required_plugin_versions": "required plugin versions"}


class ErrorCode(Enum):
    """Falco's load error codes; any of them fails the load."""

    LOAD_ERR_FILE_READ = "LOAD_ERR_FILE_READ"
    LOAD_ERR_YAML_PARSE = "LOAD_ERR_YAML_PARSE"
    LOAD_ERR_YAML_VALIDATE = "LOAD_ERR_YAML_VALIDATE"
    LOAD_ERR_COMPILE_CONDITION = "LOAD_ERR_COMPILE_CONDITION"
    LOAD_ERR_COMPILE_OUTPUT = "LOAD_ERR_COMPILE_OUTPUT"
    LOAD_ERR_VALIDATE = "LOAD_ERR_VALIDATE"
    LOAD_ERR_EXTENSION = "LOAD_ERR_EXTENSION"

    @property
    def description(self) -> str:
        return _ERROR_DESCRIPTIONS[self]


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

    @property
    def description(self) -> str:
        return _WARNING_DESCRIPTIONS[self]


#: `codedesc` of the JSON report: what a code means, in a few words.
_ERROR_DESCRIPTIONS = {
    ErrorCode.LOAD_ERR_FILE_READ: "The rules file could not be read",
    ErrorCode.LOAD_ERR_YAML_PARSE: "The rules file is not valid YAML",
    ErrorCode.LOAD_ERR_YAML_VALIDATE: "The YAML does not have the shape of a rules file",
    ErrorCode.LOAD_ERR_COMPILE_CONDITION: "A condition does not compile",
    ErrorCode.LOAD_ERR_COMPILE_OUTPUT: "An output does not compile",
    ErrorCode.LOAD_ERR_VALIDATE: "A list, macro, rule or exception is not valid",
    ErrorCode.LOAD_ERR_EXTENSION: "An extension reported an error",
}
_WARNING_DESCRIPTIONS = {
    WarningCode.LOAD_UNKNOWN_SOURCE: "The rule's source is not loaded: the rule is skipped",
    WarningCode.LOAD_UNSAFE_NA_CHECK: "A field is compared to <NA>, which may not mean what was intended",
    WarningCode.LOAD_NO_EVTTYPE: "The rule does not restrict evt.type: it runs on every event, which costs",
    WarningCode.LOAD_UNKNOWN_FILTER: "The rule names an unknown field or event and is skipped",
    WarningCode.LOAD_UNUSED_MACRO: "A macro that nothing refers to",
    WarningCode.LOAD_UNUSED_LIST: "A list that nothing refers to",
    WarningCode.LOAD_UNKNOWN_ITEM: "An item of unknown kind, ignored",
    WarningCode.LOAD_DEPRECATED_ITEM: "Something deprecated is used",
    WarningCode.LOAD_WARNING_EXTENSION: "An extension reported a warning",
    WarningCode.LOAD_APPEND_NO_VALUES: "An appended exception brings no values",
    WarningCode.LOAD_EXCEPTION_NAME_NOT_UNIQUE: "Two exceptions of a rule have the same name",
    WarningCode.LOAD_INVALID_MACRO_NAME: "A macro name that a condition can not refer to",
    WarningCode.LOAD_INVALID_LIST_NAME: "A list name that a condition can not refer to",
    WarningCode.LOAD_COMPILE_CONDITION: "A condition compiled, with a hint about it",
    WarningCode.LOAD_UNKNOWN_KEY: "An item key of unknown meaning, ignored",
}


@dataclass(frozen=True, slots=True)
class LoadProblem:
    """One error or warning: its code, a message, where it is, and the rules file whose load reported it."""

    code: ErrorCode | WarningCode
    message: str
    location: Location
    #: The file being loaded when the problem was found (a warning about an item of an earlier file is reported
    #: again by each later file's load, as Falco does); empty when no file was begun.
    loading: str = ""

    @property
    def is_error(self) -> bool:
        return isinstance(self.code, ErrorCode)

    def as_json(self, texts: dict[str, str]) -> dict[str, object]:
        """Falco's JSON for one problem; `texts` (file name to content) give offsets and the snippet."""
        locations = [_location_json(loc, texts) for loc in _location_chain(self.location)]
        innermost = self.location
        return {
            "code": self.code.value,
            "codedesc": self.code.description,
            "message": self.message,
            "context": {"locations": locations, "snippet": _snippet(texts.get(innermost.file, ""), innermost)},
        }

    def as_text(self) -> str:
        kind = "error" if self.is_error else "warning"
        parent = self.location.parent
        within = f" in {parent.item_kind} '{parent.item_name}'" if parent is not None and parent.item_kind else ""
        return f"{self.location}{within}: {kind} {self.code.value}: {self.message}"


def _location_chain(location: Location) -> list[Location]:
    """Outermost first, starting with the whole file (Falco's `rules content`), as Falco stacks its contexts."""
    chain: list[Location] = []
    loc: Location | None = location
    while loc is not None:
        chain.append(loc)
        loc = loc.parent
    chain.reverse()
    if chain[0].item_kind != RULES_CONTENT:
        chain.insert(0, Location(location.file, item_kind=RULES_CONTENT))
    return chain


def _location_json(loc: Location, texts: dict[str, str]) -> dict[str, object]:
    # Falco's positions are 0-based (YAML marks); ours are 1-based with 0 for unknown.
    line, column = max(loc.line - 1, 0), max(loc.column - 1, 0)
    return {
        "item_type": _FALCO_ITEM_TYPES.get(loc.item_kind, loc.item_kind) or VALUE_FOR,
        "item_name": loc.item_name,
        "position": {"name": loc.file, "line": line, "column": column,
                     "offset": _offset(texts.get(loc.file, ""), loc) if loc.line else 0},
    }


def _offset(text: str, loc: Location) -> int:
    """The character offset of a 1-based line and column in `text` (0 when the line is past its end)."""
    offset = 0
    for _ in range(loc.line - 1):
        newline = text.find("\n", offset)
        if newline < 0:
            return 0
        offset = newline + 1
    return offset + max(loc.column - 1, 0)


def _snippet(text: str, loc: Location) -> str:
    """The line the location points into with a caret under its column, as Falco shows it; empty without one."""
    if not loc.line:
        return ""
    lines = text.split("\n")
    if loc.line > len(lines):
        return ""
    return f"{lines[loc.line - 1]}\n{' ' * max(loc.column - 1, 0)}^\n"


class LoadAborted(Exception):
    """Raised inside the loader to stop reading a file after an error already recorded."""


@dataclass(slots=True)
class LoadResult:
    """Everything loading reported, in order; `successful` when there is no error.

    `begin_file` marks where each file's load starts, so the report can be split per file as Falco's is.
    """

    problems: list[LoadProblem] = field(default_factory=list)
    #: Contents of the files begun so far, by name, in load order.
    texts: dict[str, str] = field(default_factory=dict)

    def begin_file(self, name: str, text: str) -> None:
        self.texts[name] = text

    @property
    def _loading(self) -> str:
        return next(reversed(self.texts), "")

    def error(self, code: ErrorCode, message: str, location: Location) -> LoadAborted:
        """Record an error and return the exception that stops the current file."""
        self.problems.append(LoadProblem(code, message, location, self._loading))
        return LoadAborted(message)

    def warn(self, code: WarningCode, message: str, location: Location) -> None:
        self.problems.append(LoadProblem(code, message, location, self._loading))

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

    def by_file(self) -> Iterator[tuple[str, list[LoadProblem]]]:
        """Each file in load order with the problems its load reported (a file that could not be read, by its
        problems' location)."""
        names = list(self.texts)
        for problem in self.problems:
            name = problem.loading or problem.location.file
            if name not in names:
                names.append(name)
        for name in names:
            yield name, [p for p in self.problems if (p.loading or p.location.file) == name]

    def as_json(self) -> dict[str, list[dict[str, Any]]]:
        """Falco's `-V` JSON: `falco_load_results`, one entry per file with its errors and warnings."""
        return {"falco_load_results": [
            {
                "name": name,
                "successful": not any(p.is_error for p in problems),
                "errors": [p.as_json(self.texts) for p in problems if p.is_error],
                "warnings": [p.as_json(self.texts) for p in problems if not p.is_error],
            }
            for name, problems in self.by_file()
        ]}

    def as_text(self) -> str:
        return "\n".join(p.as_text() for p in self.problems)
