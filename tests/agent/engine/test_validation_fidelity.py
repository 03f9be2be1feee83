"""Rule validation that agrees with Falco's: the codes, item types and item names Falco's loader reports (its
regression tests in falcosecurity/testing check them through `-V` JSON), on the real syscall source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from agent.engine.engine import Engine, RulesText
from agent.engine.load_result import LoadResult
from sources.kernel.fields import syscall_source


def _rule(condition: str, *, name: str = "r", output: str = "o %proc.name", extra: str = "") -> str:
    return (f"- rule: {name}\n  desc: d\n  condition: {condition}\n  output: {output}\n  priority: WARNING\n"
            + extra)


def _load(*texts: str) -> LoadResult:
    engine = Engine()
    engine.add_source(syscall_source())
    return engine.load_rules(RulesText(f"f{i}.yaml", text) for i, text in enumerate(texts, 1))


def _reports(result: LoadResult, code: str) -> list[list[tuple[str, str]]]:
    """Per problem of `code` in Falco's JSON: its locations as (item_type, item_name), outermost first."""
    return [
        [(loc["item_type"], loc["item_name"]) for loc in problem["context"]["locations"]]
        for file in result.as_json()["falco_load_results"]
        for problem in file["errors"] + file["warnings"] if problem["code"] == code
    ]


EXCEPTION_RULE = _rule("evt.type = open", extra="  exceptions:\n")


class TestNoEvttype:
    def test_a_rule_that_does_not_restrict_evt_type_warns(self) -> None:
        """Falco's LOAD_NO_EVTTYPE: the rule is evaluated on every syscall."""
        result = _load(_rule("proc.name = bash", name="Shell"))
        assert result.successful
        assert _reports(result, "LOAD_NO_EVTTYPE") == [[("rules content", ""), ("rule", "Shell")]]

    @pytest.mark.parametrize("condition", ["evt.type = execve and proc.name = bash",
                                           "evt.type in (open, openat) or (evt.type = execve and proc.name = sh)"])
    def test_a_rule_bound_to_event_types_does_not(self, condition: str) -> None:
        assert _reports(_load(_rule(condition)), "LOAD_NO_EVTTYPE") == []

    def test_warn_evttypes_false_silences_it(self) -> None:
        result = _load(_rule("proc.name = bash", extra="  warn_evttypes: false\n"))
        assert _reports(result, "LOAD_NO_EVTTYPE") == []


class TestUnused:
    def test_unused_macro_and_list_warn_on_their_item(self) -> None:
        """A list used only by an unused macro counts as used (Falco compiles every macro); the macro does not."""
        result = _load("- list: shells\n  items: [bash, sh]\n- list: idle\n  items: [x]\n"
                       "- macro: spawned\n  condition: proc.name in (shells)\n" + _rule("evt.type = execve"))
        assert _reports(result, "LOAD_UNUSED_MACRO") == [[("rules content", ""), ("macro", "spawned")]]
        assert _reports(result, "LOAD_UNUSED_LIST") == [[("rules content", ""), ("list", "idle")]]

    def test_a_list_inlined_into_a_used_list_is_used(self) -> None:
        result = _load("- list: inner\n  items: [a]\n- list: outer\n  items: [inner, b]\n"
                       + _rule("evt.type = execve and proc.name in (outer)"))
        assert _reports(result, "LOAD_UNUSED_LIST") == []

    def test_each_file_reports_what_is_unused_after_its_own_load(self) -> None:
        """As Falco's InvalidOverwriteMacro test: file 1 loads with LOAD_UNUSED_MACRO, file 2 then fails."""
        result = _load("- macro: some_macro\n  condition: evt.type = open\n",
                       "- macro: some_macro\n  condition: foo\n")
        first, second = result.as_json()["falco_load_results"]
        assert (first["name"], first["successful"]) == ("f1.yaml", True)
        assert [w["code"] for w in first["warnings"]] == ["LOAD_UNUSED_MACRO"]
        assert (second["name"], second["successful"]) == ("f2.yaml", False)
        assert [(e["code"], e["message"]) for e in second["errors"]] == [
            ("LOAD_ERR_VALIDATE", "Undefined macro 'foo' used in filter.")]


class TestExceptions:
    @pytest.mark.parametrize(("body", "code", "name", "message"), [
        ("    - name: ex1\n      fields: [proc.name, fd.name]\n      comps: [=, no-comp]\n      values: [[a, b]]\n",
         "LOAD_ERR_VALIDATE", "ex1", "'no-comp' is not a supported comparison operator"),
        ("    - name: ex1\n      fields: [proc.name, fd.name]\n      comps: [=]\n      values: [[a, b]]\n",
         "LOAD_ERR_VALIDATE", "ex1", "Fields and comps lists must have equal length"),
        ("    - name: ex1\n      fields: [proc.name, fd.name]\n      values: [[a]]\n",
         "LOAD_ERR_VALIDATE", "ex1", "Fields and values lists must have equal length"),
        ("    - name: ex1\n      fields: [not.exist]\n      values: [[a]]\n",
         "LOAD_ERR_VALIDATE", "ex1", "'not.exist' is not a supported filter field"),
        ("    - name: ex1\n      values: [[a]]\n", "LOAD_ERR_YAML_VALIDATE", "ex1",
         "Item has no mapping for key 'fields'"),
        ("    - fields: [proc.name]\n      values: [[a]]\n", "LOAD_ERR_YAML_VALIDATE", "",
         "Item has no mapping for key 'name'"),
        ("    - name: ex1\n      fields: proc.name\n      comps: =\n      values: [a]\n", "LOAD_ERR_VALIDATE", "ex1",
         "When fields is a single value, comps must be one of"),
    ])
    def test_a_bad_exception_is_reported_on_the_exception_inside_its_rule(self, body: str, code: str, name: str,
                                                                         message: str) -> None:
        result = _load(EXCEPTION_RULE + body)
        [error] = result.errors
        assert error.code.value == code and error.message.startswith(message), error.as_text()
        [locations] = _reports(result, code)
        assert locations[-1] == ("exception", name)
        assert ("rule", "r") in locations

    def test_an_appended_new_exception_needs_fields(self) -> None:
        """As Falco's RuleExceptionAppendItemNotInRule: the error names the appended exception."""
        append = ("- rule: r\n  exceptions:\n    - name: ex2\n      values: [[x]]\n"
                  "  override:\n    exceptions: append\n")
        result = _load(EXCEPTION_RULE + "    - name: ex1\n      fields: [proc.name]\n      values: [[a]]\n" + append)
        [error] = result.errors
        assert error.message == "Rule exception must have fields property with a list of fields"
        assert _reports(result, "LOAD_ERR_VALIDATE")[0][-1] == ("exception", "ex2")

    def test_a_repeated_name_warns_on_the_second_exception(self) -> None:
        result = _load(EXCEPTION_RULE + "    - name: ex1\n      fields: [proc.name]\n      values: [[a]]\n"
                       "    - name: ex1\n      fields: [fd.name]\n      values: [[b]]\n")
        assert result.successful
        [problem] = [p for p in result.problems if p.code.value == "LOAD_EXCEPTION_NAME_NOT_UNIQUE"]
        assert (problem.location.item_kind, problem.location.item_name, problem.location.line) == (
            "exception", "ex1", 10)


class TestAcceptedAsFalcoAccepts:
    def test_lists_naming_each_other_load(self) -> None:
        """Falco inlines a list into another only when defined earlier, one level: a cycle ends, nothing fails."""
        result = _load("- list: a\n  items: [b, x]\n- list: b\n  items: [a, y]\n"
                       + _rule("evt.type = execve and proc.name in (a)"))
        assert result.successful, result.as_text()

    @pytest.mark.parametrize("item", ["- list: shells\n  items: [zsh]\n  override:\n    items: replace\n",
                                      "- macro: spawned\n  condition: proc.name = zsh\n  override:\n"
                                      "    condition: replace\n"])
    def test_replace_before_the_definition_further_down(self, item: str) -> None:
        """Replacing is defining again for a list or macro: no earlier definition is needed."""
        result = _load(item + "- list: shells\n  items: [bash]\n- macro: spawned\n  condition: proc.name in (shells)\n"
                       + _rule("evt.type = execve and spawned"))
        assert result.successful, result.as_text()

    def test_append_with_an_empty_source(self) -> None:
        append = "- rule: r\n  source:\n  condition: and proc.name = sh\n  override:\n    condition: append\n"
        assert _load(_rule("evt.type = execve") + append.replace("source:\n", "source: ''\n")).successful

    def test_append_with_another_source_still_fails(self) -> None:
        append = "- rule: r\n  source: k8s_audit\n  condition: and proc.name = sh\n  override:\n    condition: append\n"
        assert [p.code.value for p in _load(_rule("evt.type = execve") + append).errors] == ["LOAD_ERR_VALIDATE"]


def test_a_deprecated_field_in_an_output_warns() -> None:
    result = _load(_rule("evt.type = execve", output="dir %evt.dir by %proc.name"))
    assert result.successful
    assert _reports(result, "LOAD_DEPRECATED_ITEM") == [[("rules content", ""), ("rule", "r")]]
    assert "'evt.dir'" in result.warnings[0].message


@pytest.mark.parametrize(("text", "item_type", "message"), [
    ("just text\n", "rules content", "Rules content is not yaml"),
    ("rule: r\n", "rules content", "Rules content is not yaml array of objects"),
    ("- [a, b]\n", "rules content item", "Unexpected element type"),
])
def test_rules_content_errors_carry_falcos_item_type(text: str, item_type: str, message: str) -> None:
    result = _load(text)
    [error] = result.errors
    assert error.code.value == "LOAD_ERR_YAML_VALIDATE" and error.message.startswith(message)
    [locations] = _reports(result, "LOAD_ERR_YAML_VALIDATE")
    assert locations[-1] == (item_type, "")


class TestValidateCommandJson:
    def test_falcos_v_json_per_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`rules validate --json` prints Falco's `-V` document, read the way falcosecurity/testing reads it."""
        good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
        good.write_text("- macro: spare\n  condition: evt.type = open\n")
        bad.write_text(EXCEPTION_RULE + "    - name: ex1\n      fields: [proc.name]\n      comps: [no-comp]\n")
        assert main(["rules", "validate", "--json", str(good), str(bad)]) == 1
        document: dict[str, Any] = json.loads(capsys.readouterr().out)
        first, second = document["falco_load_results"]
        assert (first["name"], first["successful"], first["errors"]) == (str(good), True, [])
        assert (second["name"], second["successful"], second["warnings"]) == (str(bad), False, [])
        [error] = second["errors"]
        assert set(error) == {"code", "codedesc", "message", "context"}
        assert (error["code"], error["message"]) == (
            "LOAD_ERR_VALIDATE", "'no-comp' is not a supported comparison operator")
        innermost = error["context"]["locations"][-1]
        assert (innermost["item_type"], innermost["item_name"]) == ("exception", "ex1")
        assert innermost["position"] == {"name": str(bad), "line": 6, "column": 6,
                                         "offset": len(EXCEPTION_RULE) + len("    - ")}

    def test_human_text_form(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        bad = tmp_path / "bad.yaml"
        bad.write_text(EXCEPTION_RULE + "    - name: ex1\n      fields: [proc.name]\n      comps: [no-comp]\n")
        assert main(["rules", "validate", str(bad)]) == 1
        out = capsys.readouterr().out
        assert f"{bad}:7:7 exception 'ex1' in rule 'r': error LOAD_ERR_VALIDATE: 'no-comp' is not a supported " \
               "comparison operator" in out
