"""Turns everything collected so far into compiled rules: lists, then macros, then rules.

Runs after each rules file over all definitions seen until then, and stops at the first error,
as Falco's compiler does. One pass compiles at most MAX_LOAD_NODES checks and operators, counting each rule's and
correlation's condition with its macros expanded (the four upstream rules files add up to 990): a small file whose
rules each repeat one large macro is refused instead of taking minutes and gigabytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agent.engine.append_output import OutputAppender
from agent.engine.ast import Check, Expr, FieldRef, walk
from agent.engine.collector import Collector
from agent.engine.compiler import CompileError, ConditionCompiler, Predicate
from agent.engine.infos import RuleDef
from agent.engine.load_result import ErrorCode, LoadResult, WarningCode
from agent.engine.macros import ConditionTooLong, ListExpander, MacroError, MacroExpander
from agent.engine.output_format import OutputFormat, compile_output
from agent.engine.parser import ConditionSyntaxError, parse_condition
from agent.engine.rule_exceptions import ExceptionShapeError, condition_with_exceptions
from agent.engine.ruleset import MISSING, CompiledRule, possible_values
from agent.fields import FieldFlag
from agent.location import Location
from agent.source import SourceSpec

#: Falco warns about a rule of an indexed source that matches more than this many index values.
MAX_INDEXED_VALUES = 100
MAX_LOAD_NODES = 100_000


@dataclass(slots=True)
class CompileContext:
    """What compiling a load's rules and correlations shares: expanded lists and macros, one compiler per source."""

    collector: Collector
    sources: dict[str, SourceSpec]
    result: LoadResult
    lists: ListExpander
    macros: MacroExpander
    compilers: dict[str, ConditionCompiler]
    parse_cache: dict[str, Expr]
    appender: OutputAppender
    #: Checks and operators of the conditions expanded so far, macros counted at each use.
    nodes: int = 0


def build_context(collector: Collector, sources: dict[str, SourceSpec], result: LoadResult,
                  *, parse_cache: dict[str, Expr], appender: OutputAppender) -> CompileContext:
    """Expand lists and macros once; raises LoadAborted after recording an error. `appender` extends rule outputs
    (append_output)."""
    for list_def in collector.lists.values():
        list_def.used = False
    for macro_def in collector.macros.values():
        macro_def.used = False
    lists = ListExpander(collector.lists)
    trees: dict[str, Expr] = {}
    for macro in sorted(collector.macros.values(), key=lambda m: m.index):
        trees[macro.name] = _parse(lists, macro.condition, macro.location, result, parse_cache,
                                   item=("macro", macro.name))
    expander = MacroExpander(collector.macros, trees)
    for macro in sorted(collector.macros.values(), key=lambda m: m.index):
        try:
            expander.resolve_macro(macro.name)
        except MacroError as exc:
            raise result.error(ErrorCode.LOAD_ERR_VALIDATE, str(exc),
                               _at(macro.location, "macro", macro.name, exc.pos.column)) from None
    return CompileContext(collector, sources, result, lists, expander,
                          {name: ConditionCompiler(spec.fields) for name, spec in sources.items()}, parse_cache,
                          appender)


def compile_rules(ctx: CompileContext) -> list[CompiledRule]:
    """Compile all collected rules of known sources; raises LoadAborted after recording an error."""
    compiled = []
    for rule in sorted(ctx.collector.rules.values(), key=lambda r: r.index):
        if not rule.source_known:
            continue
        built = _compile_rule(rule, ctx)
        if built is not None:
            compiled.append(built)
    return compiled


def expand_condition(ctx: CompileContext, text: str, location: Location, *, item: tuple[str, str]) -> Expr:
    """A condition's tree with lists substituted and macros expanded; errors name `item` at `location`."""
    tree = _parse(ctx.lists, text, location, ctx.result, ctx.parse_cache, item=item)
    try:
        expanded = ctx.macros.expand(tree)
    except MacroError as exc:
        raise ctx.result.error(ErrorCode.LOAD_ERR_VALIDATE, str(exc), _at(location, *item)) from None
    ctx.nodes += expanded.nodes
    if ctx.nodes > MAX_LOAD_NODES:
        raise ctx.result.error(ErrorCode.LOAD_ERR_VALIDATE,
                               f"the rules add up to more than {MAX_LOAD_NODES} checks and operators once macros "
                               "are expanded", _at(location, *item))
    return expanded.tree


def compile_predicate(ctx: CompileContext, source: str, expanded: Expr, loc: Location, *,
                      warn_evttypes: bool = True) -> Predicate:
    """Compile an expanded condition and report its lint warnings at `loc`; CompileError passes through."""
    spec = ctx.sources[source]
    compiler = ctx.compilers[source]
    compiler.warnings.clear()
    predicate = compiler.compile(expanded)
    for code, message in dict.fromkeys(compiler.warnings):
        ctx.result.warn(WarningCode[code], message, loc)
    _deprecated_fields(expanded, spec, ctx.result, loc)
    if spec.warn_unindexed and warn_evttypes:
        _warn_unindexed(expanded, spec, ctx.result, loc)
    return predicate


def unused_warnings(collector: Collector, result: LoadResult) -> None:
    """After a successful load: lists and macros that no rule, correlation, macro or list refers to."""
    for definition in collector.lists.values():
        if not definition.used:
            result.warn(WarningCode.LOAD_UNUSED_LIST, "List not referred to by any other rule/macro",
                        _at(definition.location, "list", definition.name))
    for macro in collector.macros.values():
        if not macro.used:
            result.warn(WarningCode.LOAD_UNUSED_MACRO, "Macro not referred to by any other rule/macro",
                        _at(macro.location, "macro", macro.name))


def _compile_rule(rule: RuleDef, ctx: CompileContext) -> CompiledRule | None:
    result = ctx.result
    source = ctx.sources[rule.source]
    loc = _at(rule.location, "rule", rule.name)
    for ex in rule.exceptions:
        for field in ([ex.fields] if isinstance(ex.fields, str) else ex.fields or []):
            _check_exception_field(field, ex.location, rule, ctx)
    try:
        text = condition_with_exceptions(rule.condition, rule.exceptions)
    except ExceptionShapeError as exc:
        raise result.error(ErrorCode.LOAD_ERR_VALIDATE, str(exc), exc.exception.location) from None
    expanded = expand_condition(ctx, text, rule.location, item=("rule", rule.name))
    warnings: list[str] = []
    # The output is validated first, then the condition; the step that fails decides the code.
    code = ErrorCode.LOAD_ERR_COMPILE_OUTPUT
    try:
        output = compile_output(rule.output, source.fields, warn=warnings.append)
        for message in warnings:
            result.warn(WarningCode.LOAD_DEPRECATED_ITEM, message, loc)
        _deprecated_output_fields(output, source, result, loc)
        output = ctx.appender.extend(output, name=rule.name, source=rule.source, tags=rule.tags)
        code = ErrorCode.LOAD_ERR_COMPILE_CONDITION
        predicate = compile_predicate(ctx, rule.source, expanded, loc, warn_evttypes=rule.warn_evttypes)
    except CompileError as exc:
        if exc.unknown_filter and rule.skip_if_unknown_filter:
            result.warn(WarningCode.LOAD_UNKNOWN_FILTER, f"rule skipped: {exc}", loc)
            return None
        raise result.error(code, str(exc), loc) from None
    return CompiledRule(
        name=rule.name, priority=rule.priority, source=rule.source, tags=tuple(sorted(rule.tags)),
        description=rule.desc, predicate=predicate, output=output, index=rule.index, condition=expanded,
        enabled=rule.enabled, capture=rule.capture,
    )


def _check_exception_field(field: str, loc: Location, rule: RuleDef, ctx: CompileContext) -> None:
    """As Falco's collector: an exception field the rule's source does not know fails the load on the exception."""
    try:
        probe = parse_condition(f"{field} exists")
        ctx.compilers[rule.source].compile(probe)
    except (ConditionSyntaxError, CompileError) as exc:
        raise ctx.result.error(ErrorCode.LOAD_ERR_VALIDATE, f"'{field}' is not a supported filter field: {exc}",
                               loc) from None


def _parse(lists: ListExpander, condition: str, location: Location, result: LoadResult, cache: dict[str, Expr],
           *, item: tuple[str, str]) -> Expr:
    """The tree of `condition` with lists substituted; raises LoadAborted (recorded) when it does not parse."""
    try:
        text = lists.substitute(condition)
    except ConditionTooLong as exc:
        raise result.error(ErrorCode.LOAD_ERR_COMPILE_CONDITION, str(exc), _at(location, *item)) from None
    tree = cache.get(text)
    if tree is not None:
        return tree
    try:
        tree = parse_condition(text)
    except ConditionSyntaxError as exc:
        snippet = text.strip().replace("\n", " ")
        if len(snippet) > 120:
            snippet = snippet[:117] + "..."
        raise result.error(ErrorCode.LOAD_ERR_COMPILE_CONDITION,
                           f"{exc} of the condition: {snippet}",
                           _at(location, item[0], item[1], exc.pos.column)) from None
    cache[text] = tree
    return tree


def _deprecated_fields(expr: Expr, source: SourceSpec, result: LoadResult, loc: Location) -> None:
    uses = ((node.lhs.name, node.lhs.arg) for node in walk(expr)
            if isinstance(node, Check) and isinstance(node.lhs, FieldRef))
    _warn_deprecated(uses, source, result, loc, where="condition")


def _deprecated_output_fields(output: OutputFormat, source: SourceSpec, result: LoadResult, loc: Location) -> None:
    # An output_fields key is the field as written, `name` or `name[arg]`: the name is what says deprecated.
    uses = ((key.split("[", 1)[0], None) for key, _get in output.fields)
    _warn_deprecated(uses, source, result, loc, where="output")


def _warn_deprecated(uses: Iterable[tuple[str, str | None]], source: SourceSpec, result: LoadResult, loc: Location,
                     *, where: str) -> None:
    """One LOAD_DEPRECATED_ITEM per deprecated field among `uses` (name, argument)."""
    seen = set()
    for name, arg in uses:
        resolved = source.fields.resolve(name, arg)
        if resolved and FieldFlag.DEPRECATED in resolved[0].flags and resolved[0].name not in seen:
            seen.add(resolved[0].name)
            result.warn(WarningCode.LOAD_DEPRECATED_ITEM,
                        f"field '{resolved[0].name}' is deprecated and used in the {where}", loc)


def _warn_unindexed(expr: Expr, source: SourceSpec, result: LoadResult, loc: Location) -> None:
    field = source.index_fields[0] if source.index_fields else None
    if field is None:
        return
    values = possible_values(expr, field)
    # As Falco: a condition that admits no value at all is flagged too (it can never match).
    if values.cofinite or not values.values - {MISSING} or len(values.values) > MAX_INDEXED_VALUES:
        result.warn(WarningCode.LOAD_NO_EVTTYPE,
                    f"Rule matches too many {field} values: it is evaluated on every event of its source, which "
                    f"has a significant performance penalty; add a condition on {field}", loc)


def _at(location: Location, kind: str, name: str, column: int = 0) -> Location:
    return Location(location.file, location.line, column, kind, name)
