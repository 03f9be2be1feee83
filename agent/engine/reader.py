"""Reads rules YAML into plain items with positions; checks document shape and known keys."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import yaml
from yaml.resolver import Resolver

from agent.engine.load_result import ErrorCode, LoadAborted, LoadResult, WarningCode
from agent.location import Location

try:
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pyyaml built without libyaml
    _Loader = yaml.SafeLoader
_RESOLVER = Resolver()

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


def compose_all(text: str) -> list[yaml.Node]:
    """The node graph of every document, as `yaml.compose_all` builds it, within the MAX_* bounds.

    Raises YamlLimitError past a bound, and pyyaml's errors for text that is not YAML.
    """
    return _Composer().compose_all(text)


class YamlLimitError(yaml.MarkedYAMLError):
    """YAML refused while it is composed: nested too deeply, too large with its aliases expanded, or an alias
    inside the node it names (a cycle)."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)


@dataclass(slots=True)
class _Open:
    """A collection whose end event has not come yet, with the counters as they were when it started."""

    node: yaml.CollectionNode
    anchor: str | None
    nodes: int
    chars: int
    key: yaml.Node | None = None


class _Composer:
    """Builds the node graphs of every document from the parser's events, as pyyaml's composer does, but without
    recursion and within the MAX_* bounds: an alias counts as the nodes and text it stands for, so what a later
    expansion would build is known, and refused, before anything is expanded."""

    def __init__(self) -> None:
        self.nodes = 0
        self.chars = 0
        self.stack: list[_Open] = []
        self.anchors: dict[str, yaml.Node] = {}
        #: (nodes, characters) of each anchored node once complete; an anchor missing here is still open.
        self.sizes: dict[str, tuple[int, int]] = {}

    def compose_all(self, text: str) -> list[yaml.Node]:
        documents = []
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.DocumentStartEvent):
                self.anchors, self.sizes = {}, {}  # anchors are local to their document
            elif isinstance(event, (yaml.NodeEvent, yaml.CollectionEndEvent)):
                node = self._node(event)
                if node is None:
                    continue
                if not self.stack:
                    documents.append(node)
                    continue
                parent = self.stack[-1]
                if isinstance(parent.node, yaml.SequenceNode):
                    parent.node.value.append(node)
                elif parent.key is None:
                    parent.key = node
                else:
                    parent.node.value.append((parent.key, node))
                    parent.key = None
        return documents

    def _node(self, event: yaml.Event) -> yaml.Node | None:
        """The node `event` completes, or None when it opens a collection."""
        mark = _mark(event.start_mark)
        if isinstance(event, yaml.CollectionEndEvent):
            done = self.stack.pop()
            done.node.end_mark = _mark(event.end_mark)
            if done.anchor is not None:
                self.sizes[done.anchor] = (self.nodes - done.nodes, self.chars - done.chars)
            return done.node
        if isinstance(event, yaml.AliasEvent):
            return self._alias(event.anchor or "", mark)
        assert isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent))
        anchor = event.anchor
        if anchor is not None and anchor in self.anchors:
            raise yaml.composer.ComposerError(None, None, f"found duplicate anchor '{anchor}'", mark)
        tag = event.tag
        if isinstance(event, yaml.ScalarEvent):
            self._count(1, len(event.value), mark)
            tag = _resolve(tag, yaml.ScalarNode, event.value, event.implicit)
            node = yaml.ScalarNode(tag, event.value, mark, _mark(event.end_mark), event.style)
            if anchor is not None:
                self.anchors[anchor] = node
                self.sizes[anchor] = (1, len(event.value))
            return node
        if len(self.stack) >= MAX_YAML_DEPTH:
            raise YamlLimitError(f"YAML nests collections deeper than {MAX_YAML_DEPTH} levels", mark)
        kind = yaml.SequenceNode if isinstance(event, yaml.SequenceStartEvent) else yaml.MappingNode
        collection = kind(_resolve(tag, kind, None, event.implicit), [], mark, None, event.flow_style)
        if anchor is not None:
            self.anchors[anchor] = collection  # known from here on, as pyyaml does; `sizes` says when it is complete
        self.stack.append(_Open(collection, anchor, self.nodes, self.chars))
        self._count(1, 0, mark)
        return None

    def _alias(self, anchor: str, mark: yaml.Mark | None) -> yaml.Node:
        node = self.anchors.get(anchor)
        if node is None:
            raise yaml.composer.ComposerError(None, None, f"found undefined alias '{anchor}'", mark)
        size = self.sizes.get(anchor)
        if size is None:
            raise YamlLimitError(f"alias '*{anchor}' is inside the node it refers to", mark)
        self._count(*size, mark)
        return node

    def _count(self, nodes: int, chars: int, mark: yaml.Mark | None) -> None:
        self.nodes += nodes
        self.chars += chars
        if self.nodes > MAX_YAML_NODES:
            raise YamlLimitError(f"YAML has more than {MAX_YAML_NODES} nodes once aliases are expanded "
                                 "(an alias counts as the nodes it repeats)", mark)
        if self.chars > MAX_FILE_BYTES:
            raise YamlLimitError(f"YAML has more than {MAX_FILE_BYTES} characters of text once aliases are expanded "
                                 "(an alias counts as the text it repeats)", mark)


def _resolve(tag: str | None, kind: type[yaml.Node], value: str | None, implicit: object) -> str:
    """The node's tag: as written, or the one YAML's rules give a plain node (`!` asks for those rules too)."""
    if tag is not None and tag != "!":
        return tag
    return cast(str, _RESOLVER.resolve(kind, value, implicit))  # type: ignore[no-untyped-call]


def _mark(mark: object) -> yaml.Mark | None:
    """libyaml's marks are another class with the same fields."""
    return cast(yaml.Mark | None, mark)


def _node_location(file: str, node: yaml.Node) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)
