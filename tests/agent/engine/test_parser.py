"""Condition grammar: precedence, operators, values, escapes, positions and syntax errors."""

from __future__ import annotations

import pytest

from agent.rules import (
    And,
    Check,
    ConditionSyntaxError,
    Expr,
    FieldRef,
    ListLit,
    MacroRef,
    Not,
    Or,
    Pos,
    StrLit,
    Transform,
    parse_condition,
)


def string_rhs(text: str) -> StrLit:
    """The constant on the right of the single check `text` parses to."""
    check = parse_condition(text)
    assert isinstance(check, Check) and isinstance(check.rhs, StrLit), check
    return check.rhs


def syntax_error(text: str) -> ConditionSyntaxError:
    with pytest.raises(ConditionSyntaxError) as info:
        parse_condition(text)
    return info.value


class TestPublicApi:
    def test_facade_exports_parser(self) -> None:
        """`agent.rules` exposes parse_condition, its error and the node types."""
        import agent.rules

        assert {"parse_condition", "ConditionSyntaxError", "Check", "And", "Or", "Not"} <= set(agent.rules.__all__)
        assert isinstance(parse_condition("a.b exists"), Check)


class TestPrecedence:
    def test_and_binds_tighter_than_or(self) -> None:
        """`a or b and c` groups as `a or (b and c)`."""
        tree = parse_condition("p or q and r")
        assert isinstance(tree, Or)
        assert isinstance(tree.children[0], MacroRef)
        assert isinstance(tree.children[1], And)

    def test_not_binds_tighter_than_and(self) -> None:
        """`not a and b` negates only `a`."""
        tree = parse_condition("not p and q")
        assert isinstance(tree, And)
        assert isinstance(tree.children[0], Not)

    def test_chains_are_nary(self) -> None:
        """A run of `and` gives one node with every operand, left to right."""
        tree = parse_condition("p and q and r and s")
        assert isinstance(tree, And)
        assert [c.name for c in tree.children] == ["p", "q", "r", "s"]  # type: ignore[union-attr]

    def test_repeated_not_nests(self) -> None:
        """`not not a` keeps both negations."""
        tree = parse_condition("not not p")
        assert isinstance(tree, Not) and isinstance(tree.child, Not)
        assert tree.child.child == MacroRef("p", tree.child.child.pos)

    @pytest.mark.parametrize(("text", "expected"), [
        ("p and(q)", And((MacroRef("p", Pos(0, 1, 1)), MacroRef("q", Pos(6, 1, 7))), Pos(0, 1, 1))),
        ("p or(q)", Or((MacroRef("p", Pos(0, 1, 1)), MacroRef("q", Pos(5, 1, 6))), Pos(0, 1, 1))),
        ("not(p)", Not(MacroRef("p", Pos(4, 1, 5)), Pos(0, 1, 1))),
        ("(p)and q", And((MacroRef("p", Pos(1, 1, 2)), MacroRef("q", Pos(7, 1, 8))), Pos(0, 1, 1))),
        ("p and\n\tq", And((MacroRef("p", Pos(0, 1, 1)), MacroRef("q", Pos(7, 2, 2))), Pos(0, 1, 1))),
    ], ids=["and(", "or(", "not(", ")and", "newline-tab"])
    def test_operators_before_parenthesis_or_blank(self, text: str, expected: Expr) -> None:
        """`and(`, `or(` and `not(` need no blank; any blank separates tokens: each gives the tree (and the
        positions errors would name) that the spaced-out spelling would."""
        assert parse_condition(text) == expected

    def test_or_paren_quirk_rejects_following_and(self) -> None:
        """Quirk kept: after `or(` a group ends the or-operand, so `a or(b) and c` does not parse."""
        error = syntax_error("p or(q) and r")
        assert (error.pos.line, error.pos.column) == (1, 9)

    def test_or_blank_paren_parses(self) -> None:
        """With a blank, `a or (b) and c` is `a or ((b) and c)`."""
        tree = parse_condition("p or (q) and r")
        assert isinstance(tree, Or) and isinstance(tree.children[1], And)

    def test_identifier_starting_with_not_is_a_macro(self) -> None:
        """`nothing_here` is a macro name, not `not` + `hing_here`."""
        tree = parse_condition("nothing_here")
        assert isinstance(tree, MacroRef) and tree.name == "nothing_here"


class TestChecks:
    @pytest.mark.parametrize("op", ["=", "==", "!=", "<", "<=", ">", ">="])
    def test_symbol_operators_need_no_blank(self, op: str) -> None:
        """Symbol operators may touch the field and the value."""
        check = parse_condition(f"t.num{op}5")
        assert isinstance(check, Check) and check.op == op
        assert check.rhs.value == "5"  # type: ignore[union-attr]

    @pytest.mark.parametrize("op", ["glob", "iglob", "contains", "icontains", "bcontains", "startswith",
                                    "bstartswith", "endswith", "regex"])
    def test_word_operators(self, op: str) -> None:
        """Word operators followed by a blank parse with their value."""
        check = parse_condition(f"t.name {op} xy")
        assert isinstance(check, Check) and check.op == op and check.rhs.value == "xy"  # type: ignore[union-attr]

    @pytest.mark.parametrize("text", ["t.name containsxy", "t.name globx"])
    def test_word_operator_without_blank_is_an_error(self, text: str) -> None:
        """`containsxy` is not an operator."""
        error = syntax_error(text)
        assert (error.pos.line, error.pos.column) == (1, 8)

    @pytest.mark.parametrize("op", ["in", "intersects", "pmatch"])
    def test_list_operators_need_no_blank(self, op: str) -> None:
        """`t.name in(a,b)` parses with two values."""
        check = parse_condition(f"t.name {op}(a,b)")
        assert isinstance(check, Check) and check.op == op
        assert [i.value for i in check.rhs.items] == ["a", "b"]  # type: ignore[union-attr]

    def test_exists(self) -> None:
        """`exists` takes no value."""
        check = parse_condition("t.name exists")
        assert isinstance(check, Check) and check.op == "exists" and check.rhs is None

    def test_bare_identifier_after_list_op_is_one_value(self) -> None:
        """`x in name` (no list substituted) means `x in (name)`."""
        check = parse_condition("t.name in somename")
        assert isinstance(check.rhs, ListLit)  # type: ignore[union-attr]
        assert [i.value for i in check.rhs.items] == ["somename"]  # type: ignore[union-attr]

    def test_empty_list(self) -> None:
        """`in ()` is an empty list."""
        assert parse_condition("t.name in ()").rhs.items == ()  # type: ignore[union-attr]

    @pytest.mark.parametrize("value", ["runc:[1:CHILD]", "system:masters", "/a/b*", "<NA>", "a-b.c@d+e~f!"])
    def test_bare_strings_keep_punctuation(self, value: str) -> None:
        """Bare values may hold `: / . * - [ ] < > ! @ + ~`."""
        rhs = string_rhs(f"t.name = {value}")
        assert rhs.value == value and not rhs.quoted

    def test_bare_strings_split_on_commas_and_parentheses(self) -> None:
        """List values end at `,` and `)` even without blanks."""
        check = parse_condition("t.name in (a,b:c,/d)")
        assert [i.value for i in check.rhs.items] == ["a", "b:c", "/d"]  # type: ignore[union-attr]

    def test_number_required_after_numeric_operator(self) -> None:
        """`t.name > get` is a syntax error at the value."""
        error = syntax_error("t.name > get")
        assert (error.pos.line, error.pos.column) == (1, 10)

    @pytest.mark.parametrize("number", ["0x1F", "-3", "+4", "1.5", "2e+10", "10."])
    def test_number_literals(self, number: str) -> None:
        """Hex, signed, decimal and exponent numbers are kept as text."""
        rhs = string_rhs(f"t.num >= {number}")
        assert rhs.value == number and rhs.is_number

    def test_field_names_are_greedy(self) -> None:
        """Dotted segments all belong to one field name."""
        assert parse_condition("k8s.pod.label.app = x").lhs.name == "k8s.pod.label.app"  # type: ignore[union-attr]

    @pytest.mark.parametrize(("text", "arg"), [
        ("t.args[3] = x", "3"), ("t.label[app] = x", "app"), ("json.value[/a/b] = x", "/a/b"),
        ('json.value["/a b"] = x', "/a b"), ("t.path[/proc*] = x", "/proc*"),
    ])
    def test_field_arguments(self, text: str, arg: str) -> None:
        """Brackets carry a bare or quoted argument."""
        lhs = parse_condition(text).lhs  # type: ignore[union-attr]
        assert isinstance(lhs, FieldRef) and lhs.arg == arg

    def test_empty_field_argument_is_an_error(self) -> None:
        """`t.args[]` is rejected at the closing bracket."""
        error = syntax_error("t.args[] = x")
        assert (error.pos.line, error.pos.column) == (1, 8)


class TestModifiers:
    @pytest.mark.parametrize("modifier", ["oneof", "anyof", "allof"])
    def test_modifier_with_list(self, modifier: str) -> None:
        """`op modifier (list)` records the modifier and the list."""
        check = parse_condition(f"t.name startswith {modifier} (a, b)")
        assert check.modifier == modifier and isinstance(check.rhs, ListLit)  # type: ignore[union-attr]

    def test_modifier_word_before_and_is_a_value(self) -> None:
        """`t.name = oneof and x` compares with the string `oneof`."""
        tree = parse_condition("t.name = oneof and m")
        assert isinstance(tree, And)
        first = tree.children[0]
        assert isinstance(first, Check) and first.modifier is None and first.rhs.value == "oneof"  # type: ignore[union-attr]

    def test_modifier_word_at_end_is_a_value(self) -> None:
        """A trailing `anyof` is an ordinary value."""
        assert parse_condition("t.name = anyof").rhs.value == "anyof"  # type: ignore[union-attr]

    def test_modifier_before_list_name(self) -> None:
        """`= anyof some_list` takes an identifier as the list."""
        check = parse_condition("t.name = anyof some_list")
        assert check.modifier == "anyof" and check.rhs.items[0].value == "some_list"  # type: ignore[union-attr]


class TestTransformers:
    def test_left_transformer_and_right_val(self) -> None:
        """`tolower(f) = val(g)` builds transformer nodes on both sides."""
        check = parse_condition("tolower(t.name) = val(t.other)")
        assert isinstance(check.lhs, Transform) and check.lhs.name == "tolower"  # type: ignore[union-attr]
        assert isinstance(check.rhs, Transform) and check.rhs.name == "val"  # type: ignore[union-attr]

    def test_nested_transformers_with_literal_list_and_arg(self) -> None:
        """`getopt((...), "n:")[n]` keeps the list, the option string and the index."""
        check = parse_condition('getopt(("-n", "x", t.name), "n:")[n] = x')
        lhs = check.lhs  # type: ignore[union-attr]
        assert isinstance(lhs, Transform) and lhs.arg == "n"
        assert isinstance(lhs.args[0], ListLit) and len(lhs.args[0].items) == 3
        assert lhs.args[1] == StrLit("n:", lhs.args[1].pos, quoted=True)

    def test_transformer_name_needs_parenthesis(self) -> None:
        """`tolower (x)` with a blank is not a transformer call."""
        error = syntax_error("tolower (t.name) = x")
        assert (error.pos.line, error.pos.column) == (1, 9)

    def test_unclosed_transformer(self) -> None:
        """A missing `)` is reported where it was expected."""
        error = syntax_error("toupper(t.name = x")
        assert (error.pos.line, error.pos.column) == (1, 16)


class TestStrings:
    @pytest.mark.parametrize(("text", "value"), [
        (r'"\x41\t\\"', "A\t\\"),
        (r'"a\"b"', 'a"b'),
        (r"'a\'b'", "a'b"),
        (r'"\b\f\n\r\/"', "\b\f\n\r/"),
        ('"a\\ b"', "a\\b"),
        ("'single \"inside\"'", 'single "inside"'),
    ])
    def test_escapes(self, text: str, value: str) -> None:
        """Escape sequences are decoded; backslash-space yields one backslash."""
        rhs = string_rhs(f"t.name = {text}")
        assert rhs.value == value and rhs.quoted

    def test_escaped_backslash_closes_the_string(self) -> None:
        """Quirk not reproduced: `"a\\\\"` is closed by its final quote (upstream could not close it)."""
        tree = parse_condition('t.name = "a\\\\" and m')
        assert isinstance(tree, And) and tree.children[0].rhs.value == "a\\"  # type: ignore[union-attr]

    @pytest.mark.parametrize(("text", "column"), [
        (r't.name = "\q"', 11), (r't.name = "\x4"', 11), (r't.name = "\'"', 11), (r"t.name = '\"'", 11),
    ])
    def test_invalid_escapes(self, text: str, column: int) -> None:
        """Unknown escapes, short `\\x` and the other quote's escape are errors at the backslash."""
        error = syntax_error(text)
        assert "escape" in error.message and (error.pos.line, error.pos.column) == (1, column)

    def test_unterminated_string(self) -> None:
        """An unclosed quote is reported at the opening quote."""
        error = syntax_error('t.name = "abc')
        assert error.message == "unterminated quoted string" and (error.pos.line, error.pos.column) == (1, 10)


class TestErrors:
    @pytest.mark.parametrize(("text", "line", "column"), [
        ("", 1, 1),
        ("   \n ", 2, 2),
        ("p andq", 1, 3),
        ("p or", 1, 3),
        ("(p", 1, 3),
        ("p)", 1, 2),
        ("t.name", 1, 7),
        ("t.name =", 1, 9),
        ("t.name in (a b)", 1, 14),
        ("t.name in (a=b)", 1, 13),
        ("p and\n  t.name ~ x", 2, 10),
        ("1abc", 1, 1),
        ("t.name = anyof val(t.other)", 1, 19),
    ])
    def test_error_positions(self, text: str, line: int, column: int) -> None:
        """Syntax errors point at the offending line and column."""
        error = syntax_error(text)
        assert (error.pos.line, error.pos.column) == (line, column), error
        assert str(error).endswith(f"at {line}:{column}")

    def test_nesting_limit(self) -> None:
        """More than 100 nested parentheses is an error at the first one too many."""
        error = syntax_error("(" * 101 + "p" + ")" * 101)
        assert error.message == "condition nests deeper than 100 levels"
        assert (error.pos.line, error.pos.column) == (1, 101)

    def test_nesting_at_limit_parses(self) -> None:
        """100 nested parentheses are accepted."""
        tree = parse_condition("(" * 100 + "p" + ")" * 100)
        assert isinstance(tree, MacroRef) and (tree.name, tree.pos.column) == ("p", 101)

    def test_each_not_is_a_level(self) -> None:
        """A chain of `not` nests like parentheses: 100 parse, the 101st is an error where it starts."""
        tree = parse_condition("not " * 100 + "p")
        for _ in range(100):
            assert isinstance(tree, Not)
            tree = tree.child
        assert isinstance(tree, MacroRef)
        error = syntax_error("not " * 990 + "p")
        assert "100 levels" in error.message and error.pos.column == 401

    def test_each_transformer_call_is_a_level(self) -> None:
        """Nested transformer calls count too."""
        parse_condition("tolower(" * 100 + "t.name" + ")" * 100 + " = x")
        error = syntax_error("tolower(" * 101 + "t.name" + ")" * 101 + " = x")
        assert "100 levels" in error.message and error.pos.column == 801

    def test_node_limit(self) -> None:
        """A condition holds at most 5,000 checks, macro references and operators; the first one past is the error."""
        assert isinstance(parse_condition(" or ".join(["p"] * 4_999)), Or)
        error = syntax_error(" or ".join(["p"] * 5_001))
        assert error.message == "condition has more than 5000 checks and operators"
        assert error.pos.column == 5_000 * 5 + 1

    @pytest.mark.parametrize("text", [
        "(" * 100 + "p" + ")" * 100,
        "not (" * 50 + "p" + ")" * 50,
        "p and (" * 100 + "p" + ")" * 100,
        "tolower(" * 100 + "t.name" + ")" * 100 + " = x",
    ])
    def test_nesting_at_the_limit_fits_a_deep_caller_stack(self, text: str) -> None:
        """Parsing at the limit needs a few hundred frames: it works from a caller already 300 frames deep."""
        def nested(depth: int) -> object:
            return parse_condition(text) if depth == 0 else nested(depth - 1)

        nested(300)

    def test_positions_on_nodes(self) -> None:
        """Nodes carry 1-based line and column of where they start."""
        tree = parse_condition("p and\n  t.name = x")
        check = tree.children[1]  # type: ignore[union-attr]
        assert (check.pos.line, check.pos.column, check.pos.index) == (2, 3, 8)
