"""Public entry to the condition language: parse a Falco rule condition into its syntax tree."""

from agent.engine.ast import And, Check, Expr, FieldRef, ListLit, MacroRef, Not, Operand, Or, Pos, StrLit, Transform
from agent.engine.parser import ConditionSyntaxError, parse_condition

__all__ = [
    "And",
    "Check",
    "ConditionSyntaxError",
    "Expr",
    "FieldRef",
    "ListLit",
    "MacroRef",
    "Not",
    "Operand",
    "Or",
    "Pos",
    "StrLit",
    "Transform",
    "parse_condition",
]
