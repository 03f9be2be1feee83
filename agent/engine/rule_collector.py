"""Rule items: full definitions, `override`/legacy-append updates and enable toggles."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.engine.infos import ExceptionDef, RuleDef
from agent.engine.load_result import ErrorCode, LoadAborted, LoadResult, WarningCode
from agent.engine.reader import Item
from agent.priority import Priority

if TYPE_CHECKING:
    from agent.engine.collector import Collector

RULE_APPENDABLE = frozenset({"condition", "output", "desc", "tags", "exceptions"})
RULE_REPLACEABLE = frozenset({
    "condition", "output", "desc", "priority", "tags", "exceptions", "enabled", "capture",
    "capture_duration", "warn_evttypes", "skip-if-unknown-filter",
})
DEFAULT_SOURCE = "syscall"
_DEFINING_KEYS = ("condition", "output", "desc", "priority")
_LIST_COMPS = frozenset({"in", "pmatch", "intersects"})


def collect_rule(collector: Collector, item: Item) -> None:
    """Apply one rule item to the collector's rules; raises LoadAborted after recording an error."""
    result = collector.result
    ops = collector.update_ops(item, {"append": RULE_APPENDABLE, "replace": RULE_REPLACEABLE})
    if ops is not None:
        _update(collector, item, ops)
    elif item.get_bool("append", result, False):
        _legacy_append(collector, item)
    elif any(key in item.present for key in _DEFINING_KEYS):
        _define(collector, item)
    elif "enabled" in item.present:
        target = collector.rules.get(item.name)
        if target is None:
            raise result.error(ErrorCode.LOAD_ERR_VALIDATE,
                               f"rule '{item.name}' is enabled or disabled before it is defined", item.location)
        result.warn(WarningCode.LOAD_DEPRECATED_ITEM, "enabling a rule with a bare 'enabled' key is deprecated, "
                    "use 'override: {enabled: replace}'", item.location)
        target.enabled = item.get_bool("enabled", result, True)
    else:
        raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE, "rule item has neither a definition nor an update",
                           item.location)


def _define(collector: Collector, item: Item) -> None:
    result = collector.result
    values = {key: item.get_str(key, result, required=True) for key in _DEFINING_KEYS}
    source = item.get_str("source", result) or DEFAULT_SOURCE
    priority = priority_of(item, result)
    rule = RuleDef(
        name=item.name,
        condition=values["condition"] or "",
        output=(values["output"] or "").strip(),
        desc=values["desc"] or "",
        priority=priority,
        source=source,
        location=item.at("condition"),
        index=0,
        visibility=0,
        enabled=item.get_bool("enabled", result, True),
        tags=tags_of(item, result),
        exceptions=_exceptions(item, result, defining=True),
        warn_evttypes=item.get_bool("warn_evttypes", result, True),
        skip_if_unknown_filter=item.get_bool("skip-if-unknown-filter", result, False),
        capture=item.get_bool("capture", result, False),
        capture_duration_ms=_int(item, "capture_duration", result),
        source_known=source in collector.known_sources,
    )
    existing = collector.rules.get(item.name)
    if existing is not None:
        if existing.source != rule.source:
            raise result.error(
                ErrorCode.LOAD_ERR_VALIDATE,
                f"rule '{item.name}' is redefined with source '{rule.source}' but was defined with "
                f"source '{existing.source}'",
                item.location,
            )
        rule.index = existing.index
    else:
        rule.index = collector.next_position()
    rule.visibility = rule.index if existing is None else collector.next_position()
    collector.rules[item.name] = rule
    if not rule.source_known:
        result.warn(WarningCode.LOAD_UNKNOWN_SOURCE, f"unknown source {rule.source}, skipping", item.location)


def _target(collector: Collector, item: Item) -> RuleDef:
    result = collector.result
    target = collector.rules.get(item.name)
    if target is None:
        raise collector.missing_target(item)
    source = item.get_str("source", result)
    if source is not None and source != target.source:
        raise result.error(ErrorCode.LOAD_ERR_VALIDATE,
                           f"rule '{item.name}' is updated with source '{source}' but was defined with "
                           f"source '{target.source}'", item.location)
    return target


def _update(collector: Collector, item: Item, ops: dict[str, str]) -> None:
    result = collector.result
    for key in RULE_REPLACEABLE | RULE_APPENDABLE:
        if key in item.present and key not in ops:
            raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE,
                               f"key '{key}' must be named under 'override' to update rule '{item.name}'",
                               item.at(key))
    target = _target(collector, item)
    appends = [key for key, op in ops.items() if op == "append"]
    replaces = [key for key, op in ops.items() if op == "replace"]
    for key in appends:
        if key == "tags":
            target.tags |= tags_of(item, result)
        elif key == "exceptions":
            _merge_exceptions(target, _exceptions(item, result, defining=False), result)
        else:
            text = item.get_str(key, result, required=True) or ""
            _append_text(target, key, text)
    for key in replaces:
        _replace(target, key, item, result)
    target.visibility = collector.next_position()


def _legacy_append(collector: Collector, item: Item) -> None:
    result = collector.result
    result.warn(WarningCode.LOAD_DEPRECATED_ITEM, "'append: true' is deprecated, use 'override'", item.at("append"))
    if "condition" not in item.present and "exceptions" not in item.present:
        raise result.error(ErrorCode.LOAD_ERR_VALIDATE,
                           f"appending to rule '{item.name}' needs 'condition' or 'exceptions'", item.location)
    target = _target(collector, item)
    if "condition" in item.present:
        _append_text(target, "condition", item.get_str("condition", result, required=True) or "")
    if "exceptions" in item.present:
        _merge_exceptions(target, _exceptions(item, result, defining=False), result)
    target.visibility = collector.next_position()


def _append_text(target: RuleDef, key: str, text: str) -> None:
    attr = {"condition": "condition", "output": "output", "desc": "desc"}[key]
    setattr(target, attr, f"{getattr(target, attr)} {text}")


def _replace(target: RuleDef, key: str, item: Item, result: LoadResult) -> None:
    if key in ("condition", "output", "desc"):
        text = item.get_str(key, result, required=True) or ""
        setattr(target, key, text.strip() if key == "output" else text)
    elif key == "priority":
        target.priority = priority_of(item, result)
    elif key == "tags":
        target.tags = tags_of(item, result)
    elif key == "exceptions":
        target.exceptions = _exceptions(item, result, defining=True)
    elif key == "enabled":
        target.enabled = item.get_bool("enabled", result, True)
    elif key == "capture":
        target.capture = item.get_bool("capture", result, False)
    elif key == "capture_duration":
        target.capture_duration_ms = _int(item, "capture_duration", result)
    elif key == "warn_evttypes":
        target.warn_evttypes = item.get_bool("warn_evttypes", result, True)
    else:
        target.skip_if_unknown_filter = item.get_bool("skip-if-unknown-filter", result, False)


def priority_of(item: Item, result: LoadResult) -> Priority:
    text = item.get_str("priority", result, required=True) or ""
    try:
        return Priority.parse(text)
    except ValueError as exc:
        raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE, str(exc), item.at("priority")) from None


def _int(item: Item, key: str, result: LoadResult) -> int:
    raw = item.values.get(key)
    if raw is None:
        return 0
    if not isinstance(raw, str) or not raw.isdigit():
        raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE, f"'{key}' must be a whole number", item.at(key))
    return int(raw)


def tags_of(item: Item, result: LoadResult) -> set[str]:
    raw = item.values.get("tags")
    if raw is None:
        return set()
    if not isinstance(raw, list) or any(not isinstance(t, str) for t in raw):
        raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE, "'tags' must be a sequence of strings",
                           item.at("tags"))
    return set(raw)


def _exceptions(item: Item, result: LoadResult, *, defining: bool) -> list[ExceptionDef]:
    raw = item.values.get("exceptions")
    if raw is None:
        return []
    loc = item.at("exceptions")
    if not isinstance(raw, list):
        raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE, "'exceptions' must be a sequence", loc)
    out: list[ExceptionDef] = []
    seen: set[str] = set()
    for entry in raw:
        if not isinstance(entry, dict):
            raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE, "an exception must be a mapping", loc)
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE, "an exception needs a non-empty 'name'", loc)
        if name in seen:
            result.warn(WarningCode.LOAD_EXCEPTION_NAME_NOT_UNIQUE,
                        f"exception name '{name}' is used more than once in this rule", loc)
        seen.add(name)
        out.append(_exception(entry, name, item, result, defining=defining))
    return out


def _exception(entry: dict[str, Any], name: str, item: Item, result: LoadResult, *, defining: bool) -> ExceptionDef:
    loc = item.at("exceptions")

    def bad(message: str, code: ErrorCode = ErrorCode.LOAD_ERR_YAML_VALIDATE) -> LoadAborted:
        return result.error(code, f"exception '{name}': {message}", loc)

    # Wrong YAML types are LOAD_ERR_YAML_VALIDATE; shapes that do not fit together, as Falco's
    # collector checks them, are LOAD_ERR_VALIDATE.
    shape = ErrorCode.LOAD_ERR_VALIDATE
    fields = entry.get("fields")
    comps = entry.get("comps")
    values = entry.get("values")
    if defining and fields is None:
        raise bad("'fields' is required", shape)
    if isinstance(fields, list):
        if any(not isinstance(f, str) or not f for f in fields):
            raise bad("'fields' must hold field names")
        if comps is None:
            comps = ["="] * len(fields)
        if not isinstance(comps, list):
            raise bad("'comps' must be a sequence when 'fields' is one")
        if len(comps) != len(fields):
            raise bad("'comps' must be as long as 'fields'", shape)
        comps = [str(c).strip() for c in comps]
    elif fields is not None:
        if not isinstance(fields, str):
            raise bad("'fields' must be a field name or a sequence of them")
        comps = "in" if comps is None else str(comps).strip()
        if comps not in _LIST_COMPS and len(comps.split()) != 2:
            raise bad(f"comparison '{comps}' needs a list: use in, pmatch, intersects or an operator with a "
                      "modifier", shape)
    if values is None:
        values = []
    if not isinstance(values, list):
        raise bad("'values' must be a sequence")
    if isinstance(fields, str) and any(isinstance(v, (list, dict)) for v in values):
        raise bad("values of a single-field exception must be scalars", shape)
    return ExceptionDef(name, fields, comps, values, loc)


def _merge_exceptions(target: RuleDef, incoming: list[ExceptionDef], result: LoadResult) -> None:
    by_name = {ex.name: ex for ex in target.exceptions}
    for ex in incoming:
        if not ex.values:
            result.warn(WarningCode.LOAD_APPEND_NO_VALUES,
                        f"appended exception '{ex.name}' brings no values", ex.location)
        known = by_name.get(ex.name)
        if known is not None:
            if ex.fields is not None or ex.comps is not None:
                raise result.error(ErrorCode.LOAD_ERR_VALIDATE,
                                   f"exception '{ex.name}' already exists: an append may only bring values",
                                   ex.location)
            known.values = known.values + ex.values
        else:
            if ex.fields is None or not ex.values:
                raise result.error(ErrorCode.LOAD_ERR_VALIDATE,
                                   f"new exception '{ex.name}' appended to rule '{target.name}' needs 'fields' "
                                   "and 'values'", ex.location)
            target.exceptions.append(ex)
            by_name[ex.name] = ex
