"""Recursive-descent parser for Falco rule conditions.

Grammar (EBNF; a token written ``'w␣'`` needs at least one blank after it; blanks are space,
TAB, BS, CR, LF)::

    Expr        ::= OrExpr
    OrExpr      ::= AndExpr { 'or' ( Blank AndExpr | '(' Expr ')' ) }
    AndExpr     ::= NotExpr { 'and' ( Blank NotExpr | '(' Expr ')' ) }
    NotExpr     ::= { 'not' Blank } ( 'not(' Expr ')' | Check )
    Check       ::= '(' Expr ')' | ( Field | Transformer ) Condition | Identifier
    Condition   ::= 'exists'
                  | NumOp ( Number | Transformer | ValRef )
                  | StrOp ( Transformer | ValRef | QuotedStr | BareStr )
                  | StrOp Modifier ListValue
                  | ListOp ( ListValue | Transformer | ValRef )
    ListValue   ::= '(' [ StrValue { ',' StrValue } ] ')' | Identifier
    ValRef      ::= 'val(' Field ')' [ FieldArg ]
    Transformer ::= TName '(' TArg { ',' TArg } ')' [ FieldArg ]
    TArg        ::= Transformer | Field | QuotedStr | Number | '(' [ TArg { ',' TArg } ] ')'
    Field       ::= Identifier ( '.' Identifier )+ [ FieldArg ]
    FieldArg    ::= '[' ( QuotedStr | [^][ "' blank]+ ) ']'
    NumOp       ::= '<=' | '<' | '>=' | '>'
    StrOp       ::= '==' | '=' | '!=' | 'glob␣' | 'iglob␣' | 'contains␣' | 'icontains␣'
                  | 'bcontains␣' | 'startswith␣' | 'bstartswith␣' | 'endswith␣' | 'regex␣'
    Modifier    ::= 'oneof␣' | 'anyof␣' | 'allof␣'
    ListOp      ::= 'intersects' | 'in' | 'pmatch'
    Identifier  ::= [a-zA-Z]+ [a-zA-Z0-9_]*
    BareStr     ::= [^()"' blank =,]+

`and`, `or`, `not` bind as usual (not > and > or); and/or chains are n-ary. Every node keeps
its position; errors raise ConditionSyntaxError with the offset, line and column.

Bounds (no real rule comes near them: the upstream rules nest 4 levels and have at most 124 checks and
operators once macros are expanded): a condition may nest MAX_DEPTH levels (each parenthesis, each `not`
and each transformer call opens one) and hold MAX_NODES checks, macro references and and/or/not operators.
The parser recurses a few frames per level, so MAX_DEPTH keeps it far from Python's recursion limit.
"""

from __future__ import annotations

import re
from typing import TypeVar

from agent.engine.ast import And, Check, Expr, FieldRef, ListLit, MacroRef, Not, Operand, Or, Pos, StrLit, Transform

MAX_DEPTH = 100
MAX_NODES = 5_000
TRANSFORMERS = frozenset({"tolower", "toupper", "b64", "basename", "len", "join", "concat", "getopt"})
MODIFIERS = ("oneof", "anyof", "allof")
NUM_OPS = ("<=", "<", ">=", ">")
SYMBOL_STR_OPS = ("==", "=", "!=")
WORD_STR_OPS = (
    "glob", "iglob", "contains", "icontains", "bcontains", "startswith", "bstartswith", "endswith", "regex",
)
LIST_OPS = ("intersects", "in", "pmatch")

_BLANKS = " \t\b\r\n"
_BLANK_RE = re.compile(r"[ \t\b\r\n]*")
IDENT_RE = re.compile(r"[a-zA-Z]+[a-zA-Z0-9_]*")
FIELD_RE = re.compile(r"[a-zA-Z]+[a-zA-Z0-9_]*(?:\.[a-zA-Z]+[a-zA-Z0-9_]*)+")
_BARE_RE = re.compile(r"[^()\"' \t\b\r\n=,]+")
_ARG_BARE_RE = re.compile(r"[^\]\[\"' \t\b\r\n]+")
_NUMBER_RE = re.compile(r"0[xX][0-9a-fA-F]+|[+-]?[0-9]+\.?[0-9]*(?:[eE][+-][0-9]+)?")
_WORD_OP_RE = re.compile(r"(" + "|".join(sorted(WORD_STR_OPS, key=len, reverse=True)) + r")[ \t\b\r\n]")
_Node = TypeVar("_Node", Check, MacroRef, Not, And, Or)
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "\\": "\\", "/": "/", " ": "\\"}


class ConditionSyntaxError(ValueError):
    """A condition does not parse; `pos` locates the problem in the condition text."""

    def __init__(self, message: str, pos: Pos) -> None:
        super().__init__(f"{message} at {pos.line}:{pos.column}")
        self.message = message
        self.pos = pos


def parse_condition(text: str) -> Expr:
    """Parse a whole condition into a syntax tree, or raise ConditionSyntaxError."""
    return Parser(text).parse()


class Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.depth = 0
        self.nodes = 0
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    # ----- positions and errors -------------------------------------------------------------
    def pos(self, index: int | None = None) -> Pos:
        index = self.i if index is None else index
        line = _bisect_right(self._line_starts, index)
        return Pos(index, line, index - self._line_starts[line - 1] + 1)

    def fail(self, message: str, index: int | None = None) -> ConditionSyntaxError:
        return ConditionSyntaxError(message, self.pos(index))

    # ----- lexing helpers -------------------------------------------------------------------
    def skip_blanks(self) -> None:
        self.i = _BLANK_RE.match(self.text, self.i).end()  # type: ignore[union-attr]

    def peek(self, literal: str) -> bool:
        return self.text.startswith(literal, self.i)

    def eat(self, literal: str) -> bool:
        if self.text.startswith(literal, self.i):
            self.i += len(literal)
            return True
        return False

    def eat_word(self, word: str) -> bool:
        """Consume `word` only when a blank follows it."""
        end = self.i + len(word)
        if self.text.startswith(word, self.i) and end < len(self.text) and self.text[end] in _BLANKS:
            self.i = end
            return True
        return False

    def expect(self, literal: str, what: str) -> None:
        self.skip_blanks()
        if not self.eat(literal):
            raise self.fail(f"expected {what}")

    def at_end(self) -> bool:
        return self.i >= len(self.text)

    # ----- productions ----------------------------------------------------------------------
    def parse(self) -> Expr:
        self.skip_blanks()
        if self.at_end():
            raise self.fail("empty condition")
        expr = self.parse_or()
        self.skip_blanks()
        if not self.at_end():
            raise self.fail("unexpected token after condition")
        return expr

    def enter(self, index: int) -> None:
        """One nesting level more, opened at `index`; past MAX_DEPTH the error points there."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"condition nests deeper than {MAX_DEPTH} levels", index)

    def node(self, node: _Node) -> _Node:
        """Count one more check, macro reference or operator; past MAX_NODES the error points at it."""
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(f"condition has more than {MAX_NODES} checks and operators", node.pos.index)
        return node

    def parse_or(self) -> Expr:
        start = self.pos()
        children = [self.parse_and()]
        while True:
            self.skip_blanks()
            if self.eat_word("or"):
                children.append(self.parse_and())
            elif self.peek("or("):
                self.i += 2
                children.append(self.parse_group())
            else:
                break
        return children[0] if len(children) == 1 else self.node(Or(tuple(children), start))

    def parse_and(self) -> Expr:
        start = self.pos()
        children = [self.parse_not()]
        while True:
            self.skip_blanks()
            if self.eat_word("and"):
                children.append(self.parse_not())
            elif self.peek("and("):
                self.i += 3
                children.append(self.parse_group())
            else:
                break
        return children[0] if len(children) == 1 else self.node(And(tuple(children), start))

    def parse_not(self) -> Expr:
        self.skip_blanks()
        nots: list[Pos] = []
        while True:
            here = self.pos()
            if self.eat_word("not"):
                self.enter(here.index)
                nots.append(here)
                self.skip_blanks()
            else:
                break
        here = self.pos()
        if self.peek("not("):
            self.i += 3
            expr: Expr = self.node(Not(self.parse_group(), here))
        else:
            expr = self.parse_check()
        for pos in reversed(nots):
            expr = self.node(Not(expr, pos))
        self.depth -= len(nots)
        return expr

    def parse_group(self) -> Expr:
        """`'(' Expr ')'`, with the cursor on the opening parenthesis."""
        self.skip_blanks()
        if not self.eat("("):
            raise self.fail("expected '('")
        self.enter(self.i - 1)
        expr = self.parse_or()
        self.depth -= 1
        self.expect(")", "')'")
        return expr

    def parse_check(self) -> Expr:
        self.skip_blanks()
        start = self.i
        if self.peek("("):
            return self.parse_group()
        lhs = self.parse_lhs()
        if lhs is None:
            ident = IDENT_RE.match(self.text, self.i)
            if ident is None:
                raise self.fail("expected a field, a transformer, a macro name or '('")
            self.i = ident.end()
            return self.node(MacroRef(ident.group(), self.pos(start)))
        return self.node(self.parse_condition_tail(lhs, start))

    def parse_lhs(self) -> FieldRef | Transform | None:
        """A field or transformer at the cursor, or None (cursor unmoved) when there is neither."""
        ident = IDENT_RE.match(self.text, self.i)
        if ident is not None and ident.group() in TRANSFORMERS and self.text.startswith("(", ident.end()):
            return self.parse_transformer()
        if FIELD_RE.match(self.text, self.i):
            return self.parse_field()
        return None

    def parse_field(self) -> FieldRef:
        start = self.i
        match = FIELD_RE.match(self.text, self.i)
        if match is None:
            raise self.fail("expected a field name")
        self.i = match.end()
        return FieldRef(match.group(), self.parse_field_arg(), self.pos(start))

    def parse_field_arg(self) -> str | None:
        if not self.peek("["):
            return None
        self.i += 1
        if self.peek('"') or self.peek("'"):
            arg = self.parse_quoted()
        else:
            bare = _ARG_BARE_RE.match(self.text, self.i)
            if bare is None:
                raise self.fail("expected a field argument inside '[]'")
            arg = bare.group()
            self.i = bare.end()
        if not self.eat("]"):
            raise self.fail("expected ']' after the field argument")
        return arg

    def parse_transformer(self) -> Transform:
        start = self.i
        name = IDENT_RE.match(self.text, self.i).group()  # type: ignore[union-attr]
        self.i += len(name) + 1
        self.enter(start)
        args = [self.parse_transformer_arg()]
        while True:
            self.skip_blanks()
            if self.eat(","):
                args.append(self.parse_transformer_arg())
            else:
                break
        self.depth -= 1
        self.expect(")", f"')' to close {name}()")
        return Transform(name, tuple(args), self.pos(start), self.parse_field_arg())

    def parse_transformer_arg(self, *, in_list: bool = False) -> Operand:
        self.skip_blanks()
        start = self.i
        if self.peek("(") and not in_list:
            self.i += 1
            items: list[Operand] = []
            self.skip_blanks()
            if not self.peek(")"):
                items.append(self.parse_transformer_arg(in_list=True))
                while True:
                    self.skip_blanks()
                    if not self.eat(","):
                        break
                    items.append(self.parse_transformer_arg(in_list=True))
            self.expect(")", "')' to close the list")
            return ListLit(tuple(items), self.pos(start))
        lhs = self.parse_lhs()
        if lhs is not None:
            return lhs
        if self.peek('"') or self.peek("'"):
            return StrLit(self.parse_quoted(), self.pos(start), quoted=True)
        number = _NUMBER_RE.match(self.text, self.i)
        if number is not None:
            self.i = number.end()
            return StrLit(number.group(), self.pos(start), is_number=True)
        raise self.fail("expected a field, a transformer, a quoted string, a number or a list")

    def parse_valref(self) -> Transform:
        start = self.i
        self.i += len("val(")
        self.skip_blanks()
        field = self.parse_field()
        self.expect(")", "')' to close val()")
        return Transform("val", (field,), self.pos(start), self.parse_field_arg())

    def parse_rhs_callable(self) -> Transform | None:
        """A transformer or `val()` on the right-hand side, or None when neither is at the cursor."""
        if self.peek("val("):
            return self.parse_valref()
        ident = IDENT_RE.match(self.text, self.i)
        if ident is not None and ident.group() in TRANSFORMERS and self.text.startswith("(", ident.end()):
            return self.parse_transformer()
        return None

    def parse_condition_tail(self, lhs: FieldRef | Transform, start: int) -> Check:
        self.skip_blanks()
        pos = self.pos(start)
        if self.eat("exists"):
            return Check(lhs, "exists", None, pos)
        for op in NUM_OPS:
            if self.eat(op):
                self.skip_blanks()
                rhs = self.parse_rhs_callable()
                if rhs is None:
                    number = _NUMBER_RE.match(self.text, self.i)
                    if number is None:
                        raise self.fail(f"expected a number after '{op}'")
                    self.i = number.end()
                    return Check(lhs, op, StrLit(number.group(), self.pos(number.start()), is_number=True), pos)
                return Check(lhs, op, rhs, pos)
        str_op = self.lex_str_op()
        if str_op is not None:
            modifier = self.lex_modifier()
            if modifier is not None:
                return Check(lhs, str_op, self.parse_list_value(), pos, modifier)
            self.skip_blanks()
            return Check(lhs, str_op, self.parse_str_value(callable_ok=True), pos)
        for op in LIST_OPS:
            if self.eat(op):
                self.skip_blanks()
                rhs = self.parse_rhs_callable()
                return Check(lhs, op, rhs if rhs is not None else self.parse_list_value(), pos)
        raise self.fail("expected an operator")

    def lex_str_op(self) -> str | None:
        for op in SYMBOL_STR_OPS:
            if self.eat(op):
                return op
        match = _WORD_OP_RE.match(self.text, self.i)
        if match is not None:
            self.i = match.end(1)
            return match.group(1)
        return None

    def lex_modifier(self) -> str | None:
        """Consume a modifier only where the grammar makes it one; otherwise leave the cursor."""
        save = self.i
        self.skip_blanks()
        if self.i == save:
            return None
        for word in MODIFIERS:
            if self.eat_word(word):
                self.skip_blanks()
                ident = IDENT_RE.match(self.text, self.i)
                if self.peek("(") or (ident is not None and ident.group() not in ("and", "or", "not")):
                    return word
                break
        self.i = save
        return None

    def parse_str_value(self, *, callable_ok: bool = False) -> Operand:
        start = self.i
        if callable_ok:
            rhs = self.parse_rhs_callable()
            if rhs is not None:
                return rhs
        if self.peek('"') or self.peek("'"):
            return StrLit(self.parse_quoted(), self.pos(start), quoted=True)
        bare = _BARE_RE.match(self.text, self.i)
        if bare is None:
            raise self.fail("expected a value")
        self.i = bare.end()
        return StrLit(bare.group(), self.pos(start))

    def parse_list_value(self) -> ListLit:
        self.skip_blanks()
        start = self.i
        if not self.eat("("):
            ident = IDENT_RE.match(self.text, self.i)
            if ident is None:
                raise self.fail("expected '(' or a list name")
            self.i = ident.end()
            return ListLit((StrLit(ident.group(), self.pos(start)),), self.pos(start))
        items: list[Operand] = []
        self.skip_blanks()
        if not self.eat(")"):
            while True:
                self.skip_blanks()
                items.append(self.parse_str_value())
                self.skip_blanks()
                if self.eat(")"):
                    break
                if not self.eat(","):
                    raise self.fail("expected ',' or ')' in the list")
        return ListLit(tuple(items), self.pos(start))

    def parse_quoted(self) -> str:
        """A quoted string at the cursor, escapes applied."""
        start = self.i
        quote = self.text[self.i]
        self.i += 1
        out: list[str] = []
        text = self.text
        while True:
            if self.i >= len(text):
                raise self.fail("unterminated quoted string", start)
            ch = text[self.i]
            if ch == quote:
                self.i += 1
                return "".join(out)
            if ch != "\\":
                out.append(ch)
                self.i += 1
                continue
            if self.i + 1 >= len(text):
                raise self.fail("unterminated quoted string", start)
            esc = text[self.i + 1]
            if esc == quote:
                out.append(quote)
                self.i += 2
            elif esc in _ESCAPES:
                out.append(_ESCAPES[esc])
                self.i += 2
            elif esc == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", text[self.i + 2 : self.i + 4]):
                out.append(chr(int(text[self.i + 2 : self.i + 4], 16)))
                self.i += 4
            else:
                raise self.fail(f"invalid escape '\\{esc}' in quoted string")


def _bisect_right(starts: list[int], index: int) -> int:
    lo, hi = 0, len(starts)
    while lo < hi:
        mid = (lo + hi) // 2
        if starts[mid] <= index:
            lo = mid + 1
        else:
            hi = mid
    return lo
