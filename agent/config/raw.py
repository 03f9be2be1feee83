"""Configuration YAML read into a tree of values that remember where each was written (`falco.yaml:180`), so that
every later check, merge or translation can name the line a mistake comes from."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from agent.errors import ConfigError
from agent.location import Location


@dataclasses.dataclass(slots=True)
class RawValue:
    """A value as written (a dict of RawValue, a list of RawValue or a scalar) with where it was written."""

    value: Any
    where: str

    def plain(self) -> Any:
        """The value with every `where` stripped, to compare two values."""
        if isinstance(self.value, dict):
            return {key: item.plain() for key, item in self.value.items()}
        if isinstance(self.value, list):
            return [item.plain() for item in self.value]
        return self.value


RawTree = dict[str, RawValue]
#: A folder named as configuration or rules stands for its files with these suffixes, as Falco reads one.
YAML_SUFFIXES = (".yaml", ".yml")


def yaml_entries(folder: Path) -> list[Path]:
    """The entries of `folder` named `*.yaml` or `*.yml`, in name order."""
    return sorted(p for p in folder.iterdir() if p.suffix in YAML_SUFFIXES)


def wrap(value: Any, where: str) -> RawValue:
    """A plain value (and everything inside it) as written at `where`."""
    if isinstance(value, RawValue):
        return value
    if isinstance(value, dict):
        return RawValue({str(k): wrap(v, where) for k, v in value.items()}, where)
    if isinstance(value, list):
        return RawValue([wrap(v, where) for v in value], where)
    return RawValue(value, where)


def read_yaml(path: Path) -> RawTree:
    """The mapping of a configuration file; ConfigError with the file and line for what is not one."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration: {exc.strerror}", Location(str(path))) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        value = _from_node(node, str(path)) if node is not None else RawValue({}, str(path))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise ConfigError(f"invalid YAML: {exc.problem}",
                          Location(str(path), mark.line + 1 if mark else 0)) from None
    except RecursionError:  # no configuration nests this deep: refused like any mistake, never a traceback
        raise ConfigError("the YAML nests too deeply to be a configuration", Location(str(path))) from None
    if not isinstance(value.value, dict):
        raise ConfigError("the configuration must be a mapping of keys", Location(str(path), 1))
    tree: RawTree = value.value
    return tree


def _from_node(node: yaml.Node, file: str, key: yaml.Node | None = None) -> RawValue:
    """`key`: the node of the key a value is written under, whose line a section or list is said to be on."""
    where = f"{file}:{(key or node).start_mark.line + 1}"
    if isinstance(node, yaml.MappingNode):
        return RawValue({str(k.value): _from_node(v, file, k) for k, v in node.value}, where)
    if isinstance(node, yaml.SequenceNode):
        return RawValue([_from_node(child, file) for child in node.value], where)
    return RawValue(_scalar(node), where)


def _scalar(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node)
    finally:
        loader.dispose()


def walk(tree: RawTree, prefix: str = "") -> Iterator[tuple[str, RawValue]]:
    """Every key of a tree as a dotted path, list items as `key[]`, mappings before what they hold."""
    for key, raw in tree.items():
        path = f"{prefix}{key}"
        yield path, raw
        if isinstance(raw.value, dict):
            yield from walk(raw.value, path + ".")
        elif isinstance(raw.value, list):
            for item in raw.value:
                if isinstance(item.value, dict):
                    yield from walk(item.value, path + "[].")


def describe(value: Any) -> str:
    """A value as an error message quotes it."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value.value if isinstance(value, RawValue) else value)
