"""Expansion passes: lists into condition text (Falco's textual substitution), macros into trees.

Bounds, which no real rule comes near (upstream: conditions of at most 2,647 characters with lists substituted,
macros 3 deep, rules of at most 124 checks and operators nesting 7 levels once expanded): a condition may not grow
past MAX_CONDITION_LENGTH characters as lists are substituted; with its macros expanded it may hold at most
parser.MAX_NODES checks and operators, nest and/or/not at most parser.MAX_DEPTH levels, and reach a macro through at
most parser.MAX_DEPTH macros. Expanded macros are shared, not copied, and their sizes are remembered: a macro built
from two uses of the previous one, thirty times over, is measured and refused, never built.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from agent.engine.ast import Check, Expr, MacroRef, Not, Pos
from agent.engine.infos import ListDef, MacroDef
from agent.engine.parser import MAX_DEPTH, MAX_NODES

MAX_CONDITION_LENGTH = 1024 * 1024
_BOUNDARY = frozenset(" \t\n\r(),=")
_BLANKS = " \t\n\r"
_LEADING_BLANKS = re.compile(r"[ \t\n\r]*")


def quote_item(item: str) -> str:
    """Wrap a value holding a space in double quotes unless it is already quoted."""
    if " " in item and not item.startswith(('"', "'")):
        return f'"{item}"'
    return item


class ConditionTooLong(ValueError):
    """A condition, or a list it uses, is longer than MAX_CONDITION_LENGTH characters once lists are substituted."""


class ListExpander:
    """Resolves list items (lists of lists) and substitutes lists into condition text."""

    def __init__(self, lists: dict[str, ListDef]) -> None:
        self._lists = lists
        # Substitution order is list definition order; it matters when an item names a later list.
        self._ordered = sorted(lists.values(), key=lambda d: d.index)
        self._replacements: dict[str, str] = {}
        # As in Falco, a list inlined into another one counts as used, whether or not a condition uses the other.
        for definition in self._ordered:
            for item in definition.items:
                inner = lists.get(item)
                if inner is not None and inner.index < definition.visibility:
                    inner.used = True

    def items(self, name: str) -> Iterator[str]:
        """A list's items, an item naming an earlier-defined list replaced by that list's own items (one level,
        as Falco inlines them)."""
        definition = self._lists[name]
        for item in definition.items:
            inner = self._lists.get(item)
            if inner is not None and inner.index < definition.visibility:
                yield from inner.items
            else:
                yield item

    def replacement(self, name: str) -> str:
        """The text a list stands for in a condition: its items, quoted where needed, joined by `, `."""
        text = self._replacements.get(name)
        if text is None:
            parts = []
            size = -2
            for item in self.items(name):
                part = quote_item(item)
                size += len(part) + 2
                if size > MAX_CONDITION_LENGTH:
                    raise ConditionTooLong(f"list '{name}' is longer than {MAX_CONDITION_LENGTH} characters")
                parts.append(part)
            text = self._replacements[name] = ", ".join(parts)
        return text

    def substitute(self, text: str) -> str:
        """Replace every list name standing alone in `text` by its items, list by list."""
        if len(text) > MAX_CONDITION_LENGTH:
            raise ConditionTooLong(f"condition is longer than {MAX_CONDITION_LENGTH} characters")
        for definition in self._ordered:
            if definition.name not in text:
                continue
            new_text = _substitute_one(text, definition.name, self.replacement)
            if new_text is not None:
                definition.used = True
                text = new_text
        return text


def _substitute_one(text: str, name: str, replacement: Callable[[str], str]) -> str | None:
    """`text` with each occurrence of `name` between boundaries replaced, or None when there is none.

    The blanks around an occurrence are swallowed and the items are spliced in as ` items `; an empty list also
    takes one adjacent comma, the left one first. The result is built piecewise, in time linear in its size, and
    refused once it passes MAX_CONDITION_LENGTH.
    """
    parts: list[str] = []
    size = 0
    done = search = 0  # text[:done] is in `parts`; the next occurrence is looked for from `search`
    while (start := text.find(name, search)) >= 0:
        end = start + len(name)
        # At `done` the result holds the blank that follows the previous substitution: a boundary.
        if (start > done and text[start - 1] not in _BOUNDARY) or (end < len(text) and text[end] not in _BOUNDARY):
            search = start + 1
            continue
        parts.append(text[done:start])
        size += start - done - _rstrip(parts)
        value = replacement(name)
        done = _LEADING_BLANKS.match(text, end).end()  # type: ignore[union-attr]
        if not value:
            if parts and parts[-1].endswith(","):
                parts[-1] = parts[-1][:-1]
                size -= 1
            elif text.startswith(",", done):
                done += 1
        parts += (" ", value, " ")
        size += len(value) + 2
        if size + len(text) - done > MAX_CONDITION_LENGTH:
            raise ConditionTooLong(f"condition is longer than {MAX_CONDITION_LENGTH} characters once list "
                                   f"'{name}' is substituted")
        search = done
    if not parts:
        return None
    parts.append(text[done:])
    return "".join(parts)


def _rstrip(parts: list[str]) -> int:
    """Drop the blanks that end the text `parts` make up; returns how many characters went."""
    removed = 0
    while parts:
        last = parts[-1]
        stripped = last.rstrip(_BLANKS)
        removed += len(last) - len(stripped)
        if stripped:
            parts[-1] = stripped
            break
        parts.pop()
    return removed


class MacroError(ValueError):
    """A macro reference that cannot be resolved, or an expansion past the bounds; `pos` is where it was found."""

    def __init__(self, message: str, pos: Pos) -> None:
        super().__init__(message)
        self.pos = pos


@dataclass(frozen=True, slots=True)
class Expanded:
    """A tree with its macros expanded, its count of checks and operators, and its levels of and/or/not."""

    tree: Expr
    nodes: int
    depth: int


class MacroExpander:
    """Expands macro references structurally, each macro seeing only macros defined before it."""

    def __init__(self, macros: dict[str, MacroDef], trees: dict[str, Expr]) -> None:
        self._macros = macros
        self._trees = trees
        self._resolved: dict[str, Expanded] = {}
        self._active: list[str] = []

    def resolve_macro(self, name: str, level: int = 1) -> Expanded:
        """The macro's tree with its own references expanded (memoised); `level` is where its root goes."""
        done = self._resolved.get(name)
        if done is not None:
            return done
        self._active.append(name)
        try:
            expanded = self._expand(self._trees[name], self._macros[name].visibility, level)
        finally:
            self._active.pop()
        self._resolved[name] = expanded
        return expanded

    def expand(self, expr: Expr, visibility: int | None = None) -> Expanded:
        """Replace every macro reference in `expr`; `visibility` None means every macro is visible."""
        return self._expand(expr, visibility, 1)

    def _expand(self, expr: Expr, visibility: int | None, level: int) -> Expanded:
        """`level` counts from the root of the outermost tree being expanded, across macros: it bounds the
        recursion as well as the result."""
        if level > MAX_DEPTH:
            raise MacroError(f"condition nests deeper than {MAX_DEPTH} levels once macros are expanded", expr.pos)
        if isinstance(expr, MacroRef):
            return self._reference(expr, visibility, level)
        if isinstance(expr, Check):
            return Expanded(expr, 1, 1)
        children = (expr.child,) if isinstance(expr, Not) else expr.children
        trees: list[Expr] = []
        nodes, depth = 1, 0
        for child in children:
            sub = self._expand(child, visibility, level + 1)
            trees.append(sub.tree)
            nodes += sub.nodes
            depth = max(depth, sub.depth)
            if nodes > MAX_NODES:
                raise MacroError(f"condition has more than {MAX_NODES} checks and operators once macros are "
                                 "expanded", expr.pos)
        tree = replace(expr, child=trees[0]) if isinstance(expr, Not) else replace(expr, children=tuple(trees))
        return Expanded(tree, nodes, depth + 1)

    def _reference(self, ref: MacroRef, visibility: int | None, level: int) -> Expanded:
        definition = self._macros.get(ref.name)
        if definition is None or ref.name not in self._trees or (
            visibility is not None and definition.index >= visibility
        ):
            raise MacroError(f"Undefined macro '{ref.name}' used in filter.", ref.pos)
        if ref.name in self._active:
            raise MacroError(f"reference loop in macro '{ref.name}'", ref.pos)
        if len(self._active) >= MAX_DEPTH:
            raise MacroError(f"macro '{ref.name}' is reached through more than {MAX_DEPTH} nested macros", ref.pos)
        definition.used = True
        expanded = self.resolve_macro(ref.name, level)
        if level + expanded.depth - 1 > MAX_DEPTH:
            raise MacroError(f"condition nests deeper than {MAX_DEPTH} levels once macro '{ref.name}' is expanded",
                             ref.pos)
        return expanded
