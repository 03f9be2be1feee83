"""Output format strings: tokens, arguments, widths, missing values, lists, transformers and errors."""

from __future__ import annotations

from typing import Any

import pytest

from agent.engine.compiler import CompileError
from agent.engine.output_format import compile_output


@pytest.fixture
def table(lab):
    return lab.engine().sources["test"].fields


class TestRendering:
    @pytest.mark.parametrize(("fmt", "payload", "text"), [
        ("user %t.name did it", {"name": "alice"}, "user alice did it"),
        ("(%t.name)", {"name": "a"}, "(a)"),
        ("%t.name.", {"name": "a"}, "a."),
        ("%t.name%t.other", {"name": "a", "other": "b"}, "ab"),
        ("[%t.name]", {}, "[<NA>]"),
        ("%t.label[app]/%t.args[1]", {"labels": {"app": "web"}, "args": ["x", "y"]}, "web/y"),
        ('%json.value["/a b"]', {"a b": 1}, "1"),
        ("%t.tags", {"tags": ["a", "b", "c"]}, "(a,b,c)"),
        ("%t.num %t.flag %t.buf", {"num": 7, "flag": False, "buf": b"hi"}, "7 false hi"),
        ("%5t.name|", {"name": "ab"}, "ab   |"),
        ("%3t.name|", {"name": "abcdef"}, "abc|"),
        ("%6t.name|", {}, "<NA>  |"),
        ("%toupper(t.name)!", {"name": "ab"}, "AB!"),
        ("%len(t.tags)", {"tags": ["a", "b"]}, "2"),
        ("50% off", {}, None),
        ("", {}, ""),
        ("%container.info", {}, ""),
    ])
    def test_render(self, table, lab, fmt: str, payload: dict[str, Any], text: str | None) -> None:
        """Tokens render values; missing is <NA>; lists are (a,b); width pads or cuts; bare text stays."""
        if text is None:
            with pytest.raises(CompileError):
                compile_output(fmt, table)
            return
        assert compile_output(fmt, table).render(lab.event(**payload)) == text

    def test_literal_text_is_kept_as_written(self, table, lab) -> None:
        """Quotes, braces, backslashes, newlines and non-ASCII text around tokens come out unchanged."""
        fmt = "it's {a} \\ \"q\" \n\u00e9\U0001f600 \ud800 %t.name '''\"\"\"{}"
        assert compile_output(fmt, table).render(lab.event(name="x")) == fmt.replace("%t.name", "x")

    def test_a_field_shown_twice_keeps_each_width_and_one_output_field(self, table, lab) -> None:
        """The same field may appear with different widths and inside a transformer; output_fields holds it once."""
        fmt = compile_output("%3t.name|%t.name|%toupper(t.name)|%6t.tags", table)
        event = lab.event(name="abcdef", tags=["a", "b"])
        assert fmt.render(event) == "abc|abcdef|ABCDEF|(a,b) "
        assert fmt.field_values(event) == {"t.name": "abcdef", "t.tags": ["a", "b"]}

    def test_longest_prefix_names_a_field(self, table, lab) -> None:
        """`%t.name.more` ends at the longest dotted prefix that is a field."""
        assert compile_output("%t.name.more", table).render(lab.event(name="x")) == "x.more"


class TestOutputFields:
    def test_keys_and_typed_values(self, table, lab) -> None:
        """Each field token gives a typed key; transformer tokens give their inner fields' keys."""
        fmt = compile_output('%t.name %t.num %t.flag %t.tags %t.label[app] %json.value["/a b"] %tolower(t.other)',
                             table)
        values = fmt.field_values(lab.event(name="n", num=3, flag=True, tags=["x"], labels={}, other="O"))
        assert values == {"t.name": "n", "t.num": 3, "t.flag": True, "t.tags": ["x"], "t.label[app]": None,
                          'json.value["/a b"]': None, "t.other": "O"}


class TestErrors:
    @pytest.mark.parametrize(("fmt", "column"), [("x %", 3), ("%", 1), ("a %5", 3), ("a % b", 3), ("%t.nope", 2),
                                                 ("ok %nope.x", 5)])
    def test_bad_tokens(self, table, fmt: str, column: int) -> None:
        """A `%` without a known field is an invalid formatting token at its column."""
        with pytest.raises(CompileError) as info:
            compile_output(fmt, table)
        assert info.value.unknown_filter and info.value.pos.column == column, info.value

    def test_load_error_code_and_line(self, lab) -> None:
        """A bad output fails the load with LOAD_ERR_COMPILE_OUTPUT at the rule."""
        error = lab.error(lab.rule("t.name = a", output="trailing %"))
        assert (error.code.value, error.location.line) == ("LOAD_ERR_COMPILE_OUTPUT", 4)

    def test_unknown_output_field_is_skippable(self, lab) -> None:
        """With skip-if-unknown-filter an unknown output field drops the rule with a warning."""
        engine, result = lab.load(lab.rule("t.name = a", output="%t.nope", extra="  skip-if-unknown-filter: true"))
        assert result.successful and lab.codes(result) == ["LOAD_UNKNOWN_FILTER"] and engine.rules == []


def test_an_output_field_that_cannot_be_extracted_is_na_and_the_alert_still_goes_out(lab) -> None:
    """A matching rule always alerts: an extractor that meets an unexpected shape while rendering gives <NA>."""
    engine = lab.loaded(lab.rule("t.name = alice", output="hit %t.name %t.label[x]"))
    (alert,) = engine.process(lab.event(name="alice", labels=["not", "a", "mapping"]))
    assert alert.output == "hit alice <NA>"
    assert alert.output_fields == {"t.name": "alice", "t.label[x]": None}
