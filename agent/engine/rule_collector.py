"""Rule items: full definitions, `override`/legacy-append updates and enable toggles."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.engine.exception_collector import merge_exceptions, read_exceptions
from agent.engine.infos import RuleDef
from agent.engine.load_result import ErrorCode, LoadResult, WarningCode
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
        exceptions=read_exceptions(item, result, defining=True),
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
    # As Falco, an empty `source:` on an update names no source, so it cannot conflict with the target's.
    source = item.get_str("source", result)
    if source and source != target.source:
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
            merge_exceptions(target, read_exceptions(item, result, defining=False), result)
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
        merge_exceptions(target, read_exceptions(item, result, defining=False), result)
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
        target.exceptions = read_exceptions(item, result, defining=True)
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
