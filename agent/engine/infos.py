"""Records of what the rules files define: lists, macros, rules and exceptions, with positions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.location import Location
from agent.priority import Priority


@dataclass(slots=True)
class ListDef:
    name: str
    items: list[str]
    index: int
    visibility: int
    location: Location
    used: bool = False


@dataclass(slots=True)
class MacroDef:
    name: str
    condition: str
    index: int
    visibility: int
    location: Location
    used: bool = False


@dataclass(slots=True)
class ExceptionDef:
    """One exception as written: `fields`/`comps` are a list (tuple form) or a str (single form)."""

    name: str
    fields: list[str] | str | None
    comps: list[str] | str | None
    values: list[Any]
    location: Location


@dataclass(slots=True)
class RuleDef:
    name: str
    condition: str
    output: str
    desc: str
    priority: Priority
    source: str
    location: Location
    index: int
    visibility: int
    enabled: bool = True
    tags: set[str] = field(default_factory=set)
    exceptions: list[ExceptionDef] = field(default_factory=list)
    warn_evttypes: bool = True
    skip_if_unknown_filter: bool = False
    capture: bool = False
    capture_duration_ms: int = 0
    source_known: bool = True
