"""`required_engine_version` and `required_plugin_versions`: parsing and checking."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from agent.engine.load_result import ErrorCode, LoadResult
from agent.engine.reader import Item
from agent.location import Location

#: The Falco engine version whose rules language this engine implements.
ENGINE_VERSION = (0, 63, 0)
_SEMVER_RE = re.compile(r"(\d+)\.(\d+)\.(\d+)(?:[-+][0-9A-Za-z.+-]*)?")

Version = tuple[int, int, int]


def parse_semver(text: str) -> Version | None:
    match = _SEMVER_RE.fullmatch(text.strip())
    return None if match is None else (int(match[1]), int(match[2]), int(match[3]))


def is_compatible(have: Version, need: Version) -> bool:
    """Same major and at least the required version."""
    return have[0] == need[0] and have >= need


def format_version(version: Version) -> str:
    return ".".join(map(str, version))


@dataclass(frozen=True, slots=True)
class EngineRequirement:
    version: Version
    location: Location

    @classmethod
    def from_item(cls, item: Item, result: LoadResult) -> EngineRequirement:
        raw = item.values["required_engine_version"]
        if not isinstance(raw, str) or not raw.strip():
            raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE, "required_engine_version must be a version",
                               item.location)
        text = raw.strip()
        version = (0, int(text), 0) if text.isdigit() else parse_semver(text)
        if version is None:
            raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE,
                               f"unable to parse required_engine_version '{text}'", item.location)
        if not is_compatible(ENGINE_VERSION, version):
            raise result.error(
                ErrorCode.LOAD_ERR_VALIDATE,
                f"rules require engine version {format_version(version)}, but engine version is "
                f"{format_version(ENGINE_VERSION)}",
                item.location,
            )
        return cls(version, item.location)


@dataclass(frozen=True, slots=True)
class PluginRequirement:
    """One requirement: the entry and its alternatives, scanned in order."""

    members: tuple[tuple[str, Version], ...]
    location: Location

    @classmethod
    def from_item(cls, item: Item, result: LoadResult) -> list[PluginRequirement]:
        entries = item.values["required_plugin_versions"]
        if not isinstance(entries, list):
            raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE,
                               "required_plugin_versions must be a sequence", item.location)
        requirements = []
        for entry in entries:
            members = [cls._member(entry, item, result)]
            alternatives = entry.get("alternatives") or []
            if not isinstance(alternatives, list):
                raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE, "alternatives must be a sequence",
                                   item.location)
            members += [cls._member(alt, item, result) for alt in alternatives]
            names = [name for name, _ in members]
            if len(set(names)) != len(names):
                raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE,
                                   f"plugin name repeated in one requirement: {', '.join(names)}",
                                   item.location)
            requirements.append(cls(tuple(members), item.location))
        return requirements

    @staticmethod
    def _member(entry: object, item: Item, result: LoadResult) -> tuple[str, Version]:
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("version"):
            raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE,
                               "a plugin requirement needs 'name' and 'version'", item.location)
        version = parse_semver(str(entry["version"]))
        if version is None:
            raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE,
                               f"invalid version '{entry['version']}' for plugin '{entry['name']}'",
                               item.location)
        return str(entry["name"]), version

    def check(self, loaded: dict[str, Version]) -> str | None:
        """None when met; otherwise why not."""
        for name, need in self.members:
            if name in loaded:
                if is_compatible(loaded[name], need):
                    return None
                return (f"plugin '{name}' version {format_version(loaded[name])} is not compatible with "
                        f"required version {format_version(need)}")
        wanted = ", ".join(f"{name} (>= {format_version(v)})" for name, v in self.members)
        return f"plugin requirement not satisfied, must load one of: {wanted}"


def loaded_plugins(pairs: Iterable[tuple[str, str]]) -> dict[str, Version]:
    out: dict[str, Version] = {}
    for name, text in pairs:
        version = parse_semver(text)
        if version is not None:
            out[name] = version
    return out
