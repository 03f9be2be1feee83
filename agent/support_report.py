"""Falco's `--support`: one JSON document with what a bug report needs: versions, the system, the command line,
the configuration as loaded, and each configuration and rules file with its content."""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.config.load import section_value
from agent.config.schema import Unchecked
from agent.plugins.registry import PluginRegistry


def support_report(*, argv: Sequence[str], versions: dict[str, Any], config: AgentConfig, config_files: Sequence[str],
                   rules_files: Sequence[Path], registry: PluginRegistry) -> dict[str, Any]:
    """`versions` is agent.versions.versions_info's document."""
    return {
        "version": versions["falco_version"],
        "engine_info": {key: versions[key] for key in ("engine_version", "engine_version_semver",
                                                       "plugin_api_version")},
        "plugins": [{"name": loaded.plugin.name, "version": loaded.plugin.version} for loaded in registry.plugins],
        "system_info": system_info(),
        "cmdline": shlex.join(argv),
        "config": config_json(config),
        "config_files": [file_entry(Path(path)) for path in config_files],
        "rules_files": [file_entry(path) for path in rules_files],
    }


def system_info() -> dict[str, Any]:
    uname = os.uname()
    return {"sysname": uname.sysname, "nodename": uname.nodename, "release": uname.release,
            "version": uname.version, "machine": uname.machine, "cpus": os.cpu_count(),
            "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")}


def file_entry(path: Path) -> dict[str, Any]:
    """A file's name and content; one that cannot be read says why instead (the report is wanted most then)."""
    try:
        return {"name": str(path), "content": path.read_text(encoding="utf-8", errors="replace")}
    except OSError as exc:
        return {"name": str(path), "content": None, "error": exc.strerror or str(exc)}


def config_json(value: Any) -> Any:
    """The configuration as plain JSON values; a plugin's `init_config` as written (its `${NAME}` replaced)."""
    if isinstance(value, Unchecked):
        return section_value(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: config_json(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [config_json(item) for item in value]
    return value
