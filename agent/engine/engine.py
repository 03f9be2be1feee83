"""The engine: sources registered as data, rules loaded into per-source rule sets, events in, alerts out."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from agent.alert import Alert
from agent.engine.append_output import AppendOutput, OutputAppender
from agent.engine.ast import Expr
from agent.engine.collector import Collector
from agent.engine.correlation_compiler import CompiledCorrelation, compile_correlations
from agent.engine.correlation_set import CorrelationSet
from agent.engine.correlation_state import CorrelationMetrics
from agent.engine.evaluator import evaluator_of
from agent.engine.load_result import ErrorCode, LoadAborted, LoadResult
from agent.engine.reader import MAX_FILE_BYTES, file_too_large, read_items
from agent.engine.requirements import loaded_plugins
from agent.engine.rule_compiler import build_context, compile_rules, unused_warnings
from agent.engine.rule_guards import check_guard_fields
from agent.engine.ruleset import CompiledRule, RuleSet
from agent.event import Event
from agent.fields import binder
from agent.location import Location
from agent.priority import Priority
from agent.source import SourceSpec


class RuleMatching(Enum):
    FIRST = "first"
    ALL = "all"


@dataclass(frozen=True, slots=True)
class RulesText:
    """Rules content with the name it is reported under (a path, or a label for in-memory text)."""

    name: str
    text: str


@dataclass(slots=True)
class EngineStats:
    events: int = 0
    alerts: int = 0
    rule_errors: int = 0


class Engine:
    """Evaluates loaded rules on events of registered sources.

    Loading is all-or-nothing: a load that reports an error leaves the running rules untouched.
    """

    #: `process(event)`: the alerts for one event, the first matching rule or all of them with `rule_matching: all`,
    #: then the correlations the event completes (they do not count as rule matches for `first`). A function
    #: generated at each rebuild (`_process_function`), not a method: the narrowing of every source's rule set is
    #: written into it, a call less per event.
    process: Callable[[Event], list[Alert]]

    def __init__(self, *, rule_matching: RuleMatching = RuleMatching.FIRST,
                 min_priority: Priority = Priority.DEBUG, hostname: str = "",
                 append_output: Sequence[AppendOutput] = ()) -> None:
        """`append_output` entries extend the outputs of the rules they match at each load (see
        agent.engine.append_output)."""
        self.rule_matching = rule_matching
        self.min_priority = min_priority
        self.hostname = hostname
        self.append_output = tuple(append_output)
        self.stats = EngineStats()
        self._sources: dict[str, SourceSpec] = {}
        self._rules: list[CompiledRule] = []
        self._rulesets: dict[str, RuleSet[CompiledRule]] = {}
        self._correlations = CorrelationSet([], hostname=hostname)
        self._parse_cache: dict[str, Expr] = {}
        self.process = self._process_function()

    @property
    def rule_matching(self) -> RuleMatching:
        return self._rule_matching

    @rule_matching.setter
    def rule_matching(self, value: RuleMatching) -> None:
        self._rule_matching = value
        # Decided here rather than per event: an enum member costs a lookup each time it is named.
        self._first_only = value is RuleMatching.FIRST

    # ----- sources ----------------------------------------------------------------------------
    def add_source(self, spec: SourceSpec) -> None:
        """Register a source; ValueError when its guard fields are not text fields it has."""
        check_guard_fields(spec)
        self._sources[spec.name] = spec

    @property
    def sources(self) -> dict[str, SourceSpec]:
        return dict(self._sources)

    # ----- rules ------------------------------------------------------------------------------
    def load_rules_files(self, paths: Iterable[str | Path]) -> LoadResult:
        contents = []
        result = LoadResult()
        for path in paths:
            try:
                # One byte past the limit is enough for the reader to refuse the file, whatever its size.
                with Path(path).open("rb") as stream:
                    data = stream.read(MAX_FILE_BYTES + 1)
                    size = max(len(data), os.fstat(stream.fileno()).st_size)
                if size > MAX_FILE_BYTES:
                    file_too_large(size, str(path), result)
                    return result
                contents.append(RulesText(str(path), data.decode("utf-8")))
            except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: a NUL in the path
                result.error(ErrorCode.LOAD_ERR_FILE_READ, f"cannot read rules file: {exc}", Location(str(path)))
                return result
        return self.load_rules(contents)

    def load_rules(self, contents: Iterable[RulesText]) -> LoadResult:
        """Read, collect and compile files in order; on success swap the new rules in.

        Correlations whose matching definition is unchanged keep their state; see `CorrelationSet.adopt`.
        """
        result = LoadResult()
        collector = Collector(known_sources=frozenset(self._sources), result=result)
        compiled: list[CompiledRule] = []
        correlations: list[CompiledCorrelation] = []
        appender = OutputAppender(self.append_output, self._sources)
        try:
            for content in contents:
                result.begin_file(content.name, content.text)
                for item in read_items(content.text, content.name, result):
                    collector.collect(item)
                ctx = build_context(collector, self._sources, result, parse_cache=self._parse_cache,
                                    appender=appender)
                compiled = compile_rules(ctx)
                correlations = compile_correlations(ctx)
                # As Falco: each file's compile reports what is unused so far, earlier files' items included.
                unused_warnings(collector, result)
            self._check_plugins(collector, result)
        except LoadAborted:
            return result
        if result.successful:
            self._rules = compiled
            loaded = CorrelationSet(correlations, hostname=self.hostname)
            loaded.adopt(self._correlations)
            self._correlations = loaded
            self._rebuild()
        return result

    def adopt_state(self, previous: Engine) -> None:
        """Carry correlation state over from the engine this one replaces (a reload builds a new engine).

        The state is shared, not copied: call it where the swap happens, on the thread that runs `process`.
        """
        self._correlations.adopt(previous._correlations)

    def _check_plugins(self, collector: Collector, result: LoadResult) -> None:
        """As Falco: a `required_plugin_versions` entry no loaded plugin satisfies fails the load. The loaded
        plugins are those the sources report (a source's own plugin, or the Falco plugins it stands in for)."""
        loaded = loaded_plugins(p for spec in self._sources.values() for p in spec.plugins)
        for requirement in collector.plugin_requirements:
            problem = requirement.check(loaded)
            if problem is not None:
                raise result.error(ErrorCode.LOAD_ERR_VALIDATE, problem, requirement.location)

    @property
    def rules(self) -> list[CompiledRule]:
        return list(self._rules)

    @property
    def correlations(self) -> list[CompiledCorrelation]:
        return list(self._correlations.correlations)

    def correlation_metrics(self) -> list[CorrelationMetrics]:
        """Per correlation: live keys and pending absences (gauges); matches, evictions by reason, shed
        matches and late events (counters since the state began, carried over reloads that keep it)."""
        return self._correlations.metrics()

    def set_enabled(self, *, name: str | None = None, tag: str | None = None, enabled: bool) -> int:
        """Enable or disable rules and correlations by name or tag (shell wildcards); returns how many changed."""
        changed = 0
        selectable: list[CompiledRule | CompiledCorrelation] = [*self._rules, *self._correlations.correlations]
        for rule in selectable:
            hit = (name is not None and fnmatch.fnmatchcase(rule.name, name)) or (
                tag is not None and any(fnmatch.fnmatchcase(t, tag) for t in rule.tags))
            if hit and rule.enabled != enabled:
                rule.enabled = enabled
                changed += 1
        self._rebuild()
        return changed

    def _rebuild(self) -> None:
        by_source: dict[str, list[CompiledRule]] = {}
        for rule in self._rules:
            if rule.enabled and rule.priority <= self.min_priority:
                by_source.setdefault(rule.source, []).append(rule)
        self._rulesets = {name: RuleSet.of_source(by_source.get(name, []), spec)
                          for name, spec in self._sources.items()}
        self._correlations.rebuild(self._sources, min_priority=self.min_priority)
        self.process = self._process_function()

    def ruleset(self, source: str) -> RuleSet[CompiledRule] | None:
        return self._rulesets.get(source)

    # ----- evaluation -------------------------------------------------------------------------
    def _process_function(self) -> Callable[[Event], list[Alert]]:
        """The generated `process`: per source, its rule set's narrowing (RuleSet.narrowing_text), then the
        evaluation of the rules it leaves, then the correlations."""
        namespace, bind = binder("_e")
        engine = bind(self)
        lines = ["def process(ev):", f"    stats = {engine}.stats", "    stats.events += 1",
                 # Sources leave numbering to the engine (evt.num).
                 "    if not ev.num:", "        ev.num = stats.events", "    source = ev.source"]
        for position, (name, ruleset) in enumerate(self._rulesets.items()):
            lines += [f"    {'if' if position == 0 else 'elif'} source == {bind(name)}:",
                      f"        ruleset = {bind(ruleset)}",
                      *(f"        {line}" for line in ruleset.narrowing_text(bind))]
        if not self._rulesets:
            lines.append("    return []")
        else:
            lines += [
                "    else:", "        return []",
                # Most events of a busy source leave no rule (an open of a file no rule names).
                "    if node.rules:",
                f"        evaluate = node.evaluator or {bind(evaluator_of)}(node, ruleset, {bind(self.hostname)})",
                f"        alerts = evaluate(ev, key, stats, {engine}._first_only)",
                "    else:", "        alerts = []",
                # Correlations change only with a rebuild: without any, nothing to feed and nothing to test.
                *([f"    alerts += {bind(self._correlations)}.process(ev, key, stats)"]
                  if self._correlations.correlations else []),
                "    if alerts:", "        stats.alerts += len(alerts)",
                "    return alerts"]
        exec(compile("\n".join(lines), "<process>", "exec"), namespace)
        process: Callable[[Event], list[Alert]] = namespace["process"]
        return process
