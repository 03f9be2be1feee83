"""A field the agent declares (Falco has it) but cannot extract is refused wherever a rule names it, never loaded as a
field that is always missing: such a rule would never fire, or under `not` fire on every event."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from agent.cli import main
from agent.engine.append_output import AppendOutput, ExtraField, suggested_fields
from agent.engine.engine import Engine, RulesText
from agent.engine.load_result import LoadResult
from agent.event import Event
from agent.fields import ArgKind, FieldFlag, FieldSpec, FieldTable, FieldType
from agent.plugins.api import schema_fields
from agent.source import SourceSpec
from sources.kernel.fields import syscall_source
from tests.agent.engine.conftest import SOURCE, Lab, rule, sample_fields

NOT_SUPPORTED = "is not supported by this agent yet"
UNSUPPORTED = FieldSpec("t.remote", FieldType.STRING, "declared, with no extractor")
UNSUPPORTED_BY_KEY = FieldSpec("t.mount", FieldType.STRING, "declared, by key, with no extractor",
                               arg=ArgKind.INDEX | ArgKind.KEY | ArgKind.REQUIRED)


def _source(*extra: FieldSpec) -> SourceSpec:
    return SourceSpec(SOURCE, FieldTable([*sample_fields(), UNSUPPORTED, UNSUPPORTED_BY_KEY, *extra]),
                      index_fields=("t.type",))


def _load(text: str, *, source: SourceSpec | None = None, append: tuple[AppendOutput, ...] = ()) -> tuple[
        Engine, LoadResult]:
    engine = Engine(append_output=append)
    engine.add_source(source or _source())
    return engine, engine.load_rules([RulesText("f1.yaml", text)])


def _refusal(text: str, **kwargs: Any) -> tuple[str, str, str]:
    """(code, rule named, message) of the one error loading `text`; nothing of the load is kept."""
    engine, result = _load(text, **kwargs)
    assert not result.successful, result.as_text()
    assert engine.rules == []
    [error] = result.errors
    return error.code.value, error.location.item_name, error.message


class TestARuleNamingAnUnsupportedField:
    @pytest.mark.parametrize("condition", [
        "t.type = open and t.remote = example.com",
        "t.type = open and not t.remote in (\"<NA>\", \"N/A\")",  # would fire on every event if loaded
        "t.type = open and t.mount[/proc*] exists",
        "t.type = open and t.name = val(t.remote)",
        "t.type = open and toupper(t.remote) = X",
    ])
    def test_fails_to_load_naming_the_field(self, condition: str) -> None:
        code, item, message = _refusal(rule(condition, name="Reach"))
        assert (code, item) == ("LOAD_ERR_COMPILE_CONDITION", "Reach")
        named = "t.mount" if "t.mount" in condition else "t.remote"
        assert f"field '{named}' {NOT_SUPPORTED}" in message, message

    def test_fails_through_a_macro(self) -> None:
        macro = "- macro: remote_known\n  condition: t.remote in (a, b)\n"
        code, item, message = _refusal(macro + rule("t.type = open and not remote_known", name="Reach"))
        assert (code, item) == ("LOAD_ERR_COMPILE_CONDITION", "Reach") and "'t.remote'" in message

    def test_fails_when_only_its_output_names_it(self) -> None:
        code, item, message = _refusal(rule("t.type = open", name="Reach", output="to %t.remote by %t.name"))
        assert (code, item) == ("LOAD_ERR_COMPILE_OUTPUT", "Reach")
        assert f"field 't.remote' {NOT_SUPPORTED}" in message, message

    def test_fails_when_an_exception_names_it(self) -> None:
        extra = "  exceptions:\n    - name: known\n      fields: [t.remote]\n      values: [[a]]\n"
        _, _, message = _refusal(rule("t.type = open", name="Reach", extra=extra))
        assert f"field 't.remote' {NOT_SUPPORTED}" in message, message

    def test_a_disabled_rule_is_refused_too(self) -> None:
        """Falco compiles disabled rules: enabling one later (-o rules[].enable) must not bring in a dead field."""
        _, item, _ = _refusal(rule("t.type = open and t.remote = x", name="Reach", extra="  enabled: false\n"))
        assert item == "Reach"

    def test_with_skip_if_unknown_filter_is_skipped_with_a_warning_and_the_others_load(self, lab: Lab) -> None:
        text = (rule("t.type = open and t.remote = x", name="Reach", extra="  skip-if-unknown-filter: true\n")
                + rule("t.type = open", name="Open", output="skip-output %t.remote",
                       extra="  skip-if-unknown-filter: true\n")
                + rule("t.type = open", name="Plain"))
        engine, result = _load(text)
        assert result.successful, result.as_text()
        skipped = [(w.code.value, w.location.item_name) for w in result.warnings if NOT_SUPPORTED in w.message]
        assert skipped == [("LOAD_UNKNOWN_FILTER", "Reach"), ("LOAD_UNKNOWN_FILTER", "Open")]
        assert [r.name for r in engine.rules] == ["Plain"]
        assert [a.rule for a in engine.process(lab.event(type="open", name="x"))] == ["Plain"]

    def test_a_correlation_output_naming_it_is_refused(self) -> None:
        text = ("- correlation: Burst\n  desc: d\n  priority: WARNING\n  output: burst to %t.remote\n"
                "  threshold:\n    source: test\n    condition: t.type = exec\n    key: t.name\n    count: 2\n"
                "    window: 1m\n")
        engine, result = _load(text)
        assert not result.successful and engine.correlations == []
        assert any(f"'t.remote' {NOT_SUPPORTED}" in e.message for e in result.errors), result.as_text()


class TestAppendOutput:
    @pytest.mark.parametrize("entry", [
        AppendOutput(extra_output="to %t.remote"),
        AppendOutput(extra_fields=(ExtraField("t.remote"),)),
        AppendOutput(extra_fields=(ExtraField("where", "%t.mount[0]"),)),
    ])
    def test_an_entry_naming_it_fails_the_load(self, entry: AppendOutput) -> None:
        code, item, message = _refusal(rule("t.type = open", name="Open"), append=(entry,))
        assert (code, item) == ("LOAD_ERR_COMPILE_OUTPUT", "Open")
        assert NOT_SUPPORTED in message and "append_output[0]" in message, message

    def test_every_field_a_builtin_source_suggests_is_supported(self) -> None:
        """suggested_output adds these to every syscall rule: one unsupported would fail every rule."""
        table = syscall_source().fields
        suggested = suggested_fields(table)
        assert suggested and all(table.get(name).is_implemented for name in suggested)  # type: ignore[union-attr]


class TestAPluginField:
    def test_a_plugin_providing_a_declared_field_makes_it_usable(self, lab: Lab) -> None:
        """Fields of a loaded plugin are implemented by definition, and replace the source's declaration."""

        def extract(event: Event, name: str, arg: str | None) -> Any:
            return f"{event.payload['name']}.example.com" if name == "t.remote" else None

        [plugin_field] = schema_fields([{"name": "t.remote", "type": "string"}], extract)
        base = _source()
        source = replace(base, fields=base.fields.with_fields([plugin_field]))
        engine, result = _load(rule("t.type = open and t.remote = db.example.com", output="to %t.remote"),
                               source=source)
        assert result.successful, result.as_text()
        [alert] = engine.process(lab.event(type="open", name="db"))
        assert alert.output == "to db.example.com"


def _written(spec: FieldSpec) -> str:
    """How a rule names the field: with an argument when it requires one."""
    if ArgKind.REQUIRED not in spec.arg:
        return spec.name
    return f"{spec.name}[0]" if ArgKind.INDEX in spec.arg else f"{spec.name}[x]"


def _syscall_problem(condition: str, output: str) -> str | None:
    engine = Engine()
    engine.add_source(syscall_source())
    result = engine.load_rules([RulesText("f.yaml", rule(condition, output=output, source="syscall"))])
    return None if result.successful else result.as_text()


class TestTheSyscallSource:
    def test_every_unsupported_field_is_refused_in_a_condition_and_in_an_output(self) -> None:
        unsupported = [spec for spec in syscall_source().fields if not spec.is_implemented]
        loaded = []
        for spec in unsupported:
            written = _written(spec)
            in_condition = _syscall_problem(f"evt.type = open and {written} exists", "x")
            in_output = _syscall_problem("evt.type = open", f"x %{written}")
            for problem in (in_condition, in_output):
                if problem is None or f"field '{spec.name}' {NOT_SUPPORTED}" not in problem:
                    loaded.append((written, problem))
        assert loaded == []

    def test_every_supported_field_loads_in_a_condition_and_in_an_output(self) -> None:
        problems = []
        for spec in syscall_source().fields:
            if not spec.is_implemented:
                continue
            written = _written(spec)
            in_condition = "" if FieldFlag.PRINT_ONLY in spec.flags else f" and {written} exists"
            condition = f"evt.type = open{in_condition}"
            problem = _syscall_problem(condition, f"x %{written}")
            if problem is not None:
                problems.append(problem)
        assert problems == []


class TestTheFieldsCommand:
    def _rows(self, capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
        assert main(["fields", "--source", "syscall", "--json", *args]) == 0
        rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
        return rows

    def test_lists_only_supported_fields_unless_asked_for_all(self, capsys: pytest.CaptureFixture[str]) -> None:
        table = syscall_source().fields
        supported = {spec.name for spec in table if spec.is_implemented}
        unsupported = {spec.name for spec in table if not spec.is_implemented}
        shown = self._rows(capsys)
        assert {row["name"] for row in shown} == supported
        assert all(row["implemented"] for row in shown)
        every = self._rows(capsys, "--all")
        assert {row["name"] for row in every} == supported | unsupported
        assert {row["name"] for row in every if not row["implemented"]} == unsupported

    def test_the_text_form_marks_the_unsupported_ones_plainly(self, capsys: pytest.CaptureFixture[str]) -> None:
        table = syscall_source().fields
        unsupported = [spec.name for spec in table if not spec.is_implemented]
        assert main(["fields", "--source", "syscall"]) == 0
        names = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line and line[0] != "#"}
        assert names == {spec.name for spec in table if spec.is_implemented}
        assert main(["fields", "--source", "syscall", "--all"]) == 0
        lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line and line[0] != "#"}
        assert all("[not supported" in lines[name] for name in unsupported)
        assert not any("[not supported" in line for name, line in lines.items() if name not in unsupported)
