"""What the agent checks at start before it opens any source: the rules in use load, and the configuration's
Falco keys the agent does not act on are named. Falco's `--dry-run` stops there."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import structlog

from agent.config import AgentConfig
from agent.engine.engine import Engine
from agent.engine_setup import load_engine
from agent.errors import ConfigError
from agent.plugins.registry import PluginRegistry
from agent.reload import rules_entries, rules_paths

log = structlog.get_logger(__name__)


def rules_files_in_use(config: AgentConfig, rules_override: Sequence[str]) -> list[Path]:
    """The rules files the agent loads: those of `-r` (which replace the configured ones), or the configured ones."""
    return rules_paths(rules_entries(config, rules_override))


def load_rules(config: AgentConfig, registry: PluginRegistry,
               rules_override: Sequence[str]) -> tuple[Engine, list[Path]]:
    """The engine the agent starts with (agent.engine_setup) and the rules files it loaded, each load problem
    logged; ConfigError when the rules do not load."""
    files = rules_files_in_use(config, rules_override)
    engine, result = load_engine(config, files, sources=registry.specs(), hostname=config.hostname)
    for problem in result.problems:
        (log.error if problem.is_error else log.warning)("rules_problem", problem=problem.as_text())
    if not result.successful:
        raise ConfigError(f"rules did not load ({len(result.errors)} errors); fix them and start again")
    log.info("rules_loaded", files=[str(f) for f in files], rules=len(engine.rules),
             enabled=sum(rule.enabled for rule in engine.rules))
    return engine, files


def dry_run(config: AgentConfig, registry: PluginRegistry, *, rules_override: Sequence[str]) -> None:
    """Falco's `--dry-run`: the configuration and plugins (already loaded) and the rules, without opening a source,
    an output or a server; ConfigError when the rules do not load."""
    engine, _ = load_rules(config, registry, rules_override)
    log.info("dry_run_passed", rules=len(engine.rules), sources=registry.source_names())
