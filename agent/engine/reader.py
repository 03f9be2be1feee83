"""Reads rules YAML into plain items with positions; checks document shape and known keys."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from agent.engine.load_result import ErrorCode, LoadResult, WarningCode
from agent.location import Location

try:
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pyyaml built without libyaml
    _Loader = yaml.SafeLoader

#: Item kinds in the order Falco tests for their keys.
#: `correlation` is ours: Falco warns about it as an unknown item and loads the rest of the file.
ITEM_KINDS = ("required_engine_version", "required_plugin_versions", "list", "macro", "rule", "correlation")
NAMED_KINDS = ("list", "macro", "rule", "correlation")
KNOWN_KEYS = {
    "required_engine_version": {"required_engine_version"},
    "required_plugin_versions": {"required_plugin_versions"},
    "list": {"list", "items", "append", "override"},
    "macro": {"macro", "condition", "append", "override"},
    "rule": {
        "rule", "condition", "output", "desc", "priority", "source", "enabled", "capture",
        "capture_duration", "warn_evttypes", "skip-if-unknown-filter", "tags", "exceptions",
        "override", "append",
    },
    "correlation": {"correlation", "sequence", "threshold", "output", "desc", "priority", "enabled", "tags",
                    "override"},
}
_TRUE = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON", "y", "Y"}
_FALSE = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF", "n", "N"}
_NULL_TAG = "tag:yaml.org,2002:null"


@dataclass(slots=True)
class Item:
    """One element of a rules document: its kind, name, raw values and where each key sits.

    Scalars keep their YAML text (`0755` stays `"0755"`); a null scalar is None.
    """

    kind: str
    name: str
    values: dict[str, Any]
    lines: dict[str, int]
    location: Location
    present: set[str] = field(default_factory=set)
    #: The YAML node of each key's value, for readers that need positions inside nested values.
    nodes: dict[str, yaml.Node] = field(default_factory=dict)

    def at(self, key: str) -> Location:
        """The location of one key's value inside this item."""
        line = self.lines.get(key, self.location.line)
        return Location(self.location.file, line, 0, self.location.item_kind, self.location.item_name)

    def get_bool(self, key: str, result: LoadResult, default: bool) -> bool:
        raw = self.values.get(key)
        if raw is None:
            return default
        if isinstance(raw, str) and raw in _TRUE:
            return True
        if isinstance(raw, str) and raw in _FALSE:
            return False
        raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE, f"'{key}' must be a boolean", self.at(key))

    def get_str(self, key: str, result: LoadResult, *, required: bool = False) -> str | None:
        raw = self.values.get(key)
        if raw is None or raw == "":
            if required:
                raise result.error(
                    ErrorCode.LOAD_ERR_YAML_VALIDATE, f"item has no mandatory key '{key}'", self.at(key)
                )
            return None if raw is None else raw
        if not isinstance(raw, str):
            raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE, f"'{key}' must be a string", self.at(key))
        return raw


def read_items(text: str, file: str, result: LoadResult) -> Iterator[Item]:
    """Yield the items of every document in order; stop at the first structural error.

    Raises LoadAborted (already recorded in `result`) when the text cannot be used.
    """
    try:
        documents = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1 if mark else 0, mark.column + 1 if mark else 0)
        raise result.error(ErrorCode.LOAD_ERR_YAML_PARSE, f"invalid YAML: {exc.problem}", loc) from None
    except yaml.YAMLError as exc:
        raise result.error(ErrorCode.LOAD_ERR_YAML_PARSE, f"invalid YAML: {exc}", Location(file)) from None
    for document in documents:
        if document is None or (isinstance(document, yaml.ScalarNode) and document.tag == _NULL_TAG):
            continue
        if not isinstance(document, yaml.SequenceNode):
            raise result.error(
                ErrorCode.LOAD_ERR_YAML_VALIDATE,
                "rules content is not a sequence of items",
                _node_location(file, document),
            )
        for element in document.value:
            if isinstance(element, yaml.ScalarNode) and element.tag == _NULL_TAG:
                continue
            if not isinstance(element, yaml.MappingNode):
                raise result.error(
                    ErrorCode.LOAD_ERR_YAML_VALIDATE, "item is not a mapping", _node_location(file, element)
                )
            item = _read_item(element, file, result)
            if item is not None:
                yield item


def _read_item(node: yaml.MappingNode, file: str, result: LoadResult) -> Item | None:
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    nodes: dict[str, yaml.Node] = {}
    for key_node, value_node in node.value:
        key = str(to_python(key_node))
        values[key] = to_python(value_node)
        lines[key] = value_node.start_mark.line + 1
        nodes[key] = value_node
    kind = next((k for k in ITEM_KINDS if k in values), None)
    if kind is None:
        loc = _node_location(file, node)
        result.warn(WarningCode.LOAD_UNKNOWN_ITEM, "unknown top level item", loc)
        return None
    name_value = values[kind]
    name = name_value if isinstance(name_value, str) else ""
    item_kind = {"required_engine_version": "required_engine_version",
                 "required_plugin_versions": "required_plugin_versions"}.get(kind, kind)
    loc = Location(file, node.start_mark.line + 1, node.start_mark.column + 1, item_kind, name)
    item = Item(kind, name, values, lines, loc, present=set(values), nodes=nodes)
    for key in values:
        if key not in KNOWN_KEYS[kind]:
            result.warn(WarningCode.LOAD_UNKNOWN_KEY, f"unknown key '{key}', ignored", item.at(key))
    if kind in NAMED_KINDS and (not isinstance(name_value, str) or not name_value):
        raise result.error(
            ErrorCode.LOAD_ERR_YAML_VALIDATE, f"item has no mandatory key '{kind}' with a name", loc
        )
    return item


def to_python(node: yaml.Node) -> Any:
    """YAML node to Python: scalars stay text (null becomes None), sequences and maps recurse."""
    if isinstance(node, yaml.ScalarNode):
        if node.tag == _NULL_TAG and node.style is None:
            return None
        return node.value
    if isinstance(node, yaml.SequenceNode):
        return [to_python(child) for child in node.value]
    return {str(to_python(k)): to_python(v) for k, v in node.value}


def _node_location(file: str, node: yaml.Node) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)
