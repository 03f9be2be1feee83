"""Compiles an expanded condition tree into one predicate over events, checked against a field table.

All decisions are made here, once: fields resolve to caching extractors, constants are converted
to the field's type, operators become closures, `in` lists become frozensets. Evaluation then
runs nested closures with no lookups by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from agent.engine.ast import And, Check, Expr, FieldRef, ListLit, MacroRef, Not, Operand, Or, Pos, StrLit, Transform
from agent.engine.codegen import generate_predicate
from agent.engine.operators import (
    LIST_OPS,
    NUM_OPS,
    InlineCheck,
    OperatorError,
    check_operator,
    convert,
    dynamic_pred,
    modifier_pred,
    scalar_inline,
    scalar_pred,
    set_inline,
    set_pred,
)
from agent.engine.transformers import TransformerError, Typed, build_transformer
from agent.event import Event
from agent.fields import AnyOf, ArgKind, FieldFlag, FieldTable, cached_extractor, field_key

Predicate = Callable[[Event], bool]
_UNSAFE_NA_PREFIXES = ("ka.", "jevt.")
_UNSAFE_NA_OPS = frozenset({"=", "==", "!=", "in", "intersects", "pmatch"})


class CompileError(ValueError):
    """A condition that does not compile; `unknown_filter` marks errors `skip-if-unknown-filter` may skip."""

    def __init__(self, message: str, pos: Pos, *, unknown_filter: bool = False) -> None:
        super().__init__(f"{message} at {pos.line}:{pos.column}")
        self.message = message
        self.pos = pos
        self.unknown_filter = unknown_filter


def unsupported_field_message(name: str) -> str:
    """Why a declared field that this agent cannot extract is refused, and where to see the ones it can."""
    return (f"field '{name}' is not supported by this agent yet: Falco has it, but the agent cannot extract it "
            "(`falco-agent fields` lists the fields it supports)")


@dataclass(frozen=True, slots=True)
class CheckPlan:
    """How one check runs once compiled.

    `kind` is ``exists`` (value present), ``holds`` (known true on every event: `exists` on a field every event
    has), ``eq`` (value == `value`), ``in`` (value in the frozenset `value`), ``pred`` (present and `value(v)`), or
    ``call`` (`value(event)` decides alone). A ``pred`` may also have `inline`, the same check for generated code to
    write out (no call).
    """

    kind: str
    lhs: Typed
    value: Any
    inline: InlineCheck | None = None

    def closure(self) -> Predicate:
        get, value = self.lhs.get, self.value
        if self.kind == "exists":
            return lambda ev: get(ev) is not None
        if self.kind == "holds":
            return _holds
        if self.kind == "eq":
            return lambda ev: get(ev) == value
        if self.kind == "in":
            return lambda ev: get(ev) in value
        if self.kind == "pred":
            return _guard(get, value)
        return value  # type: ignore[no-any-return]


@dataclass(slots=True)
class ConditionCompiler:
    """Compiles conditions for one source; caches compiled checks shared through macros."""

    table: FieldTable
    warnings: list[tuple[str, str]] = field(default_factory=list)
    _cache: dict[Check, tuple[CheckPlan, list[tuple[str, str]]]] = field(default_factory=dict)

    def compile(self, expr: Expr) -> Predicate:
        """One predicate for a whole condition: generated code when possible, else nested closures."""
        generated = generate_predicate(expr, self.plan)
        return generated if generated is not None else self.closure(expr)

    def plan(self, check: Check) -> CheckPlan:
        """The compiled plan of one check, shared by every rule that reaches it through a macro."""
        cached = self._cache.get(check)
        if cached is None:
            before = len(self.warnings)
            plan = self._check(check)
            # Keep the check's lint warnings so that every rule sharing it (through a macro) reports them.
            cached = self._cache[check] = (plan, self.warnings[before:])
        else:
            self.warnings.extend(cached[1])
        return cached[0]

    def closure(self, expr: Expr) -> Predicate:
        if isinstance(expr, Check):
            return self.plan(expr).closure()
        if isinstance(expr, Not):
            child = self.closure(expr.child)
            return lambda ev: not child(ev)
        if isinstance(expr, (And, Or)):
            return _chain([self.closure(c) for c in expr.children], conjunction=isinstance(expr, And))
        assert isinstance(expr, MacroRef)
        raise CompileError(f"Undefined macro '{expr.name}' used in filter.", expr.pos)

    # ----- operands ---------------------------------------------------------------------------
    def field(self, ref: FieldRef, *, in_transformer: bool = False, on_rhs: bool = False,
              in_output: bool = False) -> Typed:
        resolved = self.table.resolve(ref.name, ref.arg)
        if resolved is None:
            raise CompileError(f"filter_check called with nonexistent field {ref}", ref.pos, unknown_filter=True)
        spec, arg = resolved
        if not spec.is_implemented:
            # Refused rather than compiled to "never available": a rule on it would load and silently never
            # (or, under `not`, always) match. Falco would skip such a rule too, given skip-if-unknown-filter.
            raise CompileError(unsupported_field_message(spec.name), ref.pos, unknown_filter=True)
        if FieldFlag.PRINT_ONLY in spec.flags and not in_output:
            raise CompileError(f"field '{spec.name}' can only be used in outputs", ref.pos)
        if on_rhs and FieldFlag.NO_RHS in spec.flags:
            raise CompileError(f"field '{spec.name}' cannot be used on the right-hand side", ref.pos)
        if in_transformer and FieldFlag.NO_TRANSFORMER in spec.flags:
            raise CompileError(f"field '{spec.name}' cannot be used in a transformer", ref.pos)
        try:
            extract = spec.bind_uncached(arg)
        except ValueError as exc:
            raise CompileError(str(exc), ref.pos) from None
        key = field_key(spec.name, arg)
        indexed = arg is not None and arg.isdigit() and ArgKind.INDEX in spec.arg
        return Typed(cached_extractor(key, extract), spec.type.kind, spec.is_list and not indexed, key, extract)

    def operand(self, node: Operand, *, on_rhs: bool = False) -> Typed:
        if isinstance(node, FieldRef):
            return self.field(node, on_rhs=on_rhs)
        if isinstance(node, Transform):
            return self.transform(node, on_rhs=on_rhs)
        if isinstance(node, StrLit):
            value = node.value
            return Typed(lambda _ev: value, "number" if node.is_number else "string", False)
        assert isinstance(node, ListLit)
        parts = [self.operand(item, on_rhs=on_rhs) for item in node.items]
        getters = tuple(p.get for p in parts)

        def gather(ev: Event) -> Any:
            out: list[Any] = []
            for get in getters:
                value = get(ev)
                if isinstance(value, tuple):
                    out.extend(value)
                elif value is not None:
                    out.append(value)
            return tuple(out) or None

        kind = parts[0].kind if parts and all(p.kind == parts[0].kind for p in parts) else "string"
        return Typed(gather, kind, True)

    def transform(self, node: Transform, *, on_rhs: bool = False) -> Typed:
        if node.name == "val":
            ref = node.args[0]
            assert isinstance(ref, FieldRef)
            return self.field(ref, on_rhs=on_rhs)
        args = []
        for arg in node.args:
            if isinstance(arg, FieldRef):
                args.append(self.field(arg, in_transformer=True, on_rhs=on_rhs))
            else:
                args.append(self.operand(arg, on_rhs=on_rhs))
        try:
            return build_transformer(node.name, args, node.arg)
        except TransformerError as exc:
            raise CompileError(str(exc), node.pos) from None

    # ----- checks -----------------------------------------------------------------------------
    def _check(self, check: Check) -> CheckPlan:
        lhs = self.operand(check.lhs) if isinstance(check.lhs, Transform) else self.field(check.lhs)
        op = check.op
        try:
            check_operator(op, lhs.kind, is_list=lhs.is_list, modifier=check.modifier)
            plan = self._check_pred(check, lhs)
        except (OperatorError, TransformerError) as exc:
            raise CompileError(str(exc), check.pos) from None
        own = self._own_comparison(check, lhs)
        if own is not None:
            return own
        if isinstance(check.lhs, FieldRef) and check.lhs.arg is None:
            resolved = self.table.resolve(check.lhs.name, None)
            if resolved is not None and FieldFlag.ANY_OF in resolved[0].flags:
                return _any_of_plan(plan)
            if resolved is not None and FieldFlag.ALWAYS in resolved[0].flags and op == "exists":
                # Falco's files write "always true" as `jevt.rawtime exists`, and the activity rules all test it:
                # no read, and no conversion of the time to text, on every event they meet.
                return CheckPlan("holds", lhs, None)
        return plan

    def _own_comparison(self, check: Check, lhs: Typed) -> CheckPlan | None:
        """The plan a field with a comparator builds from the check's constants (FieldSpec.comparator), if any.

        Asked once the ordinary plan compiled, so operators and constants are checked the same way for it.
        """
        if not isinstance(check.lhs, FieldRef) or check.modifier is not None:
            return None
        resolved = self.table.resolve(check.lhs.name, check.lhs.arg)
        if resolved is None or resolved[0].comparator is None:
            return None
        items = check.rhs.items if isinstance(check.rhs, ListLit) else (check.rhs,)
        constants = tuple(item.value for item in items if isinstance(item, StrLit))
        if len(constants) != len(items):
            return None
        try:
            predicate = resolved[0].comparator(resolved[1], check.op, constants)
        except ValueError as exc:
            raise CompileError(str(exc), check.pos) from None
        return CheckPlan("call", lhs, predicate) if predicate is not None else None

    def _check_pred(self, check: Check, lhs: Typed) -> CheckPlan:
        op, rhs, get = check.op, check.rhs, lhs.get
        if op == "exists":
            return CheckPlan("exists", lhs, None)
        if isinstance(rhs, (Transform, FieldRef)):
            if op in ("pmatch", "regex"):
                raise OperatorError(f"operator '{op}' cannot compare with another field")
            other = self.operand(rhs, on_rhs=True).get
            compare = dynamic_pred(op, check.modifier)

            def dynamic(ev: Event) -> bool:
                a = get(ev)
                if a is None:
                    return False
                b = other(ev)
                return b is not None and compare(a, b)

            return CheckPlan("call", lhs, dynamic)
        self._lint(check, lhs)
        kind = lhs.kind
        if isinstance(rhs, ListLit):
            consts = [convert(_const_text(item), kind, op) for item in rhs.items]
            if check.modifier is not None:
                return CheckPlan("pred", lhs, modifier_pred(op, check.modifier, consts))
            if op not in LIST_OPS:
                raise OperatorError(f"operator '{op}' needs a single value, not a list")
            if not lhs.is_list and op != "pmatch" and kind not in ("ipaddr", "ipnet"):
                return CheckPlan("in", lhs, frozenset(consts))
            return CheckPlan("pred", lhs, set_pred(op, consts, is_list=lhs.is_list),
                             set_inline(op, consts, is_list=lhs.is_list))
        assert isinstance(rhs, StrLit)
        if op in LIST_OPS:
            raise OperatorError(f"operator '{op}' needs a list of values")
        if op in NUM_OPS and kind == "string":
            const: Any = rhs.value
        else:
            const = convert(rhs.value, kind, op)
        if op in ("=", "==") and not isinstance(const, (int, float)) and kind in ("string", "bytes", "bool"):
            return CheckPlan("eq", lhs, const)
        return CheckPlan("pred", lhs, scalar_pred(op, const), scalar_inline(op, const))

    def _lint(self, check: Check, lhs: Typed) -> None:
        lhs_name = check.lhs.name if isinstance(check.lhs, FieldRef) else ""
        values = check.rhs.items if isinstance(check.rhs, ListLit) else (check.rhs,)
        for value in values:
            if not isinstance(value, StrLit):
                continue
            # Quoting does not matter here: `"<NA>"` is as unsafe as `<NA>`.
            if (value.value == "<NA>" and check.op in _UNSAFE_NA_OPS
                    and lhs_name.startswith(_UNSAFE_NA_PREFIXES)):
                self.warnings.append(("LOAD_UNSAFE_NA_CHECK",
                                      f"comparing {lhs_name} with '<NA>' is unsafe: a missing value never "
                                      "equals it; use 'exists'"))
            elif not value.quoted and "." in value.value and self.table.resolve(value.value, None) is not None:
                self.warnings.append(("LOAD_COMPILE_CONDITION",
                                      f"string '{value.value}' may be a field; use val({value.value}) "
                                      "to compare with its value"))
        if check.op == "regex" and isinstance(check.rhs, StrLit) and _is_plain(check.rhs.value):
            self.warnings.append(("LOAD_COMPILE_CONDITION",
                                  f"regex '{check.rhs.value}' has no special characters: use '=' instead"))


def _holds(_event: Event) -> bool:
    return True


def _any_of_plan(plan: CheckPlan) -> CheckPlan:
    """The plan for a field that stands for several values: it holds when it holds for any one."""
    one = CheckPlan(plan.kind, replace(plan.lhs, get=lambda value: value), plan.value).closure()
    get = plan.lhs.get

    def any_value(ev: Event) -> bool:
        value = get(ev)
        if value is None:
            return False
        if isinstance(value, AnyOf):
            return any(one(v) for v in value.values)
        return one(value)

    return CheckPlan("call", plan.lhs, any_value)


def _const_text(item: Operand) -> str:
    if isinstance(item, StrLit):
        return item.value
    raise OperatorError("a list of values may not contain fields")


def _is_plain(pattern: str) -> bool:
    return not any(ch in pattern for ch in ".^$*+?{}[]\\|()")


def _guard(get: Callable[[Event], Any], pred: Callable[[Any], bool]) -> Predicate:
    def check(ev: Event) -> bool:
        value = get(ev)
        return value is not None and pred(value)

    return check


def _chain(preds: list[Predicate], *, conjunction: bool) -> Predicate:
    if len(preds) == 2:
        a, b = preds
        return (lambda ev: a(ev) and b(ev)) if conjunction else (lambda ev: a(ev) or b(ev))
    if len(preds) == 3:
        a, b, c = preds
        return (lambda ev: a(ev) and b(ev) and c(ev)) if conjunction else (lambda ev: a(ev) or b(ev) or c(ev))
    chain = tuple(preds)
    if conjunction:
        def all_of(ev: Event) -> bool:
            for pred in chain:
                if not pred(ev):
                    return False
            return True
        return all_of

    def any_of(ev: Event) -> bool:
        for pred in chain:
            if pred(ev):
                return True
        return False

    return any_of
