"""The engine the configuration describes, built the same way when the agent starts (agent.runtime) and at every
rules reload (agent.reload): its sources, rule matching, priority, `append_output`, the rules files loaded and the
`rules` enable/disable commands applied."""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from pathlib import Path

from agent.config import AgentConfig
from agent.config.schema import AppendOutputConfig, ExtraFieldConfig
from agent.engine.append_output import AppendMatch, AppendOutput, ExtraField
from agent.engine.engine import Engine, RuleMatching
from agent.engine.load_result import LoadResult
from agent.priority import Priority
from agent.rule_selection import apply_rule_selection
from agent.source import SourceSpec


def load_engine(config: AgentConfig, files: Sequence[Path], *, sources: Iterable[SourceSpec],
                hostname: str) -> tuple[Engine, LoadResult]:
    """A new engine with `sources` and the rules of `files`; the `rules` commands are applied when they load.

    `hostname` is the agent's (the machine's when empty). The engine is usable only if the result is successful.
    """
    engine = Engine(rule_matching=RuleMatching(config.rule_matching), min_priority=Priority.parse(config.priority),
                    hostname=hostname or socket.gethostname(), append_output=append_entries(config.append_output))
    for spec in sources:
        engine.add_source(spec)
    result = engine.load_rules_files(files)
    if result.successful:
        apply_rule_selection(engine, config.rules)
    return engine, result


def append_entries(entries: Iterable[AppendOutputConfig]) -> tuple[AppendOutput, ...]:
    """The `append_output` entries as engine settings."""
    return tuple(
        AppendOutput(match=AppendMatch(source=entry.match.source, tags=frozenset(entry.match.tags),
                                       rule=entry.match.rule),
                     extra_output=entry.extra_output, extra_fields=tuple(map(_extra_field, entry.extra_fields)),
                     suggested_output=entry.suggested_output)
        for entry in entries
    )


def _extra_field(extra: ExtraFieldConfig) -> ExtraField:
    # Falco's bare field name (`- evt.hostname`, loaded as the format `%evt.hostname`) keeps the field's typed
    # value in output_fields; any other format is rendered as text.
    is_field = extra.format in ("", f"%{extra.name}")
    return ExtraField(extra.name, "" if is_field else extra.format)
