"""A rule item's `exceptions`: read, checked for shape as Falco's collector checks them, merged on append.

Problems name the exception item itself (Falco's item type `exception`, inside the rule), not the rule: wrong
YAML (no name, no fields, wrong types) is LOAD_ERR_YAML_VALIDATE; shapes that do not fit together (comps against
fields, unknown comparison operators) are LOAD_ERR_VALIDATE.
"""

from __future__ import annotations

from typing import Any

import yaml

from agent.engine.infos import ExceptionDef, RuleDef
from agent.engine.load_result import ErrorCode, LoadAborted, LoadResult, WarningCode
from agent.engine.operators import LIST_OPS, MODIFIABLE_OPS, NUM_OPS
from agent.engine.parser import MODIFIERS
from agent.engine.reader import Item
from agent.location import Location

EXCEPTION = "exception"
EXCEPTIONS = "exceptions"
#: Every operator a condition knows, which a tuple-form exception may use as a comparison.
_COMPS = NUM_OPS | LIST_OPS | MODIFIABLE_OPS | {"exists"}
#: `<op> <modifier>` (`= oneof`): compares against a list, like `in`.
_MODIFIED_COMPS = frozenset(f"{op} {modifier}" for op in MODIFIABLE_OPS for modifier in MODIFIERS)


def is_list_comp(comp: str) -> bool:
    """A comparison whose right-hand side is a list of values."""
    return comp in LIST_OPS or comp in _MODIFIED_COMPS


def read_exceptions(item: Item, result: LoadResult, *, defining: bool) -> list[ExceptionDef]:
    """The item's exceptions as written; with `defining` each needs `fields` and is checked for shape (an
    appended one is checked when `merge_exceptions` finds it new). Raises LoadAborted after recording an error."""
    raw = item.values.get(EXCEPTIONS)
    if raw is None:
        return []
    node = item.nodes.get(EXCEPTIONS)
    exceptions_loc = _at(item, node, EXCEPTIONS, "", item.location)
    if not isinstance(raw, list) or not isinstance(node, yaml.SequenceNode):
        raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE, "Rule exceptions must be a sequence", exceptions_loc)
    out: list[ExceptionDef] = []
    for entry, entry_node in zip(raw, node.value, strict=True):
        unnamed = _at(item, entry_node, EXCEPTION, "", exceptions_loc)
        if not isinstance(entry, dict):
            raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE, "Rule exception must be a mapping", unnamed)
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            message = "Item has no mapping for key 'name'" if "name" not in entry else "Mapping for key 'name' is empty"
            raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE, message, unnamed)
        loc = _at(item, entry_node, EXCEPTION, name, item.location)
        if any(ex.name == name for ex in out):
            result.warn(WarningCode.LOAD_EXCEPTION_NAME_NOT_UNIQUE,
                        f"Multiple definitions of exception '{name}' in rule '{item.name}'", loc)
        ex = _read_exception(entry, name, loc, result, defining=defining)
        if defining:
            check_shape(ex, result)
        out.append(ex)
    return out


def _read_exception(entry: dict[str, Any], name: str, loc: Location, result: LoadResult, *,
                    defining: bool) -> ExceptionDef:
    def bad(message: str) -> LoadAborted:
        return result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE, message, loc)

    fields, comps, values = entry.get("fields"), entry.get("comps"), entry.get("values")
    if fields is None and defining:
        raise bad("Item has no mapping for key 'fields'")
    if fields is not None and not _texts_or_text(fields):
        raise bad("'fields' must be a field name or a sequence of field names")
    if comps is not None and not _texts_or_text(comps):
        raise bad("'comps' must be a comparison operator or a sequence of them")
    if values is None:
        values = []
    elif not isinstance(values, list):
        raise bad("Rule exception values must be a sequence")
    return ExceptionDef(name, fields, comps, values, loc)


def _texts_or_text(value: Any) -> bool:
    if isinstance(value, list):
        return all(isinstance(v, str) and v for v in value)
    return isinstance(value, str) and bool(value)


def check_shape(ex: ExceptionDef, result: LoadResult) -> None:
    """Fill in the default comparisons and check comps against fields (Falco's collector does it when an
    exception is defined or appended as new). Raises LoadAborted after recording an error."""
    def bad(message: str) -> LoadAborted:
        return result.error(ErrorCode.LOAD_ERR_VALIDATE, message, ex.location)

    if isinstance(ex.fields, list):
        comps = ["="] * len(ex.fields) if ex.comps is None else ex.comps
        if not isinstance(comps, list):
            raise bad("Fields and comps must both be sequences when fields is a sequence")
        if len(comps) != len(ex.fields):
            raise bad("Fields and comps lists must have equal length")
        ex.comps = [c.strip() for c in comps]
        for comp in ex.comps:
            if comp not in _COMPS and comp not in _MODIFIED_COMPS:
                raise bad(f"'{comp}' is not a supported comparison operator")
        return
    if isinstance(ex.comps, list):
        raise bad("Fields and comps must both be strings when fields is a single field")
    comp = "in" if ex.comps is None else ex.comps.strip()
    ex.comps = comp
    if not is_list_comp(comp):
        raise bad("When fields is a single value, comps must be one of (in, pmatch, intersects) or an operator "
                  "with a modifier")
    if any(isinstance(v, (list, dict)) for v in ex.values):
        raise bad("Values of a single-field exception must be scalars")


def merge_exceptions(target: RuleDef, incoming: list[ExceptionDef], result: LoadResult) -> None:
    """Append exceptions to a rule: a known name brings values only, a new one needs fields and values."""
    by_name = {ex.name: ex for ex in target.exceptions}
    for ex in incoming:
        if not ex.values:
            result.warn(WarningCode.LOAD_APPEND_NO_VALUES, "Overriding/appending exception with no values",
                        ex.location)
        known = by_name.get(ex.name)
        if known is not None:
            for key, value in (("fields", ex.fields), ("comps", ex.comps)):
                if value is not None:
                    raise result.error(ErrorCode.LOAD_ERR_VALIDATE,
                                       f"Can not append exception {key} to existing exception, only values",
                                       ex.location)
            known.values = known.values + ex.values
            continue
        if ex.fields is None:
            raise result.error(ErrorCode.LOAD_ERR_VALIDATE,
                               "Rule exception must have fields property with a list of fields", ex.location)
        if not ex.values:
            raise result.error(ErrorCode.LOAD_ERR_VALIDATE,
                               "Rule exception must have values property with a list of values", ex.location)
        check_shape(ex, result)
        target.exceptions.append(ex)
        by_name[ex.name] = ex


def _at(item: Item, node: yaml.Node | None, kind: str, name: str, parent: Location) -> Location:
    if node is None:
        return Location(item.location.file, item.location.line, 0, kind, name, parent)
    return Location(item.location.file, node.start_mark.line + 1, node.start_mark.column + 1, kind, name, parent)
