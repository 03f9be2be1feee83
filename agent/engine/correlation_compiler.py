"""Compiles collected correlations: each step's condition like a rule's, keys to getters, the output over steps.

The output of a correlation names fields by step (`%exec.ka.user.name`, `%shell.proc.cmdline`); a threshold's
output may name its fields bare. When a step matches, only the values its output needs are captured, so the
state holds small tuples, never whole events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.engine.ast import Check, Expr
from agent.engine.compiler import CompileError, Predicate
from agent.engine.correlation_collector import CorrelationDef, StepDef
from agent.engine.load_result import ErrorCode, WarningCode
from agent.engine.output_format import OutputFormat, compile_output
from agent.engine.parser import ConditionSyntaxError, parse_condition
from agent.engine.rule_compiler import CompileContext, compile_predicate, expand_condition
from agent.event import Event
from agent.fields import Extractor, FieldSpec, FieldTable, field_key
from agent.location import Location
from agent.priority import Priority

Getter = Callable[[Event], Any]


@dataclass(frozen=True, slots=True)
class NewValueCheck:
    """A step matches only on a value of `get` not seen for the same `per` key within `history_ns`."""

    get: Getter
    per: tuple[Getter, ...]
    history_ns: int


@dataclass(slots=True, eq=False)
class CompiledStep:
    """One step, indexed with the rules of its source; `name` is `correlation/step` for index diagnostics."""

    name: str
    step: str
    source: str
    position: int
    index: int
    condition: Expr
    predicate: Predicate
    key: tuple[Getter, ...]
    count: int
    distinct: Getter | None
    absent: bool
    within_ns: int
    new_value: NewValueCheck | None
    #: Filled while the output compiles: the getters whose values this step keeps when it matches.
    captures: list[Getter] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class CompiledCorrelation:
    """A correlation ready to run; `signature` is equal for two loads that match the same way."""

    name: str
    priority: Priority
    tags: tuple[str, ...]
    description: str
    output: OutputFormat
    steps: tuple[CompiledStep, ...]
    window_ns: int
    lateness_ns: int
    max_keys: int
    index: int
    signature: tuple[Any, ...]
    enabled: bool = True

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(step.source for step in self.steps))


def compile_correlations(ctx: CompileContext) -> list[CompiledCorrelation]:
    """Compile every collected correlation whose steps' sources are known; raises LoadAborted on an error."""
    out = []
    counter = 0
    for definition in sorted(ctx.collector.correlations.values(), key=lambda d: d.index):
        unknown = sorted(definition.sources - set(ctx.sources))
        if unknown:
            ctx.result.warn(WarningCode.LOAD_UNKNOWN_SOURCE, f"unknown source {unknown[0]}, skipping",
                            definition.location)
            continue
        steps = []
        for position, step in enumerate(definition.match.steps):
            counter += 1
            steps.append(_compile_step(ctx, definition, step, position, counter))
        output = _compile_output(ctx, definition, steps)
        match = definition.match
        signature = (definition.output, match.window_ns, match.lateness_ns, match.max_keys,
                     *((s.source, s.condition, tuple(d.key), d.count, d.distinct, d.absent, d.within_ns,
                        repr(d.new_value)) for s, d in zip(steps, match.steps, strict=True)))
        out.append(CompiledCorrelation(
            name=definition.name, priority=definition.priority, tags=tuple(sorted(definition.tags)),
            description=definition.desc, output=output, steps=tuple(steps), window_ns=match.window_ns,
            lateness_ns=match.lateness_ns, max_keys=match.max_keys, index=definition.index, signature=signature,
            enabled=definition.enabled,
        ))
    return out


def _compile_step(ctx: CompileContext, definition: CorrelationDef, step: StepDef, position: int,
                  index: int) -> CompiledStep:
    loc = Location(step.location.file, step.location.line, 0, "correlation", definition.name)
    expanded = expand_condition(ctx, step.condition, loc, item=("correlation", definition.name))
    try:
        predicate = compile_predicate(ctx, step.source, expanded, loc)
        key = tuple(_getter(ctx, step.source, text) for text in step.key)
        distinct = _getter(ctx, step.source, step.distinct) if step.distinct else None
        new_value = None
        if step.new_value is not None:
            spec = step.new_value
            new_value = NewValueCheck(_getter(ctx, step.source, spec.field),
                                      tuple(_getter(ctx, step.source, text) for text in spec.per), spec.history_ns)
    except CompileError as exc:
        raise ctx.result.error(ErrorCode.LOAD_ERR_COMPILE_CONDITION, f"step '{step.name}': {exc}", loc) from None
    return CompiledStep(
        name=f"{definition.name}/{step.name}", step=step.name, source=step.source, position=position, index=index,
        condition=expanded, predicate=predicate, key=key, count=step.count, distinct=distinct, absent=step.absent,
        within_ns=step.within_ns, new_value=new_value,
    )


def _getter(ctx: CompileContext, source: str, text: str) -> Getter:
    """The getter of a field (or transformer) named in `key`, `distinct` or `new_value`."""
    try:
        check = parse_condition(f"{text} exists")
    except ConditionSyntaxError as exc:
        raise CompileError(f"'{text}' is not a field: {exc.message}", exc.pos) from None
    assert isinstance(check, Check)
    return ctx.compilers[source].operand(check.lhs).get


def _compile_output(ctx: CompileContext, definition: CorrelationDef, steps: list[CompiledStep]) -> OutputFormat:
    loc = Location(definition.location.file, definition.location.line, 0, "correlation", definition.name)
    table = _StepFields(steps, {s.source: ctx.sources[s.source].fields for s in steps},
                        bare=definition.match.kind == "threshold")
    try:
        return compile_output(definition.output, table)
    except CompileError as exc:
        hint = "" if table.bare else " (name fields by a step that is not absent: %<step>.<field>)"
        raise ctx.result.error(ErrorCode.LOAD_ERR_COMPILE_OUTPUT, f"{exc}{hint}", loc) from None


class _StepFields(FieldTable):
    """Output fields of a correlation: `<step>.<field>` reads the value the step captured when it matched.

    Resolving a field registers a capture on its step, so the output decides what the state keeps.
    The synthetic event an alert renders from carries one tuple of captured values per step as payload.
    """

    def __init__(self, steps: list[CompiledStep], tables: dict[str, FieldTable], *, bare: bool) -> None:
        super().__init__(())
        self.bare = bare
        self._steps = {step.step: step for step in steps}
        self._tables = tables
        self._slots: list[dict[str, int]] = [{} for _ in steps]

    def resolve(self, name: str, arg: str | None) -> tuple[FieldSpec, str | None] | None:
        prefix, _, rest = name.partition(".")
        step = self._steps.get(prefix) if rest else None
        if step is None:
            if not self.bare:
                return None
            step, rest = next(iter(self._steps.values())), name
        if step.absent:  # an absent step never matched: it has nothing to show
            return None
        found = self._tables[step.source].resolve(rest, arg)
        if found is None:
            return None
        spec, arg = found
        if not spec.is_implemented:  # as it is, so that the compiler refuses it as in a rule's output
            return spec, arg
        shown = spec.name if self.bare else f"{step.step}.{spec.name}"
        return FieldSpec(shown, spec.type, spec.description, self._capture_factory(step, spec), spec.is_list,
                         spec.arg, spec.flags), arg

    def _capture_factory(self, step: CompiledStep, spec: FieldSpec) -> Callable[[str | None], Extractor]:
        slots = self._slots[step.position]
        position = step.position

        def factory(arg: str | None) -> Extractor:
            key = field_key(spec.name, arg)
            slot = slots.get(key)
            if slot is None:
                slot = slots[key] = len(step.captures)
                step.captures.append(spec.bind(arg))
            return lambda event: event.payload[position][slot]

        return factory
