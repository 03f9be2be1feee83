"""Rule exceptions: both forms, the generated condition text, validation and merging on append."""

from __future__ import annotations

from typing import Any

import pytest

from agent.engine.infos import ExceptionDef
from agent.engine.rule_exceptions import condition_with_exceptions
from agent.location import Location

RULE = """\
- rule: r
  desc: d
  condition: t.type = open
  output: o %t.name
  priority: INFO
  source: test
  exceptions:
"""


def ex(name: str, fields: list[str] | str | None, comps: list[str] | str | None, values: list[Any]) -> ExceptionDef:
    return ExceptionDef(name, fields, comps, values, Location())


class TestGeneratedText:
    def test_both_forms_spacing_exactly(self) -> None:
        """The tuple and single-field forms produce Falco's text, spacing and quoting included."""
        text = condition_with_exceptions("t.type = open and t.num > 0", [
            ex("pairs", ["t.name", "t.path"], ["=", "startswith"], [["bot", "/tmp"], ["night shift", "/var"]]),
            ex("one", "t.other", "in", ["trusted_list", "x"]),
            ex("empty", ["t.name"], ["contains"], []),
        ])
        assert text == (
            "(t.type = open and t.num > 0) and not (( t.name = bot and  t.path startswith /tmp) or "
            '( t.name = "night shift" and  t.path startswith /var)) and not (t.other in (trusted_list, x))'
        )

    @pytest.mark.parametrize(("comp", "value", "term"), [
        ("in", "a", " t.name in (a)"),
        ("in", "(a, b)", " t.name in (a, b)"),
        ("pmatch", "/x", " t.name pmatch (/x)"),
        ("startswith anyof", "a", " t.name startswith anyof (a)"),
        ("=", ["a", "b c"], ' t.name = (a, "b c")'),
        ("=", "b c", ' t.name = "b c"'),
    ])
    def test_tuple_terms(self, comp: str, value: object, term: str) -> None:
        """List comparisons get parentheses; sequences become literal lists; spaces get quotes."""
        text = condition_with_exceptions("c", [ex("e", ["t.name"], [comp], [[value]])])
        assert text == f"(c) and not (({term}))"


class TestEvaluation:
    def test_tuple_form(self, lab) -> None:
        """An event matching every field of one tuple is excepted."""
        engine = lab.loaded(RULE + """\
    - name: pairs
      fields: [t.name, t.path]
      comps: [=, startswith]
      values:
        - [bot, /tmp]
        - [night shift, /var]
""")
        assert lab.fired(engine, type="open", name="bot", path="/tmp/x") == []
        assert lab.fired(engine, type="open", name="night shift", path="/var/y") == []
        assert lab.fired(engine, type="open", name="bot", path="/var/y") == ["r"]

    def test_single_field_form_with_list_substitution(self, lab) -> None:
        """A single-field exception defaults to `in`; list names in values expand."""
        engine = lab.loaded("- list: ok_names\n  items: [a, b]\n" + RULE + """\
    - name: names
      fields: t.name
      values: [ok_names, c]
""")
        assert [lab.fired(engine, type="open", name=n) for n in "abcd"] == [[], [], [], ["r"]]

    def test_default_comps_are_equality(self, lab) -> None:
        """Without comps, each tuple field compares with `=`."""
        engine = lab.loaded(RULE + "    - name: e\n      fields: [t.name]\n      values: [[a]]\n")
        assert lab.fired(engine, type="open", name="a") == []
        assert lab.fired(engine, type="open", name="ab") == ["r"]

    def test_exception_without_values_adds_nothing(self, lab) -> None:
        """An exception with no values does not change matching."""
        engine = lab.loaded(RULE + "    - name: later\n      fields: [t.name]\n      comps: [contains]\n")
        assert lab.fired(engine, type="open", name="x") == ["r"]

    def test_transformer_field_and_list_value(self, lab) -> None:
        """Exception fields may be transformers; a value sequence is a literal list."""
        engine = lab.loaded(RULE + """\
    - name: e
      fields: [tolower(t.name)]
      comps: [in]
      values: [[[admin, root]]]
""")
        assert lab.fired(engine, type="open", name="ROOT") == []
        assert lab.fired(engine, type="open", name="bob") == ["r"]


class TestValidation:
    @pytest.mark.parametrize(("body", "code", "line"), [
        ("    - name: e\n      fields: [t.name, t.path]\n      values: [[a]]\n", "LOAD_ERR_VALIDATE", 8),
        ("    - name: e\n      fields: [t.name, t.path]\n      comps: [=]\n      values: [[a, b]]\n",
         "LOAD_ERR_VALIDATE", 8),
        ("    - name: e\n      fields: [t.name]\n      values: [a]\n", "LOAD_ERR_VALIDATE", 8),
        ("    - name: e\n      fields: t.name\n      values: [[a]]\n", "LOAD_ERR_VALIDATE", 8),
        ("    - name: e\n      fields: t.name\n      comps: =\n      values: [a]\n", "LOAD_ERR_VALIDATE", 8),
        ("    - name: e\n      values: [[a]]\n", "LOAD_ERR_YAML_VALIDATE", 8),
        ("    - fields: [t.name]\n", "LOAD_ERR_YAML_VALIDATE", 8),
        ("    - name: e\n      fields: [t.nope]\n", "LOAD_ERR_VALIDATE", 8),
        ("    - name: e\n      fields: [t.name]\n      values: a\n", "LOAD_ERR_YAML_VALIDATE", 8),
        ("    - just text\n", "LOAD_ERR_YAML_VALIDATE", 8),
    ])
    def test_shape_errors(self, lab, body: str, code: str, line: int) -> None:
        """Tuple length, comps length, form mismatches, missing fields and unknown fields fail the load."""
        error = lab.error(RULE + body)
        assert (error.code.value, error.location.line) == (code, line), error

    def test_single_field_modifier_comp_is_allowed(self, lab) -> None:
        """`<op> <modifier>` is a valid single-field comparison."""
        engine = lab.loaded(RULE + "    - name: e\n      fields: t.name\n      comps: startswith anyof\n"
                            "      values: [adm, roo]\n")
        assert lab.fired(engine, type="open", name="root") == []
        assert lab.fired(engine, type="open", name="bob") == ["r"]

    def test_duplicate_names_warn(self, lab) -> None:
        """Two exceptions with one name warn, on the second one."""
        _, result = lab.load(RULE + "    - name: e\n      fields: [t.name]\n    - name: e\n      fields: [t.path]\n")
        assert result.successful
        assert [(p.code.value, p.location.line) for p in result.problems] == [("LOAD_EXCEPTION_NAME_NOT_UNIQUE", 10)]


class TestMerging:
    BASE = RULE + "    - name: names\n      fields: [t.name]\n      values: [[a]]\n"

    def test_append_values_to_known_exception(self, lab) -> None:
        """Appending a known exception name adds its values after the existing ones."""
        engine = lab.loaded(self.BASE + """\
- rule: r
  exceptions:
    - name: names
      values: [[b]]
  override: {exceptions: append}
""")
        assert [lab.fired(engine, type="open", name=n) for n in "abc"] == [[], [], ["r"]]

    def test_append_new_exception(self, lab) -> None:
        """An unknown name adds a new exception, which needs fields and values."""
        engine = lab.loaded(self.BASE + """\
- rule: r
  exceptions:
    - name: paths
      fields: t.path
      comps: pmatch
      values: [/tmp]
  override: {exceptions: append}
""")
        assert lab.fired(engine, type="open", name="z", path="/tmp/x") == []
        assert lab.fired(engine, type="open", name="z", path="/etc") == ["r"]

    def test_legacy_append_merges_exceptions(self, lab) -> None:
        """`append: true` merges exceptions too, with a deprecation warning."""
        engine, result = lab.load(self.BASE + "- rule: r\n  append: true\n  exceptions:\n    - name: names\n"
                                  "      values: [[c]]\n")
        assert result.successful and lab.codes(result) == ["LOAD_DEPRECATED_ITEM"]
        assert lab.fired(engine, type="open", name="c") == []

    def test_replace_swaps_the_list(self, lab) -> None:
        """`exceptions: replace` drops the old exceptions."""
        engine = lab.loaded(self.BASE + """\
- rule: r
  exceptions:
    - name: other
      fields: [t.name]
      values: [[z]]
  override: {exceptions: replace}
""")
        assert lab.fired(engine, type="open", name="a") == ["r"]
        assert lab.fired(engine, type="open", name="z") == []

    @pytest.mark.parametrize(("entry", "code"), [
        ("    - name: names\n      fields: [t.path]\n      values: [[b]]\n", "LOAD_ERR_VALIDATE"),
        ("    - name: names\n      comps: [=]\n      values: [[b]]\n", "LOAD_ERR_VALIDATE"),
        ("    - name: fresh\n      values: [[b]]\n", "LOAD_ERR_VALIDATE"),
        ("    - name: fresh\n      fields: [t.path]\n", "LOAD_ERR_VALIDATE"),
    ])
    def test_merge_errors(self, lab, entry: str, code: str) -> None:
        """A known name may bring only values; a new one needs fields and values."""
        error = lab.error(self.BASE + "- rule: r\n  exceptions:\n" + entry + "  override: {exceptions: append}\n")
        assert (error.code.value, error.location.line) == (code, 13), error

    def test_append_without_values_warns(self, lab) -> None:
        """Appending a known exception with no values warns LOAD_APPEND_NO_VALUES."""
        _, result = lab.load(self.BASE + "- rule: r\n  exceptions:\n    - name: names\n"
                             "  override: {exceptions: append}\n")
        assert result.successful
        assert [(p.code.value, p.location.line) for p in result.problems] == [("LOAD_APPEND_NO_VALUES", 13)]
