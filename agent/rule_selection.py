"""Applies the `rules` commands of the configuration (Falco's enable/disable list) to a loaded engine.

Commands run in order after the rules files are loaded, so a later command wins over an earlier one and every
command wins over the `enabled` a rules file says: `disable: {rule: "*"}` then `enable: {tag: network}` leaves
exactly the network rules on. `rule` is a glob on rule names and `tag` a glob on tags; a command giving both
applies both, as Falco does.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog

from agent.config.schema import RuleSelectionConfig
from agent.engine.engine import Engine

log = structlog.get_logger(__name__)


def apply_rule_selection(engine: Engine, commands: Iterable[RuleSelectionConfig]) -> None:
    """Enable or disable the engine's rules as the commands say, in order; logs how many each one changed."""
    for index, command in enumerate(commands):
        enabled = command.enable is not None
        match = command.enable if enabled else command.disable
        assert match is not None  # config/load.py refuses a command with neither
        changed = engine.set_enabled(name=match.rule or None, tag=match.tag or None, enabled=enabled)
        log.info("rules_selected", command=index, action="enable" if enabled else "disable",
                 rule=match.rule or None, tag=match.tag or None, changed=changed)
