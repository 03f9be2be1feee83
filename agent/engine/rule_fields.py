"""Which fields a compiled rule names, in its condition or its output, however they are spelled.

A source uses it to collect only what the loaded rules read: the kernel copies I/O buffers only for
the syscalls of the rules that name `evt.buffer`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from agent.engine.ast import Check, Expr, FieldRef, ListLit, Transform, walk
from agent.engine.output_format import OutputFormat
from agent.engine.ruleset import CompiledRule
from agent.fields import FieldTable, field_key


def canonical_keys(table: FieldTable, texts: Iterable[str]) -> frozenset[str]:
    """The field uses `texts` (`evt.buffer`, `evt.rawarg.data`, `evt.arg[data]`) in one spelling; unknown ones
    are left out."""
    return frozenset(key for text in texts if (key := _canonical(table, *_split(text))) is not None)


def names_any(rule: CompiledRule, table: FieldTable, keys: frozenset[str]) -> bool:
    """True when `rule` names one of `keys` (from canonical_keys) in its condition or its output."""
    if any(_canonical(table, ref.name, ref.arg) in keys for ref in condition_refs(rule.condition)):
        return True
    return any(_canonical(table, *_split(text)) in keys for text in _output_keys(rule.output))


def field_names(condition: Expr, output: OutputFormat | None = None) -> frozenset[str]:
    """The names of the fields a condition (and an output) read, without their arguments (`proc.aname`)."""
    names = {ref.name for ref in condition_refs(condition)}
    if output is not None:
        names |= {_split(text)[0] for text in _output_keys(output)}
    return frozenset(names)


def condition_refs(condition: Expr) -> Iterator[FieldRef]:
    """Every field a condition reads, transformer arguments and lists included."""
    for node in walk(condition):
        if isinstance(node, Check):
            yield from _operand_refs(node.lhs)
            if node.rhs is not None:
                yield from _operand_refs(node.rhs)


def _operand_refs(operand: object) -> Iterator[FieldRef]:
    if isinstance(operand, FieldRef):
        yield operand
    elif isinstance(operand, Transform):
        for arg in operand.args:
            yield from _operand_refs(arg)
    elif isinstance(operand, ListLit):
        for item in operand.items:
            yield from _operand_refs(item)


def _output_keys(output: OutputFormat) -> Iterator[str]:
    for key, _get in output.fields:
        yield key
    for _key, text in output.texts:
        yield from _output_keys(text)


def _split(text: str) -> tuple[str, str | None]:
    """`name[arg]`, `name["arg"]` or `name` (as field_key writes a field use) into name and argument."""
    if not text.endswith("]") or "[" not in text:
        return text, None
    name, arg = text[:-1].split("[", 1)
    return name, arg[1:-1] if arg[:1] in ("'", '"') else arg


def _canonical(table: FieldTable, name: str, arg: str | None) -> str | None:
    resolved = table.resolve(name, arg)
    return field_key(resolved[0].name, resolved[1]) if resolved is not None else None
