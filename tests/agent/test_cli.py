"""The command line: `rules validate --json` and `replay` over real files, with exit codes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.cli import main
from tests.support.plugins import AUDIT, SECRET_DELETED_RULE

#: The shared Secret Deleted rule, with tags (the JSON alert carries them).
GOOD = SECRET_DELETED_RULE + "  tags: [k8s, secrets]\n"


@pytest.fixture
def rules_file(tmp_path):
    def write(text: str, name: str = "rules.yaml") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write


def _where(problem: dict[str, Any]) -> tuple[str, int, str]:
    """File, 0-based line and `type 'name'` of the innermost location of a problem in Falco's `-V` JSON."""
    innermost = problem["context"]["locations"][-1]
    return innermost["position"]["name"], innermost["position"]["line"], \
        f"{innermost['item_type']} '{innermost['item_name']}'"


class TestValidate:
    def test_valid_file(self, rules_file, capsys) -> None:
        """A valid file prints Falco's result for it, successful and empty, and exits 0."""
        path = rules_file(GOOD)
        assert main(["rules", "validate", "--json", path]) == 0
        assert json.loads(capsys.readouterr().out) == {
            "falco_load_results": [{"name": path, "successful": True, "errors": [], "warnings": []}]}

    def test_invalid_file(self, rules_file, capsys) -> None:
        """An invalid file prints its error with file, line, item and code, and exits 1."""
        path = rules_file(GOOD.replace("ka.verb = delete", "ka.verb = delete and"))
        assert main(["rules", "validate", "--json", path]) == 1
        [result] = json.loads(capsys.readouterr().out)["falco_load_results"]
        assert result["successful"] is False
        assert [(e["code"], *_where(e)) for e in result["errors"]] == [
            ("LOAD_ERR_COMPILE_CONDITION", path, 2, "rule 'Secret Deleted'")]

    def test_warnings_do_not_fail(self, rules_file, capsys) -> None:
        """Warnings are listed but the exit code stays 0."""
        assert main(["rules", "validate", "--json", rules_file("- list: unused\n  items: [a]\n" + GOOD)]) == 0
        [result] = json.loads(capsys.readouterr().out)["falco_load_results"]
        assert [(w["code"], _where(w)[1:]) for w in result["warnings"]] == [("LOAD_UNUSED_LIST", (0, "list 'unused'"))]


class TestReplay:
    def test_alerts_as_json_lines(self, rules_file, tmp_path, capsys) -> None:
        """Replaying an audit file prints one Falco JSON alert per match and exits 0."""
        events = tmp_path / "audit.jsonl"
        events.write_text(json.dumps(AUDIT) + "\n" + json.dumps({**AUDIT, "verb": "get", "auditID": "a-2"}) + "\n")
        assert main(["replay", "-r", rules_file(GOOD), str(events)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 1
        alert = json.loads(lines[0])
        assert (alert["rule"], alert["priority"], alert["source"], alert["tags"]) == (
            "Secret Deleted", "Warning", "k8s_audit", ["k8s", "secrets"])
        assert alert["output_fields"]["ka.user.name"] == "alice"
        assert alert["output"].endswith(": Warning deleted by alice")

    def test_bad_rules_exit_1(self, rules_file, tmp_path, capsys) -> None:
        """Replay refuses to run with rules that do not load, and says why on stderr."""
        events = tmp_path / "audit.json"
        events.write_text(json.dumps(AUDIT))
        assert main(["replay", "-r", rules_file("- rule: x\n"), str(events)]) == 1
        captured = capsys.readouterr()
        assert captured.out == "" and "LOAD_ERR_YAML_VALIDATE" in captured.err
