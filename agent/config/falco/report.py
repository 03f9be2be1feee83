"""The one start-up warning naming the configuration keys the agent reads but does not act on."""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from agent.config.schema import UnsupportedKey

log = structlog.get_logger(__name__)


def describe_unsupported(key: UnsupportedKey) -> str:
    """One line for a person: `http_output.max_consecutive_timeouts (falco.yaml:643): why`."""
    return f"{key.key} ({key.where}): {key.reason}"


def warn_unsupported_keys(keys: Sequence[UnsupportedKey]) -> None:
    """Log `falco_keys_not_supported` once with every such key, where it was written and why; nothing when none."""
    if keys:
        log.warning("falco_keys_not_supported", count=len(keys),
                    keys=[{"key": k.key, "where": k.where, "reason": k.reason} for k in keys],
                    hint="these keys are read and left without effect; see the README's table of Falco's keys")
