"""Reading cases files: the cases as written, and errors that name the file, the case's line and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.priority import Priority
from agent.rule_tests.cases import CaseError, cases_files_for, find_cases_files, load_cases, rules_file_for

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "rule_tests"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.tests.yaml"
    path.write_text(text)
    return path


class TestLoadCases:
    def test_reads_every_form_of_input_and_expectation(self) -> None:
        """Inline event, list of events and a file, with count, priority and output fields, are read as written."""
        cases = load_cases(FIXTURES / "pods.tests.yaml")
        assert [c.name for c in cases] == ["alice creates a pod", "the admin creates a pod",
                                          "ci-bot creates a build pod", "a namespace is deleted"]
        first = cases[0]
        assert first.rule == "Pod Created" and first.source == "k8s_audit" and not first.is_correlation
        assert first.expect.matches and first.expect.count == 1 and first.expect.priority is Priority.NOTICE
        assert first.expect.output_fields == {"ka.user.name": "alice", "ka.target.namespace": "payments"}
        assert first.location.line == 3
        assert cases[1].input.documents[0]["user"] == {"username": "admin"}  # a YAML merge key works
        assert cases[2].input.file == FIXTURES / "events.jsonl"
        assert len(cases[3].input.documents) == 1

    @pytest.mark.parametrize(("text", "message", "line"), [
        ("- case: a\n  rule: R\n  event: {}\n  expect: maybe\n", "'expect' must be 'match' or 'no match'", 1),
        ("- case: a\n  rule: R\n  expect: match\n", "give exactly one input", 1),
        ("- case: a\n  rule: R\n  event: {}\n  file: f.json\n  expect: match\n", "give exactly one input", 1),
        ("- case: a\n  event: {}\n  expect: match\n", "name exactly one of 'rule' and 'correlation'", 1),
        ("- case: a\n  rule: R\n  event: {}\n  expect: no match\n  count: 2\n", "count: only a case expecting", 1),
        ("- case: a\n  rule: R\n  event: {}\n  expect: match\n  count: 0\n", "'count' must be a whole number", 1),
        ("- case: a\n  rule: R\n  event: {}\n  expect: match\n  priority: LOUD\n", "priority:", 1),
        ("- case: a\n  rule: R\n  event: {}\n  expect: match\n  colour: red\n", "unknown keys ['colour']", 1),
        ("- case: a\n  rule: R\n  event: {}\n  expect: match\n- case: a\n  rule: R\n  event: {}\n"
         "  expect: no match\n", "already defined at line 1", 5),
        ("- case: a\n  rule: R\n  event: {}\n  expect: match\n  bad: [\n", "invalid YAML", 6),
        ("case: a\n", "a cases file is a list of cases", 1),
    ])
    def test_a_bad_case_is_refused_with_its_line(self, tmp_path: Path, text: str, message: str, line: int) -> None:
        """A case that does not say what to run or expect is refused, naming the file, the line and the key."""
        path = write(tmp_path, text)
        with pytest.raises(CaseError) as caught:
            load_cases(path)
        assert message in caught.value.message
        assert caught.value.location is not None
        assert (caught.value.location.file, caught.value.location.line) == (str(path), line)

    def test_an_empty_file_has_no_case(self, tmp_path: Path) -> None:
        """An empty cases file is not an error: it holds no case."""
        assert load_cases(write(tmp_path, "")) == []


class TestWhereCasesLive:
    def test_cases_files_map_to_their_rules_file(self) -> None:
        """`D/tests/x.tests.yaml` and `D/x.tests.yaml` both belong to `D/x.yaml`."""
        rules = Path("rules/syscall.yaml")
        assert cases_files_for(rules) == [Path("rules/tests/syscall.tests.yaml"), Path("rules/syscall.tests.yaml")]
        assert {rules_file_for(p) for p in cases_files_for(rules)} == {rules}

    def test_found_beside_a_file_and_in_a_directory(self, tmp_path: Path) -> None:
        """The cases of a rules file are found beside it, and a directory's in its tests/ folder."""
        (tmp_path / "tests").mkdir()
        for path in (tmp_path / "a.yaml", tmp_path / "a.tests.yaml", tmp_path / "tests" / "b.tests.yaml"):
            path.write_text("")
        assert find_cases_files([tmp_path / "a.yaml"]) == [tmp_path / "a.tests.yaml"]
        assert find_cases_files([tmp_path]) == [tmp_path / "tests" / "b.tests.yaml", tmp_path / "a.tests.yaml"]
