"""Expansion passes: lists into condition text (Falco's textual substitution), macros into trees."""

from __future__ import annotations

from dataclasses import replace

from agent.engine.ast import And, Check, Expr, MacroRef, Not, Or
from agent.engine.infos import ListDef, MacroDef

_BOUNDARY = frozenset(" \t\n\r(),=")
_BLANKS = " \t\n\r"


def quote_item(item: str) -> str:
    """Wrap a value holding a space in double quotes unless it is already quoted."""
    if " " in item and not item.startswith(('"', "'")):
        return f'"{item}"'
    return item


class ListExpander:
    """Resolves list items (lists of lists) and substitutes lists into condition text."""

    def __init__(self, lists: dict[str, ListDef]) -> None:
        self._lists = lists
        self._expanded: dict[str, list[str]] = {}
        # Substitution order is list definition order; it matters when an item names a later list.
        self._ordered = sorted(lists.values(), key=lambda d: d.index)
        self._replacements: dict[str, str] | None = None

    def items(self, name: str, _active: frozenset[str] = frozenset()) -> list[str]:
        """A list's items with earlier-defined lists inlined."""
        cached = self._expanded.get(name)
        if cached is not None:
            return cached
        definition = self._lists[name]
        out: list[str] = []
        for item in definition.items:
            inner = self._lists.get(item)
            if inner is not None and inner.index < definition.visibility and item not in _active:
                inner.used = True
                out.extend(self.items(item, _active | {name}))
            else:
                out.append(item)
        self._expanded[name] = out
        return out

    def substitute(self, text: str) -> str:
        """Replace every list name standing alone in `text` by its items, list by list."""
        if self._replacements is None:
            self._replacements = {d.name: ", ".join(quote_item(i) for i in self.items(d.name)) for d in self._ordered}
        for definition in self._ordered:
            name = definition.name
            if name not in text:
                continue
            new_text = _substitute_one(text, name, self._replacements[name])
            if new_text is not text:
                definition.used = True
                text = new_text
        return text


def _substitute_one(text: str, name: str, replacement: str) -> str:
    pos = 0
    while True:
        start = text.find(name, pos)
        if start < 0:
            return text
        end = start + len(name)
        if (start > 0 and text[start - 1] not in _BOUNDARY) or (end < len(text) and text[end] not in _BOUNDARY):
            pos = start + 1
            continue
        before = text[:start].rstrip(_BLANKS)
        after = text[end:].lstrip(_BLANKS)
        if not replacement:
            if before.endswith(","):
                before = before[:-1]
            elif after.startswith(","):
                after = after[1:]
        text = f"{before} {replacement} {after}"
        pos = len(before) + len(replacement) + 2


class MacroError(ValueError):
    """A macro reference that cannot be resolved; `ref` is where it was written."""

    def __init__(self, message: str, ref: MacroRef) -> None:
        super().__init__(message)
        self.ref = ref


class MacroExpander:
    """Expands macro references structurally, each macro seeing only macros defined before it."""

    def __init__(self, macros: dict[str, MacroDef], trees: dict[str, Expr]) -> None:
        self._macros = macros
        self._trees = trees
        self._resolved: dict[str, Expr] = {}
        self._active: list[str] = []

    def resolve_macro(self, name: str) -> Expr:
        """The macro's tree with its own references expanded (memoised)."""
        done = self._resolved.get(name)
        if done is not None:
            return done
        self._active.append(name)
        try:
            expanded = self.expand(self._trees[name], self._macros[name].visibility)
        finally:
            self._active.pop()
        self._resolved[name] = expanded
        return expanded

    def expand(self, expr: Expr, visibility: int | None = None) -> Expr:
        """Replace every macro reference in `expr`; `visibility` None means every macro is visible."""
        if isinstance(expr, MacroRef):
            definition = self._macros.get(expr.name)
            if definition is None or expr.name not in self._trees or (
                visibility is not None and definition.index >= visibility
            ):
                raise MacroError(f"Undefined macro '{expr.name}' used in filter.", expr)
            if expr.name in self._active:
                raise MacroError(f"reference loop in macro '{expr.name}'", expr)
            definition.used = True
            return self.resolve_macro(expr.name)
        if isinstance(expr, (And, Or)):
            return replace(expr, children=tuple(self.expand(c, visibility) for c in expr.children))
        if isinstance(expr, Not):
            return replace(expr, child=self.expand(expr.child, visibility))
        assert isinstance(expr, Check)
        return expr
