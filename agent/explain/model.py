"""The rules as written, for explaining them: each rule's condition with its macros kept by name, its macros' own
trees, its exceptions item by item, and each correlation step's condition. Read from the same files, by the same
reader and collector, as the engine that runs them; lists are substituted into the text as the engine does, so each
check is the engine's check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from agent.engine.ast import Expr
from agent.engine.collector import Collector
from agent.engine.infos import ExceptionDef
from agent.engine.load_result import LoadAborted, LoadResult
from agent.engine.macros import ConditionTooLong, ListExpander
from agent.engine.parser import ConditionSyntaxError, parse_condition
from agent.engine.reader import read_items
from agent.engine.rule_exceptions import ExceptionShapeError, exception_text
from agent.errors import RulesError
from agent.location import Location


@dataclass(frozen=True, slots=True)
class ExceptionModel:
    """An exception's items: one per value tuple (or one holding every value of a single-field exception)."""

    name: str
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class RuleModel:
    """A rule's condition as written (macros by name) and its exceptions with values."""

    name: str
    source: str
    condition: Expr
    exceptions: tuple[ExceptionModel, ...]
    location: Location


@dataclass(frozen=True, slots=True)
class StepModel:
    """A correlation step's condition as written (macros by name)."""

    name: str
    source: str
    condition: Expr
    #: The fields the step's matches are filed under, as written.
    key: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RulesModel:
    rules: dict[str, RuleModel]
    macros: dict[str, Expr]
    #: Every rule the files define, those skipped at load included (unknown source or filter).
    defined_rules: frozenset[str]
    #: Per correlation, its steps in order.
    correlations: dict[str, tuple[StepModel, ...]] = field(default_factory=dict)


def read_model(files: Sequence[Path], *, known_sources: frozenset[str]) -> RulesModel:
    """The model of the rules `files` define, read in order; RulesError when they do not load (the engine, loading
    the same files, reports why in full)."""
    result = LoadResult()
    collector = Collector(known_sources=known_sources, result=result)
    try:
        for path in files:
            text = path.read_text(encoding="utf-8")
            result.begin_file(str(path), text)
            for item in read_items(text, str(path), result):
                collector.collect(item)
    except (OSError, UnicodeDecodeError, LoadAborted):
        raise RulesError("the rules files do not load", Location(str(files[0]) if files else "")) from None
    lists = ListExpander(collector.lists)
    macros = {name: _tree(lists, macro.condition, macro.location) for name, macro in collector.macros.items()}
    rules = {}
    for rule in collector.rules.values():
        if not rule.source_known:
            continue
        exceptions = tuple(ExceptionModel(ex.name, _items(lists, ex)) for ex in rule.exceptions if ex.values)
        rules[rule.name] = RuleModel(rule.name, rule.source, _tree(lists, rule.condition, rule.location),
                                     exceptions, rule.location)
    correlations = {
        definition.name: tuple(StepModel(step.name, step.source, _tree(lists, step.condition, step.location),
                                         tuple(step.key))
                               for step in definition.match.steps)
        for definition in collector.correlations.values()}
    return RulesModel(rules, macros, frozenset(collector.rules), correlations)


def _items(lists: ListExpander, ex: ExceptionDef) -> tuple[Expr, ...]:
    """The exception's values one by one: in the engine they are alternatives (`or`) under one `and not`."""
    values = [ex.values] if isinstance(ex.fields, str) else ex.values
    items = []
    for value in values:
        try:
            text = exception_text(replace(ex, values=value if isinstance(ex.fields, str) else [value]))
        except ExceptionShapeError as exc:
            raise RulesError(str(exc), ex.location) from None
        assert text is not None  # a value is there
        items.append(_tree(lists, text, ex.location))
    return tuple(items)


def _tree(lists: ListExpander, condition: str, location: Location) -> Expr:
    try:
        return parse_condition(lists.substitute(condition))
    except (ConditionSyntaxError, ConditionTooLong) as exc:
        raise RulesError(str(exc), location) from None
