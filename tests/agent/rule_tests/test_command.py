"""`falco-agent rules test`: one line per case, a readable diff when a case fails, exit 1 on failure, JUnit XML,
coverage, and cases run against override files layered on the base rules."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from agent.cli import main

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures" / "rule_tests"
RULES, LOCAL, CASES = FIXTURES / "pods.yaml", FIXTURES / "local.yaml", FIXTURES / "pods.tests.yaml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["rules", "test", *argv])
    return code, capsys.readouterr().out


def failing_cases(tmp_path: Path, text: str) -> Path:
    """A cases file for pods.yaml (copied beside it) holding `text`."""
    shutil.copy(RULES, tmp_path / "pods.yaml")
    shutil.copy(FIXTURES / "events.jsonl", tmp_path / "events.jsonl")
    path = tmp_path / "pods.tests.yaml"
    path.write_text(text)
    return path


WRONG_FIELDS = """\
- case: alice creates a pod
  rule: Pod Created
  file: events.jsonl
  expect: match
  priority: WARNING
  output_fields: {ka.user.name: bob, ka.target.namespace: payments, ka.verb: create}
"""


class TestOutcome:
    def test_passing_cases_print_one_line_each_and_exit_0(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Each case gets a PASS line with its place, and the summary counts them."""
        code, out = run(capsys, str(CASES))
        assert code == 0
        assert f"PASS  Pod Created: alice creates a pod  ({CASES}:3)" in out
        assert sum(line.startswith("PASS  ") for line in out.splitlines()) == 4
        assert "4 cases: 4 passed, 0 failed" in out

    def test_a_mismatch_fails_with_a_diff_of_the_output_fields(self, capsys: pytest.CaptureFixture[str],
                                                               tmp_path: Path) -> None:
        """Wrong priority and output fields fail the case with expected and actual values, field by field."""
        code, out = run(capsys, str(failing_cases(tmp_path, WRONG_FIELDS)))
        assert code == 1
        lines = out.splitlines()
        start = lines.index(f"FAIL  Pod Created: alice creates a pod  ({tmp_path / 'pods.tests.yaml'}:1)")
        assert lines[start + 1:start + 7] == [
            "      priority: expected Warning, got Notice",
            "      output fields (- expected, + actual):",
            "        - ka.user.name: 'bob'",
            "        + ka.user.name: 'alice'",
            "        - ka.verb: 'create'",
            "        + ka.verb: (absent)",
        ]
        assert "1 cases: 0 passed, 1 failed" in out

    def test_a_silent_rule_says_what_decided(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """A case expecting a match that gets none names the check that kept the rule silent, with its value."""
        cases = failing_cases(tmp_path, "- case: admin\n  rule: Pod Created\n  source: k8s_audit\n"
                                        "  file: events.jsonl\n  expect: no match\n"
                                        "- case: get\n  rule: Namespace Deleted\n  file: events.jsonl\n"
                                        "  expect: match\n")
        code, out = run(capsys, str(cases))
        assert code == 1
        assert "expected no match, got 1 alert(s):" in out
        assert "  Notice pod created by alice in payments" in out
        assert "event 3: not a candidate: index: ka.verb is 'get'; the condition can only be true for (delete)" in out

    def test_a_correlation_that_did_not_fire_says_what_was_missing(self, capsys: pytest.CaptureFixture[str],
                                                                    tmp_path: Path) -> None:
        """A correlation case expecting a match on a stream whose steps are filed under different keys names the
        step and both keys."""
        stream = REPO / "rules" / "tests" / "correlation" / "hostpid_nsenter.wrong_key.jsonl"
        cases = tmp_path / "correlation.tests.yaml"
        cases.write_text("- case: wrong key\n  correlation: Container Escape Attempt In Pod Created With Host Access\n"
                         f"  file: {stream}\n  expect: match\n")
        code, out = run(capsys, "-r", str(REPO / "rules" / "correlation.yaml"), str(cases))
        assert code == 1
        assert ("      expected a match, got no alert\n        step 'escape' matched with key (shop, cart-7b9c-abcde) "
                "but step 'created' had key (tools, nsenter-5f6g7)") in out

    def test_an_unknown_rule_or_wrong_source_fails_the_case(self, capsys: pytest.CaptureFixture[str],
                                                            tmp_path: Path) -> None:
        """A case naming no loaded rule, or the wrong source for it, fails rather than passing vacuously."""
        cases = failing_cases(tmp_path, "- case: a\n  rule: Pod Deleted\n  file: events.jsonl\n  expect: no match\n"
                                        "- case: b\n  rule: Pod Created\n  source: aws_cloudtrail\n"
                                        "  file: events.jsonl\n  expect: no match\n"
                                        "- case: c\n  rule: Pod Created\n  source: k8saudit\n"
                                        "  file: events.jsonl\n  expect: no match\n")
        code, out = run(capsys, str(cases))
        assert code == 1
        assert "no rule or correlation named 'Pod Deleted' is loaded" in out
        assert "source 'k8saudit' is not loaded; known: syscall, k8s_audit, aws_cloudtrail" in out
        assert "'Pod Created' is a rule of source 'k8s_audit', the case says 'aws_cloudtrail'" in out

    def test_a_bad_cases_file_exits_1_naming_its_line(self, capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path) -> None:
        """A cases file that cannot be read is reported with its line, and nothing runs."""
        cases = failing_cases(tmp_path, "- case: a\n  rule: Pod Created\n  expect: match\n")
        assert main(["rules", "test", str(cases)]) == 1
        assert f"{cases}:1 case 'a': give exactly one input" in capsys.readouterr().err


class TestLayering:
    def test_override_file_changes_the_verdict(self, capsys: pytest.CaptureFixture[str]) -> None:
        """With a local file appending alice to the trusted users, her case fails, and says which macro decided."""
        code, out = run(capsys, "-r", str(RULES), "-r", str(LOCAL), str(CASES))
        assert code == 1
        assert "FAIL  Pod Created: alice creates a pod" in out
        assert ("and > not > macro by_trusted_user > ka.user.name in (admin, alice) is true (ka.user.name='alice')"
                in out)
        assert "PASS  Pod Created: the admin creates a pod" in out


class TestReports:
    def test_coverage_counts_rules_macros_and_exceptions(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Coverage lists the rule without a negative case, the macro never true and counts the used exception."""
        code = main(["rules", "test", "--json", str(CASES)])
        document = json.loads(capsys.readouterr().out)
        assert code == 0
        assert document["coverage"] == [{
            "files": [str(RULES)], "rules": 2, "rules_without_positive_case": [],
            "rules_without_negative_case": ["Namespace Deleted"], "macros": 3,
            "macros_never_true": ["in_system_namespace"], "exceptions_with_values": 1, "exceptions_never_used": [],
        }]
        assert [case["passed"] for case in document["cases"]] == [True] * 4

    def test_junit_xml_holds_each_case_and_its_failure(self, capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path) -> None:
        """--junit writes a testcase per case, classname the rule, with a failure element holding the diff."""
        report = tmp_path / "junit.xml"
        code, _ = run(capsys, "--junit", str(report), str(failing_cases(tmp_path, WRONG_FIELDS)))
        assert code == 1
        root = ET.parse(report).getroot()
        assert (root.get("tests"), root.get("failures")) == ("1", "1")
        [case] = root.iter("testcase")
        assert (case.get("classname"), case.get("name")) == ("Pod Created", "alice creates a pod")
        failure = case.find("failure")
        assert failure is not None and failure.text is not None
        assert "- ka.user.name: 'bob'" in failure.text
        assert failure.get("message") == "priority: expected Warning, got Notice"

    def test_no_rules_and_no_cases_is_a_usage_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Without -r or a cases file there is nothing to run: exit 2."""
        assert main(["rules", "test"]) == 2
        assert "give rules files (-r) or cases files" in capsys.readouterr().err

    def test_a_cases_file_not_naming_its_rules_needs_r(self, capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path) -> None:
        """Without -r, a cases file not named NAME.tests.yaml does not say which rules it tests: exit 2; with -r
        it runs."""
        cases = tmp_path / "mine.yaml"
        cases.write_text(CASES.read_text())
        shutil.copy(FIXTURES / "events.jsonl", tmp_path / "events.jsonl")
        assert main(["rules", "test", str(cases)]) == 2
        assert "a cases file is named NAME.tests.yaml" in capsys.readouterr().err
        assert main(["rules", "test", "-r", str(RULES), str(cases)]) == 0
