"""Reads rules YAML into plain items with positions; checks document shape and known keys."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from agent.engine.load_result import RULES_CONTENT, ErrorCode, LoadAborted, LoadResult, WarningCode
from agent.location import Location

try:
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pyyaml built without libyaml
    _Loader = yaml.SafeLoader

#: Bounds no real rules file meets (upstream falco_rules.yaml: 63,642 bytes, 1,547 YAML nodes, 6 levels of
#: collections). A file past them is refused before it can exhaust memory: a text of more than
#: MAX_FILE_BYTES; YAML nesting collections deeper than MAX_YAML_DEPTH; more than MAX_YAML_NODES nodes or
#: more than MAX_FILE_BYTES characters of scalar text once every alias is counted as what it repeats
#: (an alias bomb is refused before anything expands it).
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_YAML_NODES = 250_000
MAX_YAML_DEPTH = 100

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
#: Falco's item type for an element of a rules document that is not (yet) a list, macro or rule.
RULES_CONTENT_ITEM = "rules content item"


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


def file_too_large(size: int, file: str, result: LoadResult) -> LoadAborted:
    """Record (and return, to raise) the error for a rules file of `size` bytes over MAX_FILE_BYTES."""
    return result.error(ErrorCode.LOAD_ERR_FILE_READ, f"rules file is {size} bytes, more than the limit of "
                        f"{MAX_FILE_BYTES}", Location(file))


def read_items(text: str, file: str, result: LoadResult) -> Iterator[Item]:
    """Yield the items of every document in order; stop at the first structural error.

    Raises LoadAborted (already recorded in `result`) when the text cannot be used.
    """
    # A character is at most 4 bytes: only a text that could be over the limit is encoded to measure it.
    if len(text) > MAX_FILE_BYTES // 4:
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_FILE_BYTES:
            raise file_too_large(size, file, result)
    try:
        documents = compose_all(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1 if mark else 0, mark.column + 1 if mark else 0)
        message = str(exc.problem) if isinstance(exc, YamlLimitError) else f"invalid YAML: {exc.problem}"
        raise result.error(ErrorCode.LOAD_ERR_YAML_PARSE, message, loc) from None
    except yaml.YAMLError as exc:
        raise result.error(ErrorCode.LOAD_ERR_YAML_PARSE, f"invalid YAML: {exc}", Location(file)) from None
    for document in documents:
        if isinstance(document, yaml.ScalarNode) and document.tag == _NULL_TAG:
            continue
        if not isinstance(document, yaml.SequenceNode):
            # Falco's two wordings: a scalar is not rules YAML at all, a mapping is the wrong shape.
            shape = "yaml array of objects" if isinstance(document, yaml.MappingNode) else "yaml"
            raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE,
                               f"Rules content is not {shape}: a rules file is a sequence of items",
                               _node_location(file, document, RULES_CONTENT))
        for element in document.value:
            if isinstance(element, yaml.ScalarNode) and element.tag == _NULL_TAG:
                continue
            if not isinstance(element, yaml.MappingNode):
                raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE,
                                   "Unexpected element type: each item must be a mapping (list, macro, rule...)",
                                   _node_location(file, element, RULES_CONTENT_ITEM))
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
        loc = _node_location(file, node, RULES_CONTENT_ITEM)
        result.warn(WarningCode.LOAD_UNKNOWN_ITEM, "Unknown top level item", loc)
        return None
    name_value = values[kind]
    name = name_value if isinstance(name_value, str) else ""
    loc = Location(file, node.start_mark.line + 1, node.start_mark.column + 1, kind, name)
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


def compose_all(text: str) -> list[yaml.Node]:
    """The node graph of every document, as `yaml.compose_all` builds it, within the MAX_* bounds.

    Raises YamlLimitError past a bound, and pyyaml's errors for text that is not YAML.
    """
    return list(yaml.compose_all(text, Loader=_BoundedLoader))


class YamlLimitError(yaml.MarkedYAMLError):
    """YAML refused while it is composed: nested too deeply, too large with its aliases expanded, or an alias
    inside the node it names (a cycle)."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class _BoundedLoader(yaml.composer.Composer, _Loader):  # type: ignore[misc]
    """pyyaml's composer (ahead of libyaml's in the MRO) with the MAX_* bounds checked before each node is built:
    an alias counts as the nodes and text it stands for, so what a later expansion would build is known, and
    refused, before anything is expanded. MAX_YAML_DEPTH also keeps the composer's recursion shallow."""

    def __init__(self, stream: str) -> None:
        _Loader.__init__(self, stream)  # type: ignore[misc]
        self.anchors = {}
        self._nodes = self._chars = self._depth = 0
        #: (nodes, characters) of each anchored node once complete; an anchor missing here is still open.
        self._sizes: dict[str, tuple[int, int]] = {}

    def compose_document(self) -> yaml.Node | None:
        self._sizes = {}  # anchors are local to their document
        return super().compose_document()

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()
        mark, anchor = event.start_mark, event.anchor
        if isinstance(event, yaml.AliasEvent):
            size = self._sizes.get(anchor)
            if size is not None:
                self._count(*size, mark)
            elif anchor in self.anchors:
                raise YamlLimitError(f"alias '*{anchor}' is inside the node it refers to", mark)
            return super().compose_node(parent, index)
        if anchor is not None and anchor in self.anchors:
            raise yaml.composer.ComposerError(None, None, f"found duplicate anchor '{anchor}'", mark)
        collection = isinstance(event, yaml.CollectionStartEvent)
        if collection and self._depth >= MAX_YAML_DEPTH:
            raise YamlLimitError(f"YAML nests collections deeper than {MAX_YAML_DEPTH} levels", mark)
        before = self._nodes, self._chars
        self._count(1, 0 if collection else len(event.value), mark)
        self._depth += collection
        node = super().compose_node(parent, index)
        self._depth -= collection
        if anchor is not None:
            self._sizes[anchor] = (self._nodes - before[0], self._chars - before[1])
        return node

    def _count(self, nodes: int, chars: int, mark: Any) -> None:
        self._nodes += nodes
        self._chars += chars
        if self._nodes > MAX_YAML_NODES:
            raise YamlLimitError(f"YAML has more than {MAX_YAML_NODES} nodes once aliases are expanded "
                                 "(an alias counts as the nodes it repeats)", mark)
        if self._chars > MAX_FILE_BYTES:
            raise YamlLimitError(f"YAML has more than {MAX_FILE_BYTES} characters of text once aliases are expanded "
                                 "(an alias counts as the text it repeats)", mark)


def _node_location(file: str, node: yaml.Node, item_kind: str = "") -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1, item_kind)
