"""`${NAME}` and `${NAME:-default}` in configuration strings, taken from the environment."""

from __future__ import annotations

import re
from collections.abc import Mapping

from agent.errors import ConfigError

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(text: str, env: Mapping[str, str], *, key: str, where: str = "") -> str:
    """`text` with every reference replaced; ConfigError naming `key` (and `where`) when a NAME is unset."""

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        suffix = f" ({where})" if where else ""
        raise ConfigError(f"{key}: environment variable {name} is not set{suffix}")

    return _ENV_RE.sub(replace, text)
