"""Falco's `append_output`: text and JSON output fields added, at rules load, to the outputs of the rules an entry
matches.

Entries are engine settings (agent.engine_setup maps the configuration onto them). Each rule's output is extended
by every entry whose `match` it meets, in entry order:

* `extra_output` follows the rule's text after a space; its fields join `output_fields` as the rule's own do.
* `suggested_output` then appends `key=%field` for each field the rule's source marks FORMAT_SUGGESTED (`key` is
  the field name with dots turned into underscores: `container_id=%container.id`), in the source's field order. A
  field the output already names is not appended again (Falco 0.41+ would print it twice).
* `extra_fields` add `output_fields` keys that the text does not show: a field by its own name with its typed
  value, or a name with the rendered text of a format. A later entry's key replaces an earlier one.

Each entry is compiled once per source, when the first rule of that source meets it; a field the source cannot
extract fails the load with a LOAD_ERR_COMPILE_OUTPUT error that names the entry (`append_output[1].extra_fields`),
at the rule, unless the rule has `skip-if-unknown-filter`, as Falco does. Correlations keep their outputs as
written: they name fields by step, and an entry's formats name them bare.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from agent.engine.compiler import CompileError
from agent.engine.output_format import OutputFormat, compile_output, compile_value
from agent.engine.transformers import Getter
from agent.fields import FieldFlag, FieldTable
from agent.source import SourceSpec

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class AppendMatch:
    """Which rules an entry applies to: every condition given must hold; none given means every rule."""

    source: str = ""
    #: The rule must have all of these tags.
    tags: frozenset[str] = frozenset()
    rule: str = ""

    def matches(self, *, name: str, source: str, tags: Iterable[str]) -> bool:
        return ((not self.source or self.source == source) and (not self.rule or self.rule == name)
                and self.tags.issubset(tags))


@dataclass(frozen=True, slots=True)
class ExtraField:
    """One `extra_fields` key: `name` valued by the text of `format`, or, with no format, the field `name`."""

    name: str
    format: str = ""


@dataclass(frozen=True, slots=True)
class AppendOutput:
    """One `append_output` entry."""

    match: AppendMatch = field(default_factory=AppendMatch)
    extra_output: str = ""
    extra_fields: tuple[ExtraField, ...] = ()
    suggested_output: bool = False


@dataclass(frozen=True, slots=True)
class _CompiledEntry:
    """One entry compiled against one source's fields."""

    extra_output: OutputFormat | None
    #: (field name, `key=%field`) per suggested field of the source.
    suggested: tuple[tuple[str, OutputFormat], ...]
    extra_fields: tuple[tuple[str, Getter | OutputFormat], ...]


class OutputAppender:
    """The entries of one rules load, each compiled once per source on first use."""

    def __init__(self, entries: Sequence[AppendOutput], sources: dict[str, SourceSpec]) -> None:
        self._entries = tuple(entries)
        self._sources = sources
        self._compiled: dict[tuple[int, str], _CompiledEntry] = {}

    def extend(self, output: OutputFormat, *, name: str, source: str, tags: Iterable[str]) -> OutputFormat:
        """`output` of the rule `name` with every matching entry applied; CompileError names the entry."""
        tags = frozenset(tags)
        extra: dict[str, Getter | OutputFormat] = {}
        for index, entry in enumerate(self._entries):
            if not entry.match.matches(name=name, source=source, tags=tags):
                continue
            compiled = self._compile(index, source)
            if compiled.extra_output is not None:
                output = output.followed_by(compiled.extra_output)
            if compiled.suggested:
                named = {key for key, _get in output.fields}
                for field_name, suggestion in compiled.suggested:
                    if field_name not in named:
                        output = output.followed_by(suggestion)
                        named.add(field_name)  # the suggestion's only output_fields key
            extra.update(compiled.extra_fields)
        return output.with_output_fields(extra) if extra else output

    def _compile(self, index: int, source: str) -> _CompiledEntry:
        compiled = self._compiled.get((index, source))
        if compiled is None:
            compiled = self._compiled[index, source] = _compile_entry(index, self._entries[index],
                                                                      self._sources[source])
        return compiled


def _compile_entry(index: int, entry: AppendOutput, source: SourceSpec) -> _CompiledEntry:
    where = f"append_output[{index}]"
    extra_output = None
    if entry.extra_output:
        extra_output = _compiled(f"{where}.extra_output", source, compile_output, entry.extra_output)
    suggested: tuple[tuple[str, OutputFormat], ...] = ()
    if entry.suggested_output:
        suggested = tuple((name, _compiled(f"{where}.suggested_output", source, _suggestion, name))
                          for name in suggested_fields(source.fields))
    extra_fields: list[tuple[str, Getter | OutputFormat]] = []
    for position, extra in enumerate(entry.extra_fields):
        what = f"{where}.extra_fields[{position}] ({extra.name})"
        value: Getter | OutputFormat = (_compiled(what, source, compile_output, extra.format) if extra.format
                                        else _compiled(what, source, compile_value, extra.name))
        extra_fields.append((extra.name, value))
    return _CompiledEntry(extra_output, suggested, tuple(extra_fields))


def suggested_fields(table: FieldTable) -> list[str]:
    """The fields of a source (its own and its extractor plugins') marked for `suggested_output`, in table order."""
    return [spec.name for spec in table if FieldFlag.FORMAT_SUGGESTED in spec.flags]


def _suggestion(name: str, table: FieldTable) -> OutputFormat:
    return compile_output(f"{name.replace('.', '_')}=%{name}", table)


def _compiled(what: str, source: SourceSpec, build: Callable[[str, FieldTable], _T], text: str) -> _T:
    """`build(text, source's fields)`; a CompileError it raises names the entry and the source."""
    try:
        return build(text, source.fields)
    except CompileError as exc:
        raise CompileError(f"{what}, for source {source.name}: {exc.message}", exc.pos,
                           unknown_filter=exc.unknown_filter) from None
