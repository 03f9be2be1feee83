"""Syntax tree of a rule condition: frozen, slotted nodes, each with its position in the text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True, slots=True)
class Pos:
    """Offset (0-based) and line/column (1-based) of a node in the condition text."""

    index: int
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class FieldRef:
    """A field as written (`proc.aname[2]`); which field it is gets decided by the source's table."""

    name: str
    arg: str | None
    pos: Pos

    def __str__(self) -> str:
        return self.name if self.arg is None else f"{self.name}[{self.arg}]"


@dataclass(frozen=True, slots=True)
class StrLit:
    """A constant: a bare word, a quoted string (escapes already applied) or a number's text."""

    value: str
    pos: Pos
    quoted: bool = False
    is_number: bool = False


@dataclass(frozen=True, slots=True)
class ListLit:
    """A parenthesised list: constants in a check, or fields/transformers too inside a transformer."""

    items: tuple[Operand, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class Transform:
    """A transformer call (`tolower(x)`) or `val(x)`, with an optional trailing `[arg]`."""

    name: str
    args: tuple[Operand, ...]
    pos: Pos
    arg: str | None = None


@dataclass(frozen=True, slots=True)
class Check:
    """`lhs op rhs`: `rhs` is None for `exists`; `modifier` is oneof/anyof/allof or None."""

    lhs: FieldRef | Transform
    op: str
    rhs: Operand | None
    pos: Pos
    modifier: str | None = None


@dataclass(frozen=True, slots=True)
class MacroRef:
    """A bare identifier in check position: the name of a macro to expand."""

    name: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class Not:
    child: Expr
    pos: Pos


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Expr, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Expr, ...]
    pos: Pos


Operand = Union[FieldRef, StrLit, ListLit, Transform]  # noqa: UP007 (a runtime alias)
Expr = Union[Check, MacroRef, Not, And, Or]  # noqa: UP007


def walk(node: Expr):  # type: ignore[no-untyped-def]
    """Yield every boolean node of a tree, parents before children."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        if isinstance(current, (And, Or)):
            stack.extend(reversed(current.children))
        elif isinstance(current, Not):
            stack.append(current.child)
