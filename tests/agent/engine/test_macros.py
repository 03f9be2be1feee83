"""List substitution into condition text and macro expansion, with Falco's ordering and visibility rules."""

from __future__ import annotations

import pytest

from agent.engine.infos import ListDef
from agent.engine.macros import ListExpander


def expander(*lists: tuple[str, list[str]]) -> ListExpander:
    defs = {name: ListDef(name, items, n, n, None) for n, (name, items) in enumerate(lists, start=1)}  # type: ignore[arg-type]
    return ListExpander(defs)


class TestListSubstitution:
    @pytest.mark.parametrize(("text", "expected"), [
        ("x in (admins, bob)", 'x in ( root, "ops team" , bob)'),
        ("x in (admins)", 'x in ( root, "ops team" )'),
        ("x in admins", 'x in root, "ops team" '),
        ("x=admins", 'x= root, "ops team" '),
        ('x = "a admins b"', 'x = "a root, "ops team" b"'),
        ('x = "admins"', 'x = "admins"'),
        ("x in (admins_more)", "x in (admins_more)"),
        ("x in (my_admins)", "x in (my_admins)"),
        ("x in (\n  admins\n)", 'x in ( root, "ops team" )'),
    ])
    def test_textual_substitution(self, text: str, expected: str) -> None:
        """A list name standing alone is replaced by its items, swallowing blanks; quoted items stay quoted."""
        assert expander(("admins", ["root", "ops team"])).substitute(text) == expected

    @pytest.mark.parametrize(("text", "expected"), [
        ("x in (a, empty)", "x in (a  )"),
        ("x in (empty, a)", "x in (   a)"),
        ("x in (empty)", "x in (  )"),
    ])
    def test_empty_list_removes_one_comma(self, text: str, expected: str) -> None:
        """An empty list takes one adjacent comma with it, the left one first."""
        assert expander(("empty", [])).substitute(text) == expected

    def test_prequoted_items_are_kept(self) -> None:
        """An item already written with quotes is pasted verbatim."""
        assert expander(("l", ['"a b"', "'c d'"])).substitute("x in (l)") == "x in ( \"a b\", 'c d' )"

    def test_later_list_expands_items_of_earlier_substitution(self) -> None:
        """Quirk kept: an item naming a later list is expanded when that list is substituted."""
        assert expander(("first", ["second"]), ("second", ["z"])).substitute("x in (first)") == "x in ( z )"

    def test_lists_of_lists_need_earlier_definition(self, lab) -> None:
        """Inside `items`, only lists defined earlier are inlined; later ones stay text until substituted."""
        engine = lab.loaded("""\
- list: inner
  items: [a, b]
- list: outer
  items: [inner, c]
""" + lab.rule("t.name in (outer)"))
        assert [lab.fired(engine, name=n) for n in ("a", "c", "inner")] == [["r"], ["r"], []]

    def test_list_defined_in_a_later_file_is_substituted(self, lab) -> None:
        """Lists in conditions have no ordering constraint across files."""
        engine = lab.loaded(lab.rule("t.name in (late)"), "- list: late\n  items: [z]\n")
        assert lab.fired(engine, name="z") == ["r"]

    def test_unknown_list_name_is_a_literal(self, lab) -> None:
        """`x in name` with no such list compares with the word itself."""
        assert lab.matches("t.name in nolist", name="nolist")

    def test_empty_list_in_rule(self, lab) -> None:
        """A rule using an empty list next to other values still loads and matches the others."""
        engine = lab.loaded("- list: none\n  items: []\n" + lab.rule("t.name in (a, none)"))
        assert lab.fired(engine, name="a") == ["r"]

    def test_unused_list_and_macro_warn(self, lab) -> None:
        """Lists and macros nobody refers to warn after a successful load, at their lines."""
        _, result = lab.load("- list: l\n  items: [a]\n- macro: m\n  condition: t.name = a\n" + lab.rule("t.name = b"))
        assert [(p.code.value, p.location.line) for p in result.problems] == [
            ("LOAD_UNUSED_LIST", 1), ("LOAD_UNUSED_MACRO", 4)]

    def test_list_inlined_into_list_is_used(self, lab) -> None:
        """A list used only inside another list's items does not warn."""
        _, result = lab.load("- list: a\n  items: [x]\n- list: b\n  items: [a]\n" + lab.rule("t.name in (b)"))
        assert result.successful and not result.problems


class TestMacros:
    def test_expansion_keeps_precedence(self, lab) -> None:
        """`not m` negates the whole macro, whatever its operators."""
        prelude = "- macro: m\n  condition: t.name = a or t.name = b\n"
        engine = lab.loaded(prelude + lab.rule("not m and t.other = x"))
        assert lab.fired(engine, name="b", other="x") == []
        assert lab.fired(engine, name="c", other="x") == ["r"]

    def test_nested_macros(self, lab) -> None:
        """Macros may build on earlier macros."""
        engine = lab.loaded("- macro: a\n  condition: t.name = x\n- macro: b\n  condition: a and t.num > 1\n"
                            + lab.rule("b"))
        assert lab.fired(engine, name="x", num=2) == ["r"]
        assert lab.fired(engine, name="x", num=1) == []

    def test_macro_cannot_see_later_macro(self, lab) -> None:
        """A macro referencing one first defined after it is an undefined macro."""
        error = lab.error("- macro: a\n  condition: b\n- macro: b\n  condition: t.name = x\n" + lab.rule("a"))
        assert (error.code.value, error.location.line) == ("LOAD_ERR_VALIDATE", 2)
        assert "Undefined macro 'b'" in error.message and error.location.column == 1

    def test_redefinition_refreshes_visibility(self, lab) -> None:
        """Redefining an early macro after others lets it reference them."""
        engine = lab.loaded("- macro: a\n  condition: t.name = q\n- macro: b\n  condition: t.name = x\n"
                            "- macro: a\n  condition: b\n" + lab.rule("a"))
        assert lab.fired(engine, name="x") == ["r"]

    def test_rules_see_all_macros(self, lab) -> None:
        """A rule may use a macro defined later in the same file."""
        engine = lab.loaded(lab.rule("late") + "- macro: late\n  condition: t.name = x\n")
        assert lab.fired(engine, name="x") == ["r"]

    def test_macro_from_later_file_fails(self, lab) -> None:
        """A rule in file 1 cannot use a macro first defined in file 2."""
        _, result = lab.load(lab.rule("late"), "- macro: late\n  condition: t.name = x\n")
        error = result.errors[0]
        assert (error.code.value, error.location.file, error.location.line) == ("LOAD_ERR_VALIDATE", "f1.yaml", 4)

    def test_undefined_macro_in_rule(self, lab) -> None:
        """An unknown identifier in a rule is an undefined macro."""
        error = lab.error(lab.rule("t.name = a and nosuch"))
        assert (error.code.value, error.location.line) == ("LOAD_ERR_VALIDATE", 4)
        assert error.message == "Undefined macro 'nosuch' used in filter."

    def test_self_reference_loop(self, lab) -> None:
        """A macro reaching itself is an error, not an endless expansion."""
        error = lab.error("- macro: a\n  condition: t.name = x\n- macro: a\n  condition: a or t.name = y\n"
                          + lab.rule("a"))
        assert (error.code.value, error.location.line) == ("LOAD_ERR_VALIDATE", 4)
        assert "loop" in error.message

    def test_macro_syntax_error_position(self, lab) -> None:
        """A macro's syntax error names the macro, its line and the column in its condition."""
        error = lab.error("- macro: m\n  condition: t.name = a andx\n")
        assert (error.code.value, error.location.line, error.location.column) == ("LOAD_ERR_COMPILE_CONDITION", 2, 12)
        assert error.location.item_name == "m"

    def test_invalid_macro_name_cannot_be_referenced(self, lab) -> None:
        """`my-macro` loads with a warning, but a condition cannot name it."""
        error = lab.error("- macro: my-macro\n  condition: t.name = a\n" + lab.rule("my-macro"))
        assert (error.code.value, error.location.line) == ("LOAD_ERR_COMPILE_CONDITION", 6)
        assert lab.codes(lab.load("- macro: my-macro\n  condition: t.name = a\n")[1]) == [
            "LOAD_INVALID_MACRO_NAME", "LOAD_UNUSED_MACRO"]
