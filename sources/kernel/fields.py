"""Declare the `syscall` source: its field table, index key, plugin stand-ins and event type names.

The field data comes from `syscall_fields.tsv` and `event_types.tsv` beside this module (package
data), so that any upstream syscall rule compiles; the extractors come from the `*_fields` modules,
which read the `SyscallEvent` payload the kernel state builds. A declared field with no extractor
keeps FieldSpec's default, which means "not available".

Argument kinds follow libsinsp's EPF_ARG_* flags, refined where libsinsp's own parser is
narrower or looser than the flags say (see the `arg` column of the TSV): `evt.rawarg` and
`thread.cgroup` take a name, `evt.around` and the `proc.a*` ancestor fields take a number,
`fd.types` takes a descriptor number, and `evt.abspath` also works bare (`.src`/`.dst` pick
one of two paths). `dot_arg` marks the fields libsinsp lets you write as `name.<arg>`. The container and pod
fields Falco's container plugin suggests for outputs (`append_output`'s `suggested_output`) carry FORMAT_SUGGESTED.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import replace
from functools import cache
from importlib import resources

from agent.event import Event
from agent.fields import (
    ArgKind,
    Extractor,
    ExtractorFactory,
    FieldFlag,
    FieldSpec,
    FieldTable,
    FieldType,
    InlineRead,
    Value,
    with_inline,
)
from agent.generic_fields import generic_fields
from agent.source import PathParts, SourceSpec
from sources.kernel.evt_fields import EVT_EXTRACTORS
from sources.kernel.fd_fields import FD_COMPARATORS, FD_EXTRACTORS
from sources.kernel.fspath_fields import FSPATH_EXTRACTORS
from sources.kernel.identity_fields import IDENTITY_EXTRACTORS
from sources.kernel.proc_fields import PROC_EXTRACTORS

__all__ = [
    "SOURCE_NAME",
    "SYSCALL_EVENT_TYPES",
    "load_event_types",
    "load_syscall_field_specs",
    "syscall_source",
]

SOURCE_NAME = "syscall"

#: Plugin versions this source answers for in `required_plugin_versions`; at least what
#: the upstream falco_rules.yaml asks (container 0.4.0) and what k8smeta rules expect.
_PLUGINS = (("container", "0.4.0"), ("k8smeta", "0.3.0"))

_FIELDS_FILE = "syscall_fields.tsv"
_EVENT_TYPES_FILE = "event_types.tsv"
_COLUMNS = ("name", "type", "list", "arg", "flags", "dot_arg", "description")

_ARG_WORDS = {"index": ArgKind.INDEX, "key": ArgKind.KEY, "required": ArgKind.REQUIRED}
_YES_NO = {"yes": True, "no": False}


def _read_rows(filename: str) -> Iterator[dict[str, str]]:
    text = resources.files(__package__).joinpath(filename).read_text(encoding="utf-8")
    # QUOTE_NONE: descriptions may hold quote characters that are plain text here.
    yield from csv.DictReader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE)


def _parse_arg(text: str, *, field: str) -> ArgKind:
    if text == "none":
        return ArgKind.NONE
    kind = ArgKind.NONE
    for word in text.split(","):
        if word not in _ARG_WORDS:
            raise ValueError(f"{_FIELDS_FILE}: field '{field}': unknown arg word '{word}'")
        kind |= _ARG_WORDS[word]
    if not kind.accepts_arg:
        raise ValueError(f"{_FIELDS_FILE}: field '{field}': 'required' needs 'index' or 'key'")
    return kind


def _parse_flags(text: str, *, field: str) -> FieldFlag:
    flags = FieldFlag.NONE
    for word in filter(None, text.split(",")):
        try:
            flags |= FieldFlag[word]
        except KeyError:
            raise ValueError(f"{_FIELDS_FILE}: field '{field}': unknown flag '{word}'") from None
    return flags


def _parse_yes_no(text: str, *, field: str, column: str) -> bool:
    if text not in _YES_NO:
        raise ValueError(f"{_FIELDS_FILE}: field '{field}': {column} must be yes or no, not '{text}'")
    return _YES_NO[text]


def _event_type(_arg: str | None) -> Extractor:
    def extract(event: Event) -> Value:
        return event.type or None

    return with_inline(extract, InlineRead("", "({event}.type or None)"))


#: Extractor factories by field name.
_EXTRACTORS: dict[str, ExtractorFactory] = {
    "evt.type": _event_type, **EVT_EXTRACTORS, **PROC_EXTRACTORS, **FD_EXTRACTORS, **FSPATH_EXTRACTORS,
    **IDENTITY_EXTRACTORS,
}


@cache
def load_syscall_field_specs() -> tuple[FieldSpec, ...]:
    """The syscall-specific field specs from the TSV, without the generic `evt.*` ones.

    Raises ValueError naming the field and column when the data file is malformed.
    """
    specs: list[FieldSpec] = []
    for row in _read_rows(_FIELDS_FILE):
        name = row["name"]
        # DictReader pads short rows with None and files long ones under a None key.
        if tuple(row) != _COLUMNS or None in row.values():
            raise ValueError(f"{_FIELDS_FILE}: field '{name}': expected the columns {_COLUMNS}")
        spec = FieldSpec(
            name,
            FieldType.parse(row["type"]),
            row["description"],
            is_list=_parse_yes_no(row["list"], field=name, column="list"),
            arg=_parse_arg(row["arg"], field=name),
            flags=_parse_flags(row["flags"], field=name),
            dot_arg=_parse_yes_no(row["dot_arg"], field=name, column="dot_arg"),
        )
        if name in _EXTRACTORS:
            spec = replace(spec, extractor=_EXTRACTORS[name], comparator=FD_COMPARATORS.get(name))
        specs.append(spec)
    return tuple(specs)


@cache
def load_event_types() -> frozenset[str]:
    """Every name Falco accepts as an `evt.type` value for the syscall source."""
    return frozenset(row["name"] for row in _read_rows(_EVENT_TYPES_FILE))


#: Known `evt.type` values: Linux syscalls plus Falco's own event names (procexit, switch,
#: container, signaldeliver, pluginevent, asyncevent, ...). Used for the engine's
#: "unknown event type" check and for rules that name no event type.
SYSCALL_EVENT_TYPES: frozenset[str] = load_event_types()


#: Text fields read straight from the record's descriptor and thread, which the engine checks before a rule's
#: condition (`fd.name` of an open against the paths a rule is about). `fd.directory` and `fd.filename` are parts of
#: `fd.name` (fd_fields: all three derive from the name the descriptor or the failed open has). The one exception:
#: a failed connect on a file's descriptor has the address as fd.name, so a rule on the directory of such an event
#: would be skipped.
GUARD_FIELDS = ("fd.name", "fd.nameraw", "proc.name", "proc.pname", "proc.exe")


def syscall_source() -> SourceSpec:
    """The `syscall` source as the engine sees it; rules are bucketed by `evt.type`."""
    table = FieldTable([*generic_fields(), *load_syscall_field_specs()])
    # Falco warns (LOAD_NO_EVTTYPE) about a syscall rule that does not restrict evt.type.
    return SourceSpec(SOURCE_NAME, table, index_fields=("evt.type",), plugins=_PLUGINS, warn_unindexed=True,
                      guard_fields=GUARD_FIELDS, guard_paths=(PathParts("fd.name", "fd.directory", "fd.filename"),))
