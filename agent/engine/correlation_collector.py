"""Correlation items (`- correlation: name` with `sequence:` or `threshold:`): definitions, overrides, toggles.

A threshold is read as a sequence of one step with a count, so everything after this module handles one
shape. Times are kept in nanoseconds, like event times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from agent.engine.load_result import ErrorCode, LoadAborted, LoadResult
from agent.engine.reader import Item
from agent.engine.rule_collector import DEFAULT_SOURCE, priority_of, tags_of
from agent.location import Location
from agent.priority import Priority

if TYPE_CHECKING:
    from agent.engine.collector import Collector

CORRELATION_APPENDABLE = frozenset({"output", "desc", "tags"})
CORRELATION_REPLACEABLE = frozenset({"output", "desc", "priority", "tags", "enabled", "sequence", "threshold"})
#: Used when a correlation gives no `lateness`: covers the batching delay of webhooks and files.
DEFAULT_LATENESS_NS = 60 * 1_000_000_000
DEFAULT_MAX_KEYS = 10_000
_DURATION_RE = re.compile(r"([0-9]+)(ms|s|m|h|d)?")
_UNIT_NS = {"ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000,
            "d": 86_400_000_000_000}
_STEP_NAME_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9_]*")
_SEQUENCE_KEYS = frozenset({"window", "lateness", "max_keys", "source", "key", "steps"})
_STEP_KEYS = frozenset({"name", "source", "condition", "key", "count", "distinct", "absent", "within", "new_value"})
_THRESHOLD_KEYS = frozenset({"window", "lateness", "max_keys", "source", "condition", "key", "count", "distinct"})
_NEW_VALUE_KEYS = frozenset({"field", "per", "history"})


@dataclass(slots=True)
class NewValueDef:
    """Only a `field` value not seen for the same `per` key within `history_ns` lets the step match."""

    field: str
    per: list[str]
    history_ns: int


@dataclass(slots=True)
class StepDef:
    name: str
    source: str
    condition: str
    key: list[str]
    location: Location
    count: int = 1
    distinct: str | None = None
    absent: bool = False
    within_ns: int = 0
    new_value: NewValueDef | None = None


@dataclass(slots=True)
class MatchDef:
    """What a correlation matches: its steps, window, lateness tolerance and state limit."""

    kind: str
    steps: list[StepDef]
    window_ns: int
    lateness_ns: int
    max_keys: int


@dataclass(slots=True)
class CorrelationDef:
    name: str
    match: MatchDef
    output: str
    desc: str
    priority: Priority
    location: Location
    index: int
    enabled: bool = True
    tags: set[str] = field(default_factory=set)

    @property
    def sources(self) -> set[str]:
        return {step.source for step in self.match.steps}


def collect_correlation(collector: Collector, item: Item) -> None:
    """Apply one correlation item; raises LoadAborted after recording an error."""
    result = collector.result
    ops = collector.update_ops(item, {"append": CORRELATION_APPENDABLE, "replace": CORRELATION_REPLACEABLE})
    existing = collector.correlations.get(item.name)
    if ops is None and ("sequence" in item.present or "threshold" in item.present):
        _define(collector, item, existing)
        return
    if existing is None:
        if ops is not None:
            raise collector.missing_target(item)
        raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE, "correlation item has neither 'sequence' nor "
                           "'threshold' nor an update", item.location)
    if ops is None:
        if set(item.present) - {"correlation", "enabled"}:
            raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE, "keys of a defined correlation change only "
                               "with 'override'", item.location)
        existing.enabled = item.get_bool("enabled", result, True)
        return
    for key in (CORRELATION_REPLACEABLE | CORRELATION_APPENDABLE) & item.present - set(ops):
        raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE, f"key '{key}' must be named under 'override' to "
                           f"update correlation '{item.name}'", item.at(key))
    for key, op in ops.items():
        if op == "append" and key == "tags":
            existing.tags |= tags_of(item, result)
        elif op == "append":
            setattr(existing, key, f"{getattr(existing, key)} {item.get_str(key, result, required=True)}")
        elif key in ("sequence", "threshold"):
            existing.match = _match(item, result)
        elif key == "priority":
            existing.priority = priority_of(item, result)
        elif key == "tags":
            existing.tags = tags_of(item, result)
        elif key == "enabled":
            existing.enabled = item.get_bool("enabled", result, True)
        else:
            setattr(existing, key, (item.get_str(key, result, required=True) or "").strip())


def _define(collector: Collector, item: Item, existing: CorrelationDef | None) -> None:
    result = collector.result
    if "sequence" in item.present and "threshold" in item.present:
        raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE, "a correlation has 'sequence' or 'threshold', "
                           "not both", item.location)
    definition = CorrelationDef(
        name=item.name,
        match=_match(item, result),
        output=(item.get_str("output", result, required=True) or "").strip(),
        desc=item.get_str("desc", result, required=True) or "",
        priority=priority_of(item, result),
        location=item.location,
        index=existing.index if existing is not None else collector.next_position(),
        enabled=item.get_bool("enabled", result, True),
        tags=tags_of(item, result),
    )
    collector.correlations[item.name] = definition


def _match(item: Item, result: LoadResult) -> MatchDef:
    kind = "sequence" if "sequence" in item.present else "threshold"
    node = item.nodes[kind]
    spec = item.values[kind]
    where = _Where(item, result)
    if not isinstance(spec, dict):
        raise where.error(f"'{kind}' must be a mapping", node)
    where.check_keys(spec, _SEQUENCE_KEYS if kind == "sequence" else _THRESHOLD_KEYS, kind, node)
    default_key = where.fields(spec.get("key"), "key", node) if "key" in spec else []
    default_source = where.text(spec.get("source"), "source", node) if spec.get("source") is not None else None
    if kind == "threshold":
        if spec.get("count") is None:
            raise where.error("'count' is required", node)
        step_spec = {key: value for key, value in spec.items() if key in _STEP_KEYS}
        steps = [where.step({**step_spec, "name": "event"}, node, 0, default_source, default_key)]
    else:
        raw_steps = spec.get("steps")
        if not isinstance(raw_steps, list) or not raw_steps:
            raise where.error("'steps' must be a non-empty sequence of steps", node)
        step_nodes = _value_node(node, "steps").value  # type: ignore[union-attr]
        steps = [where.step(raw, step_node, i, default_source, default_key)
                 for i, (raw, step_node) in enumerate(zip(raw_steps, step_nodes, strict=True))]
        where.check_sequence(steps, node)
    window = where.duration(spec.get("window"), "window", node, required=True)
    lateness = where.duration(spec.get("lateness"), "lateness", node) if "lateness" in spec else DEFAULT_LATENESS_NS
    max_keys = where.number(spec.get("max_keys"), "max_keys", node) if "max_keys" in spec else DEFAULT_MAX_KEYS
    return MatchDef(kind, steps, window, lateness, max_keys)


class _Where:
    """Checks the nested values of one correlation item, and reports problems at their own lines."""

    def __init__(self, item: Item, result: LoadResult) -> None:
        self.item = item
        self.result = result

    def error(self, message: str, node: yaml.Node, step: str | None = None) -> LoadAborted:
        loc = self.item.location
        where = Location(loc.file, node.start_mark.line + 1, 0, loc.item_kind, loc.item_name)
        prefix = f"step '{step}': " if step else ""
        return self.result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE, prefix + message, where)

    def check_keys(self, spec: dict[str, Any], allowed: frozenset[str], what: str, node: yaml.Node,
                   step: str | None = None) -> None:
        for key in spec:
            if key not in allowed:
                raise self.error(f"unknown key '{key}' in {what}; known: {', '.join(sorted(allowed))}", node, step)

    def text(self, raw: Any, key: str, node: yaml.Node, step: str | None = None) -> str:
        if not isinstance(raw, str) or not raw.strip():
            raise self.error(f"'{key}' must be a non-empty string", node, step)
        return raw

    def fields(self, raw: Any, key: str, node: yaml.Node, step: str | None = None) -> list[str]:
        """Field names as a YAML sequence or one comma-separated string (`ka.target.namespace, ka.target.name`)."""
        if isinstance(raw, str):
            raw = _split_fields(raw)
        if not isinstance(raw, list) or not raw or any(not isinstance(f, str) or not f.strip() for f in raw):
            raise self.error(f"'{key}' must name one or more fields", node, step)
        return [f.strip() for f in raw]

    def number(self, raw: Any, key: str, node: yaml.Node, step: str | None = None) -> int:
        if not isinstance(raw, str) or not raw.isdigit() or int(raw) < 1:
            raise self.error(f"'{key}' must be a whole number of at least 1", node, step)
        return int(raw)

    def duration(self, raw: Any, key: str, node: yaml.Node, step: str | None = None, *, required: bool = False) -> int:
        if raw is None and not required:
            return 0
        match = _DURATION_RE.fullmatch(raw) if isinstance(raw, str) else None
        if match is None or (required and int(match.group(1)) == 0):
            raise self.error(f"'{key}' must be a duration such as 90s, 10m, 1h or 7d", node, step)
        return int(match.group(1)) * _UNIT_NS[match.group(2) or "s"]

    def step(self, raw: Any, node: yaml.Node, position: int, default_source: str | None,
             default_key: list[str]) -> StepDef:
        if not isinstance(raw, dict):
            raise self.error("a step must be a mapping", node)
        name = raw.get("name")
        if not isinstance(name, str) or not _STEP_NAME_RE.fullmatch(name):
            raise self.error(f"step {position + 1} needs a 'name' (letters, digits, _; it names the step in the "
                             "output: %name.field)", node)
        self.check_keys(raw, _STEP_KEYS, "a step", node, name)
        absent = self.item_bool(raw.get("absent"), "absent", node, name)
        count = self.number(raw["count"], "count", node, name) if raw.get("count") is not None else 1
        source = raw.get("source", default_source) or DEFAULT_SOURCE
        condition_node = _value_node(node, "condition") or node
        step = StepDef(
            name=name,
            source=self.text(source, "source", node, name),
            condition=self.text(raw.get("condition"), "condition", node, name),
            key=self.fields(raw["key"], "key", node, name) if "key" in raw else default_key,
            location=Location(self.item.location.file, condition_node.start_mark.line + 1, 0),
            count=count,
            distinct=self.text(raw["distinct"], "distinct", node, name) if "distinct" in raw else None,
            absent=absent,
            within_ns=self.duration(raw.get("within"), "within", node, name, required=absent),
            new_value=self.new_value(raw["new_value"], node, name) if "new_value" in raw else None,
        )
        if absent and (count > 1 or step.distinct or step.new_value):
            raise self.error("an absent step takes no 'count', 'distinct' or 'new_value'", node, name)
        if not absent and "within" in raw:
            raise self.error("'within' belongs to absent steps; the sequence has a 'window'", node, name)
        return step

    def new_value(self, raw: Any, node: yaml.Node, step: str) -> NewValueDef:
        if not isinstance(raw, dict):
            raise self.error("'new_value' must be a mapping with 'field', 'per' and 'history'", node, step)
        self.check_keys(raw, _NEW_VALUE_KEYS, "new_value", node, step)
        return NewValueDef(self.text(raw.get("field"), "new_value.field", node, step),
                           self.fields(raw.get("per"), "new_value.per", node, step),
                           self.duration(raw.get("history"), "new_value.history", node, step, required=True))

    def item_bool(self, raw: Any, key: str, node: yaml.Node, step: str) -> bool:
        if raw is None or raw in ("false", "False"):
            return False
        if raw in ("true", "True"):
            return True
        raise self.error(f"'{key}' must be true or false", node, step)

    def check_sequence(self, steps: list[StepDef], node: yaml.Node) -> None:
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise self.error("step names must differ from each other", node)
        if any(s.absent for s in steps[:-1]) or steps[0].absent:
            raise self.error("only the last step may be absent, and not the only one", node)
        widths = {len(s.key) for s in steps}
        if len(widths) > 1:
            raise self.error("every step needs a key of as many fields as the others (they are joined in order)",
                             node)


def _split_fields(text: str) -> list[str]:
    """Split on commas outside brackets, so `json.value[/a,b]` stays one field."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "[" or ch == "("
        depth -= ch == "]" or ch == ")"
        if ch == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return out


def _value_node(node: yaml.Node, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == key:
                found: yaml.Node = value_node
                return found
    return None
