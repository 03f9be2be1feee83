"""Loads `agent.yaml` plus `-o key=value` overrides into a frozen AgentConfig, rejecting what it does not know.

Every error names the dotted key and where it came from (`sources.k8s_audit.webhok: agent.yaml:12`).
String values may use `${NAME}` or `${NAME:-default}` to take secrets from the environment. Without a file the
agent runs on the built-in configuration (`schema.builtin_settings`), which overrides may change too.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from agent.config.env import interpolate
from agent.config.schema import AgentConfig, RuleMatchConfig, RuleSelectionConfig, builtin_settings
from agent.errors import ConfigError
from agent.location import Location

if typing.TYPE_CHECKING:
    from _typeshed import DataclassInstance

_T = typing.TypeVar("_T", bound="DataclassInstance")


@dataclasses.dataclass(slots=True)
class _Value:
    """A raw value with where it was written."""

    value: Any
    where: str


def load_config(path: str | Path | None = None, *, overrides: Sequence[str] = (),
                environ: Mapping[str, str] | None = None) -> AgentConfig:
    """The configuration from a file (or the built-in one) with overrides applied; ConfigError on any mistake."""
    env = os.environ if environ is None else environ
    builtin: dict[str, _Value] = _wrap(builtin_settings(), "the built-in configuration").value
    tree = _read_yaml(Path(path)) if path is not None else builtin
    for override in overrides:
        _apply_override(tree, override)
    return _build(AgentConfig, tree, "", env)


def _read_yaml(path: Path) -> dict[str, _Value]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration: {exc.strerror}", Location(str(path))) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise ConfigError(f"invalid YAML: {exc.problem}",
                          Location(str(path), mark.line + 1 if mark else 0)) from None
    if node is None:
        return {}
    value = _from_node(node, str(path))
    if not isinstance(value.value, dict):
        raise ConfigError("the configuration must be a mapping of keys", Location(str(path), 1))
    return value.value


def _from_node(node: yaml.Node, file: str) -> _Value:
    where = f"{file}:{node.start_mark.line + 1}"
    if isinstance(node, yaml.MappingNode):
        return _Value({str(k.value): _from_node(v, file) for k, v in node.value}, where)
    if isinstance(node, yaml.SequenceNode):
        return _Value([_from_node(child, file) for child in node.value], where)
    return _Value(_scalar(node), where)


def _scalar(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node)
    finally:
        loader.dispose()


def _apply_override(tree: dict[str, _Value], override: str) -> None:
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{override}' must look like KEY=VALUE (for example rule_matching=all)")
    where = f"-o {override}"
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node = tree
    for part in parts[:-1]:
        if part.endswith("[]"):
            child = _Value({}, where)
            _list_at(node, part[:-2], where).append(child)
        else:
            found = node.get(part)
            if found is None or not isinstance(found.value, dict):
                found = node[part] = _Value({}, where)
            child = found
        node = child.value
    last = parts[-1]
    if last.endswith("[]"):
        _list_at(node, last[:-2], where).append(_wrap(value, where))
    else:
        node[last] = _wrap(value, where)


def _list_at(node: dict[str, _Value], key: str, where: str) -> list[_Value]:
    """The list under `key`, made when missing: `key[]` in an override appends an item (Falco's `rules[]`)."""
    child = node.get(key)
    if child is None or not isinstance(child.value, list):
        child = node[key] = _Value([], where)
    return child.value


def _wrap(value: Any, where: str) -> _Value:
    if isinstance(value, dict):
        return _Value({str(k): _wrap(v, where) for k, v in value.items()}, where)
    if isinstance(value, list):
        return _Value([_wrap(v, where) for v in value], where)
    return _Value(value, where)


def _build(cls: type[_T], tree: dict[str, _Value], prefix: str, env: Mapping[str, str]) -> _T:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, raw in tree.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            choices = ", ".join(sorted(known))
            raise ConfigError(f"{dotted}: unknown key ({raw.where}); known keys here: {choices}")
        kwargs[key] = _convert(hints[key], raw, dotted, env)
    return cls(**kwargs)


def _convert(hint: Any, raw: _Value, dotted: str, env: Mapping[str, str]) -> Any:
    origin = typing.get_origin(hint)
    value = raw.value

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{dotted}: expected {expected}, got {_describe(value)} ({raw.where})")

    if origin in (types.UnionType, typing.Union):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(options[0], raw, dotted, env)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if value is None:
            return hint()
        if not isinstance(value, dict):
            raise bad("a mapping")
        built = _build(hint, value, dotted + ".", env)
        check = _CHECKS.get(hint)
        problem = check(built) if check is not None else None
        if problem is not None:
            raise ConfigError(f"{dotted}: {problem} ({raw.where})")
        return built
    if origin is Literal:
        choices = typing.get_args(hint)
        text = interpolate(value, env, key=dotted, where=raw.where) if isinstance(value, str) else value
        if text not in choices:
            raise bad("one of " + ", ".join(map(str, choices)))
        return text
    if origin is tuple:
        if value is None:
            return ()
        items = value if isinstance(value, list) else None
        if items is None:
            raise bad("a list")
        item_hint = typing.get_args(hint)[0]
        return tuple(_convert(item_hint, item, f"{dotted}[{i}]", env) for i, item in enumerate(items))
    if hint is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("a whole number")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if hint is str:
        if value is None:
            return ""
        if isinstance(value, (dict, list)):
            raise bad("a string")
        return interpolate(str(value), env, key=dotted, where=raw.where)
    raise ConfigError(f"{dotted}: unsupported configuration type {hint}")


def _check_selection(selection: RuleSelectionConfig) -> str | None:
    if (selection.enable is None) == (selection.disable is None):
        return "give exactly one of enable or disable"
    return None


def _check_match(match: RuleMatchConfig) -> str | None:
    if not match.rule and not match.tag:
        return "give rule (a name or glob) or tag (a tag or glob)"
    return None


#: Rules between keys that the types alone cannot say, by the dataclass they apply to.
_CHECKS: dict[type, Callable[[Any], str | None]] = {
    RuleSelectionConfig: _check_selection,
    RuleMatchConfig: _check_match,
}


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value.value if isinstance(value, _Value) else value)
