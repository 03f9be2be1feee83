"""Where something came from: file, line, column and the rules item it belongs to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Location:
    """A position in an input file; `line` and `column` are 1-based, 0 when unknown.

    `item_kind`/`item_name` name the rules item (``rule 'Write below etc'``); `parent` chains a
    position inside an expanded condition back to the YAML item that holds it.
    """

    file: str = ""
    line: int = 0
    column: int = 0
    item_kind: str = ""
    item_name: str = ""
    parent: Location | None = None

    def __str__(self) -> str:
        where = self.file or "<input>"
        if self.line:
            where += f":{self.line}"
            if self.column:
                where += f":{self.column}"
        if self.item_kind:
            where += f" {self.item_kind} '{self.item_name}'"
        return where

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "item_type": self.item_kind,
            "item_name": self.item_name,
        }
