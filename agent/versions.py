"""The versions a Falco tool asks a running agent for (`/versions`), with Falco's keys.

`falco_version` is the agent's version; `engine_version` is the minor number of the Falco engine whose rules
language the agent implements (what rules artifacts require), `engine_version_semver` the whole of it;
`plugin_api_version` the plugin API native plugins are loaded with; `plugin_versions` the Falco plugins loaded or
stood in for by a built-in source. Falco's libs and driver versions have no counterpart and are left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agent import __version__
from agent.engine.requirements import ENGINE_VERSION, format_version
from agent.plugins.native.abi import API_VERSION_TEXT

__all__ = ["versions_info"]


def versions_info(plugins: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The document; `plugins` are (name, version) pairs."""
    return {"falco_version": __version__, "engine_version": str(ENGINE_VERSION[1]),
            "engine_version_semver": format_version(ENGINE_VERSION), "plugin_api_version": API_VERSION_TEXT,
            "plugin_versions": dict(sorted(plugins))}
