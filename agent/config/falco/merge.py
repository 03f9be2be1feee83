"""Falco's `config_files`: more configuration files merged into the main one, after it, in the order listed.

An entry is a path or `{path, strategy}`; a folder stands for its `.yaml` and `.yml` files in name order. The
strategies work on top-level keys, as Falco's: `append` (the default) appends a list to the list already there
and replaces anything else, `override` replaces, `add-only` adds only keys not there yet. A path that does not
exist is skipped, as Falco skips it (its default `/etc/falco/config.d` often does not); an included file may not
include more (`config_files` in it is refused), nor name the main file.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from pathlib import Path

import structlog

from agent.config.env import interpolate
from agent.config.raw import RawTree, RawValue, describe, read_yaml, yaml_entries
from agent.errors import ConfigError

log = structlog.get_logger(__name__)
KEY = "config_files"


class Strategy(enum.Enum):
    APPEND = "append"
    OVERRIDE = "override"
    ADD_ONLY = "add-only"


def merge_config_files(tree: RawTree, entries: RawValue | None, *, main: Path | None,
                       env: Mapping[str, str]) -> list[str]:
    """Merge the files `entries` (the `config_files` value) names into `tree`; the files read, in order."""
    tree.pop(KEY, None)
    if entries is None or entries.value is None:
        return []
    if not isinstance(entries.value, list):
        raise ConfigError(f"{KEY}: expected a list, got {describe(entries.value)} ({entries.where})")
    loaded: list[str] = []
    for index, entry in enumerate(entries.value):
        key = f"{KEY}[{index}]"
        path, strategy = _entry(key, entry, env)
        if main is not None and path.resolve() == main.resolve():
            raise ConfigError(f"{key}: '{path}' is the main configuration file itself ({entry.where})")
        for file in _files(path):
            included = read_yaml(file)
            if KEY in included:
                raise ConfigError(f"{KEY}: an included file may not include more ({included[KEY].where})")
            _merge(tree, included, strategy)
            loaded.append(str(file))
        if not path.exists():
            log.debug("config_file_missing", key=key, path=str(path), where=entry.where)
    return loaded


def _entry(key: str, entry: RawValue, env: Mapping[str, str]) -> tuple[Path, Strategy]:
    value = entry.value
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"path", "strategy"})
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]}: unknown key ({value[unknown[0]].where}); known keys here: path, "
                              "strategy")
        path_raw, strategy_raw = value.get("path"), value.get("strategy")
    else:
        path_raw, strategy_raw = entry, None
    if path_raw is None or not isinstance(path_raw.value, str) or not path_raw.value:
        raise ConfigError(f"{key}: expected a path or a mapping with path and strategy ({entry.where})")
    path = Path(interpolate(path_raw.value, env, key=key, where=path_raw.where))
    if strategy_raw is None:
        return path, Strategy.APPEND
    try:
        return path, Strategy(strategy_raw.value)
    except ValueError:
        choices = ", ".join(s.value for s in Strategy)
        raise ConfigError(f"{key}.strategy: expected one of {choices}, got {describe(strategy_raw.value)} "
                          f"({strategy_raw.where})") from None


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return [p for p in yaml_entries(path) if p.is_file()]
    return [path] if path.is_file() else []


def _merge(tree: RawTree, included: RawTree, strategy: Strategy) -> None:
    for key, raw in included.items():
        existing = tree.get(key)
        if existing is None or strategy is Strategy.OVERRIDE:
            tree[key] = raw
        elif strategy is Strategy.APPEND:
            if isinstance(existing.value, list) and isinstance(raw.value, list):
                tree[key] = RawValue([*existing.value, *raw.value], existing.where)
            else:
                tree[key] = raw
