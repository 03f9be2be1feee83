"""Reading and collecting items: kinds, keys, definitions, append/override, toggles and requirements."""

from __future__ import annotations

import pytest

from agent.priority import Priority

BASE = """\
- rule: r
  desc: base
  condition: t.name = a
  output: out %t.name
  priority: WARNING
  source: test
  tags: [one]
"""


class TestDocumentShape:
    @pytest.mark.parametrize(("text", "code", "line"), [
        ("rule: x\n", "LOAD_ERR_YAML_VALIDATE", 1),
        ("just text\n", "LOAD_ERR_YAML_VALIDATE", 1),
        ("- [a, b]\n", "LOAD_ERR_YAML_VALIDATE", 1),
        ("- rule: x\n  desc: [unclosed\n", "LOAD_ERR_YAML_PARSE", 3),
        ("- list: l\n  items: a\n", "LOAD_ERR_YAML_VALIDATE", 2),
        ("- list: l\n  items: [[a]]\n", "LOAD_ERR_YAML_VALIDATE", 2),
        ("- list: l\n", "LOAD_ERR_YAML_VALIDATE", 1),
        ("- macro: m\n", "LOAD_ERR_YAML_VALIDATE", 1),
        ("- macro: m\n  condition: ''\n", "LOAD_ERR_YAML_VALIDATE", 2),
        ("- macro: ''\n  condition: t.name = a\n", "LOAD_ERR_YAML_VALIDATE", 1),
    ])
    def test_structural_errors(self, lab, text: str, code: str, line: int) -> None:
        """Documents must be sequences of mappings with their required keys."""
        error = lab.error(text)
        assert (error.code.value, error.location.line) == (code, line), error

    def test_empty_documents_and_null_items_are_skipped(self, lab) -> None:
        """Null documents and null elements load without problems."""
        engine, result = lab.load("---\n---\n- ~\n" + BASE)
        assert result.successful and not result.problems
        assert lab.fired(engine, name="a") == ["r"]

    def test_multi_document_order(self, lab) -> None:
        """Items of later documents may use lists from earlier ones."""
        engine = lab.loaded("- list: l\n  items: [a]\n---\n" + lab.rule("t.name in (l)"))
        assert lab.fired(engine, name="a") == ["r"]

    def test_error_stops_the_file_and_later_documents(self, lab) -> None:
        """After an error, nothing more of the file is read and the load fails."""
        _, result = lab.load("- list: l\n  items: x\n---\n- rule: oops\n")
        assert lab.codes(result) == ["LOAD_ERR_YAML_VALIDATE"]

    def test_unknown_item_and_key_warn(self, lab) -> None:
        """An item of unknown kind and an unknown key produce warnings with their lines."""
        _, result = lab.load("- foo: 1\n" + lab.rule("t.name = a", extra="  colour: red"))
        assert result.successful
        assert [(p.code.value, p.location.line) for p in result.problems] == [
            ("LOAD_UNKNOWN_ITEM", 1), ("LOAD_UNKNOWN_KEY", 10)]

    def test_requirement_items_know_only_their_key(self, lab) -> None:
        """An extra key next to required_engine_version is an unknown key."""
        _, result = lab.load("- required_engine_version: 10\n  extra: 1\n")
        assert [(p.code.value, p.location.line) for p in result.problems] == [("LOAD_UNKNOWN_KEY", 2)]

    @pytest.mark.parametrize(("text", "code"), [
        ("- macro: my-macro\n  condition: t.name = a\n", "LOAD_INVALID_MACRO_NAME"),
        ("- macro: 1abc\n  condition: t.name = a\n", "LOAD_INVALID_MACRO_NAME"),
        ("- list: 'a b'\n  items: [x]\n", "LOAD_INVALID_LIST_NAME"),
        ("- list: 'a,b'\n  items: [x]\n", "LOAD_INVALID_LIST_NAME"),
    ])
    def test_invalid_names_warn_but_load(self, lab, text: str, code: str) -> None:
        """Names the condition lexer cannot reference warn but still load."""
        _, result = lab.load(text)
        assert result.successful
        assert (lab.codes(result)[0], result.problems[0].location.line) == (code, 1)


class TestRuleDefinition:
    @pytest.mark.parametrize("missing", ["desc", "output", "priority", "condition"])
    def test_full_definition_needs_all_keys(self, lab, missing: str) -> None:
        """A rule with one of condition/output/desc/priority needs all four."""
        text = "\n".join(line for line in BASE.splitlines() if not line.startswith(f"  {missing}:")) + "\n"
        error = lab.error(text)
        assert error.code.value == "LOAD_ERR_YAML_VALIDATE" and missing in error.message
        assert error.location.line == 1

    @pytest.mark.parametrize(("spelling", "priority"), [
        ("info", Priority.INFORMATIONAL), ("INFORMATIONAL", Priority.INFORMATIONAL), ("Emergency", Priority.EMERGENCY),
        ("debug", Priority.DEBUG), ("nOtIcE", Priority.NOTICE),
    ])
    def test_priority_spellings(self, lab, spelling: str, priority: Priority) -> None:
        """Priorities are case-insensitive and accept `info`."""
        engine = lab.loaded(lab.rule("t.name = a", priority=spelling))
        assert engine.rules[0].priority is priority

    def test_invalid_priority(self, lab) -> None:
        """An unknown priority is a validation error on its line."""
        error = lab.error(lab.rule("t.name = a", priority="urgent"))
        assert (error.code.value, error.location.line) == ("LOAD_ERR_YAML_VALIDATE", 3)

    @pytest.mark.parametrize(("key", "value"), [("enabled", "maybe"), ("tags", "a"), ("capture_duration", "x")])
    def test_bad_value_types(self, lab, key: str, value: str) -> None:
        """Booleans must be YAML booleans, tags a sequence, durations whole numbers."""
        error = lab.error(lab.rule("t.name = a", extra=f"  {key}: {value}"))
        assert (error.code.value, error.location.line) == ("LOAD_ERR_YAML_VALIDATE", 9)

    def test_redefinition_replaces_but_keeps_position(self, lab) -> None:
        """Redefining a rule replaces it and keeps its evaluation position."""
        engine = lab.loaded(lab.rule("t.name = a", name="first") + lab.rule("t.name = a", name="second")
                            + lab.rule("t.name = b", name="first"), rule_matching="all")
        assert [r.name for r in engine.rules] == ["first", "second"]
        assert lab.fired(engine, name="a") == ["second"]
        assert lab.fired(engine, name="b") == ["first"]

    def test_redefinition_with_other_source_fails(self, lab) -> None:
        """A redefinition naming a different source fails the load."""
        error = lab.error(lab.rule("t.name = a") + lab.rule("t.name = a", source="other"))
        assert (error.code.value, error.location.line) == ("LOAD_ERR_VALIDATE", 9)

    def test_redefinition_without_source_means_syscall(self, lab) -> None:
        """Quirk kept: a redefinition without `source` is a syscall rule, so it conflicts."""
        text = lab.rule("t.name = a") + "- rule: r\n  desc: d\n  condition: t.name = b\n  output: o\n  priority: INFO\n"
        error = lab.error(text)
        assert (error.code.value, error.location.line) == ("LOAD_ERR_VALIDATE", 9)

    def test_unknown_source_is_skipped_with_warning(self, lab) -> None:
        """A rule of an unavailable source is skipped; updates to it are accepted."""
        text = lab.rule("x.y = a", source="nosuch") + (
            "- rule: r\n  condition: and x\n  override:\n    condition: append\n")
        engine, result = lab.load(text)
        assert result.successful and lab.codes(result) == ["LOAD_UNKNOWN_SOURCE"]
        assert result.problems[0].location.line == 1 and engine.rules == []

    def test_disabled_rule_is_still_compiled(self, lab) -> None:
        """A disabled rule with a bad condition fails the load."""
        error = lab.error(lab.rule("t.nope = a", extra="  enabled: false"))
        assert (error.code.value, error.location.line) == ("LOAD_ERR_COMPILE_CONDITION", 4)

    def test_tags_are_a_set(self, lab) -> None:
        """Tags lose order and duplicates."""
        engine = lab.loaded(lab.rule("t.name = a", extra="  tags: [b, a, b]"))
        assert engine.rules[0].tags == ("a", "b")

    def test_output_is_trimmed(self, lab) -> None:
        """Leading and trailing whitespace of the output is dropped."""
        engine = lab.loaded("- rule: r\n  desc: d\n  condition: t.name = a\n  output: '  x %t.name  '\n"
                            "  priority: INFO\n  source: test\n")
        assert engine.process(lab.event(name="a"))[0].output == "x a"


class TestOverride:
    def test_append_condition_output_desc_and_tags(self, lab) -> None:
        """`append` concatenates text with one space and unions tags."""
        engine = lab.loaded(BASE + """\
- rule: r
  condition: or t.name = b
  output: more
  desc: extended
  tags: [two]
  override: {condition: append, output: append, desc: append, tags: append}
""")
        rule = engine.rules[0]
        assert (rule.description, rule.tags) == ("base extended", ("one", "two"))
        assert lab.fired(engine, name="b") == ["r"]
        assert engine.process(lab.event(name="a"))[0].output == "out a more"

    def test_appended_condition_precedence_is_textual(self, lab) -> None:
        """Quirk kept: `a or b` + `and c` is `a or (b and c)`."""
        engine = lab.loaded(lab.rule("t.name = a or t.name = b") +
                            "- rule: r\n  condition: and t.other = c\n  override:\n    condition: append\n")
        assert lab.fired(engine, name="a") == ["r"]
        assert lab.fired(engine, name="b") == []
        assert lab.fired(engine, name="b", other="c") == ["r"]

    def test_replace_priority_enabled_and_tags(self, lab) -> None:
        """`replace` swaps values, appends apply before replaces."""
        engine = lab.loaded(BASE + """\
- rule: r
  priority: debug
  tags: [x]
  enabled: false
  override: {priority: replace, tags: replace, enabled: replace}
""")
        rule = engine.rules[0]
        assert (rule.priority, rule.tags, rule.enabled) == (Priority.DEBUG, ("x",), False)
        assert lab.fired(engine, name="a") == []

    def test_list_and_macro_override(self, lab) -> None:
        """Lists and macros accept append and replace of items/condition."""
        engine = lab.loaded("""\
- list: l
  items: [a]
- list: l
  items: [b]
  override: {items: append}
- macro: m
  condition: t.other = x
- macro: m
  condition: t.other = y
  override: {condition: replace}
""" + lab.rule("t.name in (l) and m"))
        assert lab.fired(engine, name="b", other="y") == ["r"]
        assert lab.fired(engine, name="a", other="x") == []

    @pytest.mark.parametrize(("update", "code", "line"), [
        ("- rule: r\n  priority: INFO\n  override: {priority: append}\n", "LOAD_ERR_YAML_VALIDATE", 10),
        ("- rule: r\n  priority: INFO\n  override: {priority: merge}\n", "LOAD_ERR_YAML_VALIDATE", 10),
        ("- rule: r\n  source: test\n  override: {source: replace}\n", "LOAD_ERR_YAML_VALIDATE", 10),
        ("- rule: r\n  override: {desc: replace}\n", "LOAD_ERR_YAML_VALIDATE", 9),
        ("- rule: r\n  desc: x\n  priority: INFO\n  override: {desc: replace}\n", "LOAD_ERR_YAML_VALIDATE", 10),
        ("- rule: r\n  desc: x\n  append: true\n  override: {desc: append}\n", "LOAD_ERR_YAML_VALIDATE", 11),
        ("- rule: nosuch\n  desc: x\n  override: {desc: append}\n", "LOAD_ERR_VALIDATE", 8),
        ("- rule: r\n  desc: x\n  source: other\n  override: {desc: append}\n", "LOAD_ERR_VALIDATE", 8),
        ("- rule: r\n  override: {}\n", "LOAD_ERR_YAML_VALIDATE", 9),
        ("- list: nosuch\n  items: [a]\n  override: {items: append}\n", "LOAD_ERR_VALIDATE", 8),
        ("- macro: nosuch\n  condition: x\n  override: {condition: append}\n", "LOAD_ERR_VALIDATE", 8),
        ("- macro: m\n  condition: x\n  override: {items: append}\n", "LOAD_ERR_YAML_VALIDATE", 10),
    ])
    def test_override_errors(self, lab, update: str, code: str, line: int) -> None:
        """Bad override syntax, keys and missing targets fail the load with code and line."""
        error = lab.error(BASE + update)
        assert (error.code.value, error.location.line) == (code, line), error


class TestLegacyAppend:
    def test_rule_append_takes_condition_and_ignores_others(self, lab) -> None:
        """`append: true` on a rule appends the condition, ignores other keys and warns deprecated."""
        engine, result = lab.load(BASE + "- rule: r\n  condition: or t.name = z\n  priority: DEBUG\n  append: true\n")
        assert result.successful and lab.codes(result) == ["LOAD_DEPRECATED_ITEM"]
        assert result.problems[0].location.line == 11
        assert lab.fired(engine, name="z") == ["r"] and engine.rules[0].priority is Priority.WARNING

    def test_list_and_macro_append(self, lab) -> None:
        """`append: true` on lists and macros concatenates, with one deprecation warning each."""
        engine, result = lab.load("""\
- list: l
  items: [a]
- list: l
  items: [b]
  append: true
- macro: m
  condition: t.name = x
- macro: m
  condition: or t.name in (l)
  append: true
""" + lab.rule("m"))
        assert result.successful
        assert [(p.code.value, p.location.line) for p in result.problems] == [
            ("LOAD_DEPRECATED_ITEM", 5), ("LOAD_DEPRECATED_ITEM", 10)]
        assert [lab.fired(engine, name=n) for n in "abxz"] == [["r"], ["r"], ["r"], []]

    def test_rule_append_needs_condition_or_exceptions(self, lab) -> None:
        """A legacy rule append carrying neither condition nor exceptions is an error."""
        error = lab.error(BASE + "- rule: r\n  desc: x\n  append: true\n")
        assert (error.code.value, error.location.line) == ("LOAD_ERR_VALIDATE", 8)

    def test_append_without_target(self, lab) -> None:
        """Appending to an undefined rule fails."""
        error = lab.error("- rule: nosuch\n  condition: x\n  append: true\n")
        assert (error.code.value, error.location.line) == ("LOAD_ERR_VALIDATE", 1)


class TestEnableToggle:
    def test_legacy_toggle(self, lab) -> None:
        """`rule` + `enabled` disables an earlier rule, with a deprecation warning."""
        engine, result = lab.load(BASE + "- rule: r\n  enabled: false\n")
        assert result.successful and lab.codes(result) == ["LOAD_DEPRECATED_ITEM"]
        assert lab.fired(engine, name="a") == []

    def test_override_enable(self, lab) -> None:
        """`override: {enabled: replace}` turns a disabled rule on."""
        engine = lab.loaded(lab.rule("t.name = a", extra="  enabled: false")
                            + "- rule: r\n  enabled: true\n  override: {enabled: replace}\n")
        assert lab.fired(engine, name="a") == ["r"]

    def test_toggle_of_undefined_rule(self, lab) -> None:
        """Toggling a rule not defined earlier is an error."""
        error = lab.error("- rule: nosuch\n  enabled: false\n")
        assert (error.code.value, error.location.line) == ("LOAD_ERR_VALIDATE", 1)

    def test_rule_with_nothing(self, lab) -> None:
        """A rule item with only a name is an error."""
        error = lab.error("- rule: lonely\n")
        assert (error.code.value, error.location.line) == ("LOAD_ERR_YAML_VALIDATE", 1)


class TestRequirements:
    @pytest.mark.parametrize("version", ["15", "0.31.0", "0.63.0", "'10'", "0"])
    def test_engine_version_forms(self, lab, version: str) -> None:
        """An integer N means 0.N.0; semver strings are compared with the engine's."""
        _, result = lab.load(f"- required_engine_version: {version}\n")
        assert result.successful and not result.problems

    @pytest.mark.parametrize(("version", "code"), [
        ("0.64.0", "LOAD_ERR_VALIDATE"), ("64", "LOAD_ERR_VALIDATE"), ("1.0.0", "LOAD_ERR_VALIDATE"),
        ("abc", "LOAD_ERR_YAML_VALIDATE"), ("0.31", "LOAD_ERR_YAML_VALIDATE"), ("''", "LOAD_ERR_YAML_VALIDATE"),
    ])
    def test_engine_version_errors(self, lab, version: str, code: str) -> None:
        """Too new, another major or unparsable versions fail the load at the item."""
        error = lab.error("- list: l\n  items: []\n" + f"- required_engine_version: {version}\n")
        assert (error.code.value, error.location.line) == (code, 3)

    PLUGINS = (("json", "0.7.4"), ("k8saudit", "0.18.0"))

    def _engine(self, lab):
        from agent.engine.engine import Engine

        from_lab = lab.engine()
        engine = Engine()
        spec = from_lab.sources["test"]
        engine.add_source(type(spec)(spec.name, spec.fields, spec.index_fields, plugins=self.PLUGINS))
        return engine

    @pytest.mark.parametrize("entries", [
        "- name: json\n    version: 0.7.0\n",
        "- name: k8saudit-eks\n    version: 0.1.0\n    alternatives:\n    - name: k8saudit\n      version: 0.18.0\n",
        "- name: k8saudit\n    version: 0.18.0\n    alternatives:\n    - name: k8saudit-gke\n      version: 9.0.0\n",
    ])
    def test_plugin_requirements_met(self, lab, entries: str) -> None:
        """A requirement holds when its first loaded member is compatible."""
        _, result = lab.load("- required_plugin_versions:\n  " + entries, engine=self._engine(lab))
        assert result.successful and not result.problems

    def test_requirement_on_plugins_none_of_which_is_loaded_fails(self, lab) -> None:
        """As Falco: when no member is loaded the load fails at the item, naming every member and its version."""
        _, result = lab.load("- list: l\n  items: []\n- required_plugin_versions:\n  - name: okta\n"
                             "    version: 0.1.0\n    alternatives:\n    - name: gh\n      version: 0.2.0\n",
                             engine=self._engine(lab))
        assert not result.successful
        error = result.errors[0]
        assert (error.code.value, error.location.line) == ("LOAD_ERR_VALIDATE", 3)
        assert "must load one of: okta (>= 0.1.0), gh (>= 0.2.0)" in error.message

    @pytest.mark.parametrize(("entries", "code", "message"), [
        ("- name: json\n    version: 0.8.0\n", "LOAD_ERR_VALIDATE", "json"),
        ("- name: json\n    version: 1.0.0\n", "LOAD_ERR_VALIDATE", "json"),
        ("- name: k8saudit\n    version: 0.19.0\n    alternatives:\n    - name: json\n      version: 0.1.0\n",
         "LOAD_ERR_VALIDATE", "k8saudit"),
        ("- name: json\n    version: 0.7\n", "LOAD_ERR_YAML_VALIDATE", "0.7"),
        ("- name: json\n    version: 0.7.0\n    alternatives:\n    - name: json\n      version: 0.7.0\n",
         "LOAD_ERR_YAML_VALIDATE", "repeated"),
        ("- name: json\n", "LOAD_ERR_YAML_VALIDATE", "version"),
    ])
    def test_plugin_requirement_errors(self, lab, entries: str, code: str, message: str) -> None:
        """Incompatible or absent plugins and malformed entries fail the load at the item."""
        _, result = lab.load("- list: l\n  items: []\n- required_plugin_versions:\n  " + entries,
                             engine=self._engine(lab))
        error = result.errors[0]
        assert (error.code.value, error.location.line) == (code, 3), error
        assert message in error.message
