"""Test cases kept next to a rules file (`tests/NAME.tests.yaml` or `NAME.tests.yaml` beside `NAME.yaml`): reading
and checking them. A `tests/` folder keeps them out of a rules folder the agent or Falco loads whole.

A cases file is a YAML list; each item is one case:

    - case: curl piped to a shell in a pod          # what happens (unique within the file)
      rule: Terminal Shell In Container              # or `correlation: NAME`
      source: k8s_audit                              # decode JSON documents as this source (else recognised)
      event: {...}                                   # one JSON event, or `events: [...]`, or `file: PATH`
      expect: match                                  # or `no match`
      count: 1                                       # optional, with `match`: exactly this many alerts
      priority: WARNING                              # optional, with `match`
      output_fields: {proc.name: bash}               # optional, with `match`: these output fields, these values
      event_fields: {evt.res: SUCCESS}               # optional, with `match`: any field of the alerting event

Every problem is a CaseError naming the file, the case's line and the key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent.errors import AgentError
from agent.location import Location
from agent.priority import Priority

CASES_SUFFIX = ".tests.yaml"
CASES_FOLDER = "tests"
_INPUT_KEYS = ("event", "events", "file")
_DETAILS = ("count", "priority", "output_fields", "event_fields")
_KEYS = frozenset({"case", "rule", "correlation", "source", *_INPUT_KEYS, "expect", *_DETAILS})
_EXPECTATIONS = {"match": True, "no match": False}


class CaseError(AgentError):
    """A cases file that cannot be read, or a case that does not say what to run or what to expect."""


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the named rule must do on the case's input; the optional parts apply to a match only."""

    matches: bool
    count: int | None = None
    priority: Priority | None = None
    output_fields: Mapping[str, Any] = field(default_factory=dict)
    #: Fields of the event that raised the first alert, read through its source's field table.
    event_fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CaseInput:
    """One of: JSON documents (kernel scenario lines among them) written in the case, or a file of events."""

    documents: tuple[Any, ...] = ()
    file: Path | None = None


@dataclass(frozen=True, slots=True)
class RuleCase:
    """One labelled case: the rule or correlation it is about, its input and what is expected."""

    name: str
    rule: str
    is_correlation: bool
    source: str | None
    input: CaseInput
    expect: Expectation
    location: Location

    @property
    def label(self) -> str:
        """`rule: case`, as the runner prints it."""
        return f"{self.rule}: {self.name}"


def cases_files_for(rules_file: Path) -> list[Path]:
    """Where the cases of `D/x.yaml` may live: `D/tests/x.tests.yaml`, `D/x.tests.yaml`."""
    name = rules_file.name.removesuffix(rules_file.suffix) + CASES_SUFFIX
    return [rules_file.parent / CASES_FOLDER / name, rules_file.with_name(name)]


def rules_file_for(cases_file: Path) -> Path:
    """The rules file a cases file is about: `D/tests/x.tests.yaml` or `D/x.tests.yaml` → `D/x.yaml`."""
    folder = cases_file.parent.parent if cases_file.parent.name == CASES_FOLDER else cases_file.parent
    return folder / (cases_file.name.removesuffix(CASES_SUFFIX) + ".yaml")


def load_cases(path: Path) -> list[RuleCase]:
    """The cases of one file, in file order; CaseError names the first bad case."""
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError) as exc:
        raise CaseError(f"cannot read cases file: {exc}", Location(str(path))) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise CaseError(f"invalid YAML: {getattr(exc, 'problem', exc)}",
                        Location(str(path), mark.line + 1 if mark else 0)) from None
    if root is None:
        return []
    if not isinstance(root, yaml.SequenceNode):
        raise CaseError("a cases file is a list of cases", Location(str(path), root.start_mark.line + 1))
    cases = []
    seen: dict[tuple[str, str], int] = {}
    for node in root.value:
        where = Location(str(path), node.start_mark.line + 1, item_kind="case")
        item = yaml.SafeLoader("").construct_document(node)
        case = _case(item, path, where)
        key = (case.rule, case.name)
        if key in seen:
            raise CaseError(f"case '{case.name}' of '{case.rule}' is already defined at line {seen[key]}",
                            case.location)
        seen[key] = where.line
        cases.append(case)
    return cases


def _case(item: Any, path: Path, where: Location) -> RuleCase:
    if not isinstance(item, dict):
        raise CaseError("a case is a mapping (case, rule, input, expect)", where)
    name = _text(item, "case", where)
    where = Location(where.file, where.line, item_kind="case", item_name=name)
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise CaseError(f"unknown keys {unknown}; a case knows {sorted(_KEYS)}", where)
    named = [key for key in ("rule", "correlation") if key in item]
    if len(named) != 1:
        raise CaseError("name exactly one of 'rule' and 'correlation'", where)
    rule = _text(item, named[0], where)
    source = _text(item, "source", where) if "source" in item else None
    return RuleCase(name=name, rule=rule, is_correlation=named[0] == "correlation", source=source,
                    input=_input(item, path, where), expect=_expectation(item, where), location=where)


def _input(item: dict[str, Any], path: Path, where: Location) -> CaseInput:
    given = [key for key in _INPUT_KEYS if key in item]
    if len(given) != 1:
        raise CaseError(f"give exactly one input: {', '.join(_INPUT_KEYS)}", where)
    key = given[0]
    if key == "event":
        return CaseInput(documents=(item["event"],))
    if key == "events":
        events = item["events"]
        if not isinstance(events, list) or not events:
            raise CaseError("'events' must be a non-empty list of JSON documents or kernel lines", where)
        return CaseInput(documents=tuple(events))
    return CaseInput(file=path.parent / _text(item, "file", where))


def _expectation(item: dict[str, Any], where: Location) -> Expectation:
    expect = item.get("expect")
    if expect not in _EXPECTATIONS:
        raise CaseError(f"'expect' must be 'match' or 'no match', got {expect!r}", where)
    matches = _EXPECTATIONS[expect]
    details = [key for key in _DETAILS if key in item]
    if details and not matches:
        raise CaseError(f"{', '.join(details)}: only a case expecting a match can say how it matches", where)
    count = item.get("count")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise CaseError(f"'count' must be a whole number of alerts, at least 1, got {count!r}", where)
    priority = None
    if "priority" in item:
        try:
            priority = Priority.parse(str(item["priority"]))
        except ValueError as exc:
            raise CaseError(f"priority: {exc}", where) from None
    return Expectation(matches=matches, count=count, priority=priority,
                       output_fields=_fields(item, "output_fields", where),
                       event_fields=_fields(item, "event_fields", where))


def _fields(item: dict[str, Any], key: str, where: Location) -> dict[str, Any]:
    fields = item.get(key, {})
    if not isinstance(fields, dict) or not all(isinstance(name, str) for name in fields):
        raise CaseError(f"'{key}' must map field names to values", where)
    return fields


def _text(item: dict[str, Any], key: str, where: Location) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        raise CaseError(f"'{key}' must be a non-empty string, got {value!r}", where)
    return value


def find_cases_files(rules_paths: Sequence[Path]) -> list[Path]:
    """The cases files of rules files: those of each file (see `cases_files_for`); for a directory, those of its
    `tests/` folder and beside its files."""
    found: list[Path] = []
    for path in rules_paths:
        if path.is_dir():
            found += sorted((path / CASES_FOLDER).glob(f"*{CASES_SUFFIX}")) + sorted(path.glob(f"*{CASES_SUFFIX}"))
        else:
            found += [candidate for candidate in cases_files_for(path) if candidate.is_file()]
    return list(dict.fromkeys(found))
