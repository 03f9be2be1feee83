"""Turns a rule's exceptions into condition text appended as `and not (...)`, as Falco does."""

from __future__ import annotations

from agent.engine.exception_collector import is_list_comp
from agent.engine.infos import ExceptionDef
from agent.engine.macros import quote_item


class ExceptionShapeError(ValueError):
    """An exception's values do not fit its fields; `exception` names which one."""

    def __init__(self, message: str, exception: ExceptionDef) -> None:
        super().__init__(message)
        self.exception = exception


def _values_text(values: list[object]) -> str:
    return ", ".join(quote_item(str(v)) for v in values)


def exception_text(ex: ExceptionDef) -> str | None:
    """The `(...)` text that matches the exception, or None when it has no values yet."""
    if not ex.values:
        return None
    if isinstance(ex.fields, str):
        return f"({ex.fields} {ex.comps} ({_values_text(ex.values)}))"
    fields = ex.fields or []
    comps = ex.comps if isinstance(ex.comps, list) else []
    tuples = []
    for value in ex.values:
        if not isinstance(value, list):
            raise ExceptionShapeError("each value must be a sequence with one entry per field", ex)
        if len(value) != len(fields):
            raise ExceptionShapeError(
                f"Fields and values lists must have equal length: a value has {len(value)} entries for "
                f"{len(fields)} fields", ex)
        terms = []
        for field, comp, entry in zip(fields, comps, value, strict=True):
            if isinstance(entry, list):
                rhs = f"({_values_text(entry)})"
            elif is_list_comp(comp):
                text = str(entry)
                rhs = text if text.startswith("(") else f"({text})"
            else:
                rhs = quote_item(str(entry))
            terms.append(f" {field} {comp} {rhs}")
        tuples.append("(" + " and ".join(terms) + ")")
    return "(" + " or ".join(tuples) + ")"


def condition_with_exceptions(condition: str, exceptions: list[ExceptionDef]) -> str:
    """The rule condition text with one `and not (...)` per exception that has values."""
    text = f"({condition})"
    for ex in exceptions:
        part = exception_text(ex)
        if part is not None:
            text += f" and not {part}"
    return text
