"""Loads `agent.yaml` plus `-o key=value` overrides into a frozen AgentConfig, rejecting what it does not know.

Every error names the dotted key and where it came from (`sources.k8s_audit.webhok: agent.yaml:12`), including a
number outside the bounds its schema field states (`queue_capacity_events: must be >= 1, got 0 (agent.yaml:12)`).
String values may use `${NAME}` or `${NAME:-default}` to take secrets from the environment. Without a file the
agent runs on the built-in configuration (`schema.builtin_settings`), which overrides may change too.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from agent.address import parse_host_port
from agent.config.env import interpolate
from agent.config.falco import merge_config_files, translate
from agent.config.falco.merge import KEY as CONFIG_FILES
from agent.config.falco.rules import OVERRIDE_PREFIX
from agent.config.raw import RawTree, RawValue, describe, read_yaml, wrap
from agent.config.schema import (
    BOUNDS,
    IS_INTERNAL,
    IS_LISTEN_ADDRESS,
    AgentConfig,
    Bounds,
    PluginConfig,
    RuleMatchConfig,
    RuleSelectionConfig,
    Unchecked,
    builtin_settings,
)
from agent.errors import ConfigError

if typing.TYPE_CHECKING:
    from _typeshed import DataclassInstance

_T = typing.TypeVar("_T", bound="DataclassInstance")


#: One step of an override's key: `name`, `name[]` (append an item) or `name[N]` (the item at N).
_STEP_RE = re.compile(r"^([^\[\]]+)(?:\[(\d*)\])?$")
_APPEND = -1


def load_config(path: str | Path | None = None, *, overrides: Sequence[str] = (),
                environ: Mapping[str, str] | None = None) -> AgentConfig:
    """The configuration from a file (or the built-in one), its `config_files` merged, overrides applied, Falco's
    keys translated onto the agent's; ConfigError on any mistake."""
    env = os.environ if environ is None else environ
    where = str(path) if path is not None else "the built-in configuration"
    main = Path(path) if path is not None else None
    tree = read_yaml(main) if main is not None else wrap(builtin_settings(), where).value
    # As Falco: overrides are applied before the included files are listed (`-o config_files=...` counts) and
    # again after, so that they win over what those files say.
    listed = copy.deepcopy(tree)
    _apply_overrides(listed, overrides)
    included = merge_config_files(tree, listed.get(CONFIG_FILES), main=main, env=env)
    _apply_overrides(tree, overrides)
    translation = translate(tree, _AGENT_KEYS)
    config = _build(AgentConfig, RawValue(translation.tree, where), "", env)
    _check_plugin_names(config, translation.tree)
    return dataclasses.replace(config, unsupported_keys=tuple(translation.unsupported),
                               loaded_files=(*([str(main)] if main is not None else []), *included))


def check_section(cls: type[_T], section: Unchecked) -> _T:
    """The dataclass `cls` from a subtree the loader kept unchecked, with the same checks and errors as every other
    key (`plugins[0].init_config.interval_s: must be > 0, got 0 (agent.yaml:9)`). Empty means every default; a
    string (Falco's JSON `init_config`) is read as YAML."""
    raw = section.tree if isinstance(section.tree, RawValue) else RawValue(section.tree, section.key)
    if isinstance(raw.value, str):
        try:
            raw = wrap(yaml.safe_load(raw.value), raw.where) if raw.value.strip() else RawValue(None, raw.where)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{section.key}: not valid JSON or YAML: {exc} ({raw.where})") from None
    built: _T = _convert(cls, raw, section.key, section.environ)  # as any nested section: None, a mapping or refused
    return built


def section_value(section: Unchecked) -> Any:
    """A subtree the loader kept unchecked as plain YAML values (`${NAME}` references in strings replaced), for
    a plugin that checks its `init_config` itself (a native plugin's init schema); None when not written."""
    return _plain(section.tree, section.key, section.environ)


def _plain(raw: Any, key: str, env: Mapping[str, str]) -> Any:
    if not isinstance(raw, RawValue):
        return raw
    value = raw.value
    if isinstance(value, dict):
        return {k: _plain(v, f"{key}.{k}", env) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, f"{key}[{i}]", env) for i, v in enumerate(value)]
    return interpolate(value, env, key=key, where=raw.where) if isinstance(value, str) else value


def _check_plugin_names(config: AgentConfig, tree: RawTree) -> None:
    """Each `plugins` entry has its own name, and `load_plugins` names only configured plugins."""
    first: dict[str, int] = {}
    for index, entry in enumerate(config.plugins):
        if entry.name in first:
            where = _item_where(tree, "plugins", index)
            raise ConfigError(f"plugins[{index}].name: '{entry.name}' is already the name of "
                              f"plugins[{first[entry.name]}] ({where}); give each plugin its own name")
        first[entry.name] = index
    for index, name in enumerate(config.load_plugins or ()):
        if name not in first:
            known = ", ".join(first) or "none"
            raise ConfigError(f"load_plugins[{index}]: no entry of plugins is named '{name}' "
                              f"({_item_where(tree, 'load_plugins', index)}); plugins configured: {known}")


def _item_where(tree: RawTree, key: str, index: int) -> str:
    return tree[key].value[index].where


def _apply_overrides(tree: RawTree, overrides: Sequence[str]) -> None:
    for override in overrides:
        _apply_override(tree, override)


def _apply_override(tree: RawTree, override: str) -> None:
    """`-o KEY=VALUE` as Falco reads it: KEY is dotted, `name[]` appends an item, `name[N]` is the item at N."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{override}' must look like KEY=VALUE (for example rule_matching=all)")
    where = f"{OVERRIDE_PREFIX}{override}"
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    steps = [_step(part, override) for part in key.strip().split(".")]
    node = tree
    for number, (name, index) in enumerate(steps):
        is_last = number == len(steps) - 1
        if index is None:
            if is_last:
                node[name] = wrap(value, where)
                return
            child = node.get(name)
            if child is None or not isinstance(child.value, dict):
                child = node[name] = RawValue({}, where)
        else:
            items = _list_at(node, name, where)
            if index > len(items):
                raise ConfigError(f"override '{override}': {name} has {len(items)} items, no item {index}")
            if index in (_APPEND, len(items)):
                index = len(items)
                items.append(RawValue({}, where))
            if is_last:
                items[index] = wrap(value, where)
                return
            child = items[index]
            if not isinstance(child.value, dict):
                child = items[index] = RawValue({}, where)
        node = child.value


def _step(part: str, override: str) -> tuple[str, int | None]:
    match = _STEP_RE.match(part)
    if match is None:
        raise ConfigError(f"override '{override}': '{part}' must be a key, key[] or key[N]")
    name, index = match.group(1), match.group(2)
    return name, None if index is None else (int(index) if index else _APPEND)


def _list_at(node: RawTree, key: str, where: str) -> list[RawValue]:
    """The list under `key`, made when missing: `key[]` in an override appends an item (Falco's `rules[]`)."""
    child = node.get(key)
    if child is None or not isinstance(child.value, list):
        child = node[key] = RawValue([], where)
    items: list[RawValue] = child.value
    return items


def _build(cls: type[_T], mapping: RawValue, prefix: str, env: Mapping[str, str]) -> _T:
    """The dataclass from a mapping whose keys are checked, converted and held to their bounds."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get(IS_INTERNAL)}
    kwargs = {}
    for key, raw in mapping.value.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            choices = ", ".join(sorted(known))
            raise ConfigError(f"{dotted}: unknown key ({raw.where}); known keys here: {choices}")
        kwargs[key] = _convert(hints[key], raw, dotted, env)
        _check(known[key].metadata, kwargs[key], raw, dotted)
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a check of the dataclass itself: said as a mistake in this mapping, not a traceback
        raise ConfigError(f"{prefix.rstrip('.') or 'configuration'}: {exc} ({mapping.where})") from None


def _check(metadata: Mapping[str, Any], value: Any, raw: RawValue, dotted: str) -> None:
    """Hold a converted value to what its schema field's metadata says: numeric bounds, a host:port address."""
    bounds: Bounds | None = metadata.get(BOUNDS)
    problem = bounds.problem(value) if bounds is not None else None
    if problem is not None:
        raise ConfigError(f"{dotted}: {problem}, got {describe(raw.value)} ({raw.where})")
    if metadata.get(IS_LISTEN_ADDRESS) and value:
        try:
            parse_host_port(value)
        except ValueError as exc:
            raise ConfigError(f"{dotted}: {exc} ({raw.where})") from None


def _convert(hint: Any, raw: RawValue, dotted: str, env: Mapping[str, str]) -> Any:
    origin = typing.get_origin(hint)
    value = raw.value

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{dotted}: expected {expected}, got {describe(value)} ({raw.where})")

    if origin in (types.UnionType, typing.Union):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(options[0], raw, dotted, env)
    if hint is Unchecked:
        return Unchecked(dotted, raw, env)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if value is None:
            return hint()
        if not isinstance(value, dict):
            raise bad("a mapping")
        built = _build(hint, raw, dotted + ".", env)
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
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad("a finite number")
        return float(value)
    if hint is str:
        if value is None:
            return ""
        if isinstance(value, (dict, list)):
            raise bad("a string")
        text = interpolate(str(value), env, key=dotted, where=raw.where)
        if "\x00" in text:  # no path, address or name may hold one; the OS would refuse it later, far from here
            raise bad("text without NUL characters")
        return text
    raise ConfigError(f"{dotted}: unsupported configuration type {hint}")


def _check_selection(selection: RuleSelectionConfig) -> str | None:
    if (selection.enable is None) == (selection.disable is None):
        return "give exactly one of enable or disable"
    return None


def _check_plugin(plugin: PluginConfig) -> str | None:
    if not plugin.name or not plugin.library_path:
        return "give name and library_path (a Python plugin's package.module:OBJECT or entry-point name)"
    return None


def _check_match(match: RuleMatchConfig) -> str | None:
    if not match.rule and not match.tag:
        return "give rule (a name or glob) or tag (a tag or glob)"
    return None


#: The keys a configuration may write (the loader fills the internal ones).
_AGENT_KEYS = frozenset(f.name for f in dataclasses.fields(AgentConfig) if not f.metadata.get(IS_INTERNAL))

#: Rules between keys that the types alone cannot say, by the dataclass they apply to.
_CHECKS: dict[type, Callable[[Any], str | None]] = {
    RuleSelectionConfig: _check_selection,
    RuleMatchConfig: _check_match,
    PluginConfig: _check_plugin,
}


