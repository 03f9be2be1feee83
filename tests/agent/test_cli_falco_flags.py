"""Falco's command-line flags as a Falco user runs them: what each prints, its exit code, and for `-r`, `-M` and `-p`
what a running agent does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.cli import main
from sources.kernel.syscalls import STATE_SYSCALLS, SYSCALLS
from tests.support import webhook_agent
from tests.support.agent_process import REPO, Agent
from tests.support.plugins import AUDIT, SECRET_DELETED_RULE

LONG_DESC = "word " * 60
SECOND_RULE = f"""\
- rule: Secret Read
  desc: {LONG_DESC}
  condition: ka.verb = get and ka.target.resource = secrets
  output: read by %ka.user.name
  priority: NOTICE
  source: k8s_audit
  tags: [k8s]
"""


@pytest.fixture
def two_rules(tmp_path: Path) -> Path:
    path = tmp_path / "two.yaml"
    path.write_text(SECRET_DELETED_RULE + SECOND_RULE)
    return path


@pytest.fixture
def empty_config(tmp_path: Path) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text("")
    return path


def run_cli(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout_s)


def support(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main([*args, "--support"]) == 0
    return json.loads(capsys.readouterr().out)


class TestVersion:
    def test_text_names_engine_plugin_api_and_each_plugin(self, empty_config: Path, capsys) -> None:
        assert main(["-c", str(empty_config), "--version"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0] == "falco-agent version: 0.1.0"
        assert "Falco engine:        0.63.0" in out and "Plugin API:          3.12.0" in out
        assert "  k8s_audit 0.1.0 (for k8saudit 0.18.0, json 0.7.4)" in out

    @pytest.mark.parametrize("flag", [["--json"], ["-o", "json_output=true"]])
    def test_json_as_falco_prints_it(self, flag: list[str], empty_config: Path, capsys) -> None:
        assert main(["-c", str(empty_config), *flag, "--version"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert (info["engine_version"], info["engine_version_semver"], info["plugin_api_version"]) == (
            "63", "0.63.0", "3.12.0")
        assert info["plugin_versions"]["k8saudit"] == "0.18.0" and info["plugin_versions"]["cloudtrail"] == "0.17.1"


class TestRuleListing:
    def test_capital_l_lists_every_rule_with_its_description(self, two_rules: Path, capsys) -> None:
        assert main(["-r", str(two_rules), "-L"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == ["Rule", "Description"] and lines[1].split() == ["----", "-----------"]
        assert lines[2] == f"{'Secret Deleted':<50} someone deleted a secret"
        assert lines[4].startswith(f"{'Secret Read':<50} word word")
        # The long description wraps under its column, within 110 characters, and loses no word.
        wrapped = lines[4:lines.index("", 4)]
        assert len(wrapped) > 1 and all(len(line) <= 110 for line in wrapped)
        assert all(line.startswith(" " * 51 + "word") for line in wrapped[1:])
        assert " ".join(line[51:] for line in wrapped).split() == LONG_DESC.split()

    def test_l_describes_one_rule(self, two_rules: Path, capsys) -> None:
        assert main(["-r", str(two_rules), "-l", "Secret Deleted"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[2:] == [f"{'Secret Deleted':<50} someone deleted a secret", ""]

    def test_an_unknown_rule_is_said_and_exits_1(self, two_rules: Path, capsys) -> None:
        assert main(["-r", str(two_rules), "-l", "Secret Written"]) == 1
        captured = capsys.readouterr()
        assert captured.out == "" and "rule 'Secret Written' is not loaded (2 rules are" in captured.err

    def test_json_lists_rule_infos(self, two_rules: Path, capsys) -> None:
        assert main(["-r", str(two_rules), "-o", "rules[].disable.rule=Secret Read", "--json", "-L"]) == 0
        infos = [rule["info"] for rule in json.loads(capsys.readouterr().out)["rules"]]
        assert [(i["name"], i["priority"], i["source"], i["enabled"], i["tags"]) for i in infos] == [
            ("Secret Deleted", "Warning", "k8s_audit", True, []),
            ("Secret Read", "Notice", "k8s_audit", False, ["k8s"])]

    def test_rules_that_do_not_load_exit_1(self, tmp_path: Path, capsys) -> None:
        bad = tmp_path / "bad.yaml"
        bad.write_text(SECRET_DELETED_RULE.replace("ka.verb = delete", "ka.verb ="))
        assert main(["-r", str(bad), "-L"]) == 1
        assert "rules did not load (1 errors)" in capsys.readouterr().err


class TestFieldsAndValidate:
    def test_list_with_a_source_prints_what_fields_does(self, capsys) -> None:
        assert main(["--list", "k8s_audit"]) == 0
        listed = capsys.readouterr().out
        assert main(["fields", "--source", "k8s_audit"]) == 0
        assert listed == capsys.readouterr().out and "ka.user.name" in listed

    def test_list_without_a_source_prints_every_source(self, capsys) -> None:
        assert main(["--list"]) == 0
        out = capsys.readouterr().out
        assert all(f"# source: {name}" in out for name in ("syscall", "k8s_audit", "aws_cloudtrail"))

    def test_list_of_an_unknown_source_is_a_usage_error(self, capsys) -> None:
        assert main(["--list", "k8s"]) == 2
        assert "unknown source 'k8s'" in capsys.readouterr().err

    def test_validate_exits_0_on_good_rules_and_1_on_bad(self, two_rules: Path, tmp_path: Path, capsys) -> None:
        assert main(["-V", str(two_rules)]) == 0
        assert capsys.readouterr().out.endswith(f"{two_rules}: Ok (0 errors, 0 warnings)\n")
        bad = tmp_path / "bad.yaml"
        bad.write_text("- rule: x\n")
        assert main(["--validate", str(two_rules), "-V", str(bad)]) == 1
        out = capsys.readouterr().out
        assert "LOAD_ERR_YAML_VALIDATE" in out and out.endswith(f"{two_rules}, {bad}: Invalid (1 errors, 0 warnings)\n")


class TestPluginsAndIgnoredEvents:
    def test_list_plugins_names_every_loaded_plugin(self, capsys) -> None:
        assert main(["--list-plugins"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("3 plugins loaded:")
        assert [line for line in out.splitlines() if line.startswith("Name: ")] == [
            "Name: syscall", "Name: k8s_audit", "Name: aws_cloudtrail"]
        assert "  - Event Sourcing (source 'aws_cloudtrail')" in out

    def test_plugin_info_shows_its_configuration_as_loaded(self, capsys) -> None:
        assert main(["-o", "sources.k8s_audit.webhook.listen=127.0.0.1:9999", "--plugin-info", "k8s_audit"]) == 0
        out = capsys.readouterr().out
        head, config = out.split("Init config (as loaded):\n")
        assert "Name: k8s_audit" in head and "Stands in for: k8saudit 0.18.0, json 0.7.4" in head
        assert json.loads(config)["webhook"]["listen"] == "127.0.0.1:9999"

    def test_plugin_info_of_an_unknown_plugin_exits_1(self, capsys) -> None:
        assert main(["--plugin-info", "k8saudit"]) == 1
        assert "no loaded plugin is named 'k8saudit'; loaded: syscall, k8s_audit, aws_cloudtrail" in (
            capsys.readouterr().err)

    def test_i_tells_what_the_kernel_source_captures(self, capsys) -> None:
        assert main(["-i"]) == 0
        sections = capsys.readouterr().out.split("\n\n")
        assert "No event is ignored for performance" in sections[0]
        listed = [{line[2:] for line in section.splitlines() if line.startswith("- ")} for section in sections[1:]]
        always, on_demand, never = listed
        assert always == STATE_SYSCALLS and on_demand == set(SYSCALLS) - STATE_SYSCALLS
        assert "read" in on_demand and "readv" in never and not never & set(SYSCALLS)


class TestSupport:
    def test_report_holds_versions_system_command_line_config_and_rules(self, two_rules: Path, tmp_path: Path,
                                                                        capsys) -> None:
        config = tmp_path / "agent.yaml"
        config.write_text("rule_matching: all\n")
        args = ["-c", str(config), "-r", str(two_rules)]
        report = support(capsys, *args)
        assert report["version"] == "0.1.0" and report["engine_info"]["engine_version_semver"] == "0.63.0"
        system = report["system_info"]
        assert system["cpus"] == os.cpu_count() and system["memory_bytes"] > 0
        assert system["release"] == os.uname().release
        assert report["cmdline"] == " ".join(["falco-agent", *args, "--support"])
        assert report["config"]["rule_matching"] == "all"
        assert report["config_files"] == [{"name": str(config), "content": "rule_matching: all\n"}]
        assert report["rules_files"] == [{"name": str(two_rules), "content": two_rules.read_text()}]

    def test_an_unreadable_rules_file_is_reported_not_fatal(self, tmp_path: Path, capsys) -> None:
        report = support(capsys, "-r", str(tmp_path / "absent.yaml"))
        assert report["rules_files"] == [{"name": str(tmp_path / "absent.yaml"), "content": None,
                                          "error": "No such file or directory"}]


class TestConfigurationFlags:
    """-U and -p change the configuration the agent runs with (and reloads with): the support report shows it."""

    def test_unbuffered(self, empty_config: Path, capsys) -> None:
        assert support(capsys, "-c", str(empty_config))["config"]["outputs"]["buffered"] is True
        assert support(capsys, "-c", str(empty_config), "-U")["config"]["outputs"]["buffered"] is False

    def test_print_adds_an_entry_after_the_default_suggested_output(self, empty_config: Path, capsys) -> None:
        entries = support(capsys, "-c", str(empty_config), "-p", "user=%ka.user.name")["config"]["append_output"]
        assert [(e["suggested_output"], e["extra_output"]) for e in entries] == [(True, ""),
                                                                                (False, "user=%ka.user.name")]

    def test_print_adds_to_the_configured_entries(self, tmp_path: Path, capsys) -> None:
        config = tmp_path / "agent.yaml"
        config.write_text("append_output: []\n")
        entries = support(capsys, "-c", str(config), "-p", "verb=%ka.verb")["config"]["append_output"]
        assert [(e["suggested_output"], e["extra_output"]) for e in entries] == [(False, "verb=%ka.verb")]


def write_rule(path: Path, name: str, output: str = "rule fired") -> None:
    """A k8s_audit rule `name` raising an alert on every audit event, written atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"- rule: {name}\n  desc: every event\n  condition: ka.auditid exists\n  output: {output}\n"
                   "  priority: WARNING\n  source: k8s_audit\n")
    os.replace(tmp, path)


def webhook_agent_with(*args: str) -> tuple[Agent, str]:
    """A started agent (JSON alerts read as they come) with its audit webhook on 127.0.0.1:0, and the webhook URL."""
    agent = Agent("--json", "--disable-source", "syscall", "-o", "sources.k8s_audit.webhook.listen=127.0.0.1:0",
                  "-o", "sources.aws_cloudtrail.enabled=false", *args)
    agent.read_alerts()
    return agent, webhook_agent.listening(agent, "webhook_listening")["webhook_listening"]


def logged(agent: Agent, event: str) -> list[dict]:
    """Every JSON log line `event` the agent wrote on stderr so far."""
    return [entry for line in list(agent.stderr) if line.startswith("{")
            and (entry := json.loads(line))["event"] == event]


@pytest.mark.server
class TestRunningAgent:
    def test_r_replaces_the_configured_rules_files_also_after_a_reload(self, tmp_path: Path) -> None:
        configured, given = tmp_path / "configured.yaml", tmp_path / "given.yaml"
        write_rule(configured, "From Config")
        write_rule(given, "From Command Line")
        config = tmp_path / "agent.yaml"
        config.write_text(f"rules_files: [{configured}]\n")
        agent, url = webhook_agent_with("-c", str(config), "-r", str(given))
        try:
            assert [entry["files"] for entry in logged(agent, "rules_loaded")] == [[str(given)]]
            webhook_agent.post_until_accepted(url, webhook_agent.audit_event("a-1"))
            assert [a["rule"] for a in agent.wait_for_alerts(1)] == ["From Command Line"]
            write_rule(given, "From Command Line v2")
            assert agent.wait_for_log("rules_reloaded")["files"] == 1
            webhook_agent.post_until_accepted(url, webhook_agent.audit_event("a-2"))
            assert [a["rule"] for a in agent.wait_for_alerts(1)] == ["From Command Line v2"]
        finally:
            code, _ = agent.stop()
        assert code == 0 and agent.alerts.empty()

    def test_m_stops_after_the_seconds_and_drains_what_was_accepted(self, tmp_path: Path) -> None:
        rules = tmp_path / "rules.yaml"
        write_rule(rules, "Every Event")
        started = time.monotonic()
        agent, url = webhook_agent_with("-r", str(rules), "-M", "3")
        webhook_agent.post_until_accepted(url, webhook_agent.audit_event("a-1"))
        assert agent.proc.wait(timeout=30) == 0
        assert time.monotonic() - started >= 3
        agent.stop()  # the process has exited: this only collects the rest of its output
        assert [a["rule"] for a in agent.wait_for_alerts(1, timeout_s=1)] == ["Every Event"]
        assert [entry["alerts"] for entry in logged(agent, "agent_stopped")] == [1]

    def test_p_appends_its_format_to_every_alert(self, tmp_path: Path) -> None:
        rules = tmp_path / "rules.yaml"
        write_rule(rules, "Every Event", output="seen %ka.auditid")
        agent, url = webhook_agent_with("-r", str(rules), "-p", "verb=%ka.verb")
        try:
            webhook_agent.post_until_accepted(url, {**AUDIT, "auditID": "a-9"})
            [alert] = agent.wait_for_alerts(1)
        finally:
            agent.stop()
        assert "Warning seen a-9 " in alert["output"] and alert["output"].endswith(" verb=delete")
        assert alert["output_fields"]["ka.verb"] == "delete"


class TestDryRun:
    def test_passes_without_opening_anything(self, two_rules: Path, tmp_path: Path) -> None:
        socket = tmp_path / "grpc.sock"
        proc = run_cli("-r", str(two_rules), "-o", f"grpc.socket_path={socket}", "-o",
                       f"grpc.spool_dir={tmp_path / 'spool'}", "--dry-run")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "" and '"dry_run_passed"' in proc.stderr
        assert not socket.exists() and not (tmp_path / "spool").exists()

    def test_rules_that_do_not_load_exit_1(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.yaml"
        bad.write_text(SECRET_DELETED_RULE.replace("ka.verb = delete", "ka.verb ="))
        proc = run_cli("-r", str(bad), "--dry-run")
        assert proc.returncode == 1 and "LOAD_ERR_COMPILE_CONDITION" in proc.stderr

    def test_falcos_own_falco_yaml_passes_naming_what_it_does_not_support(self, reference: Path,
                                                                        two_rules: Path) -> None:
        """Falco's unchanged falco.yaml names /etc/falco rules files, which -r replaces."""
        proc = run_cli("-c", str(reference / "config" / "falco.yaml"), "-r", str(two_rules), "--dry-run")
        assert proc.returncode == 0, proc.stderr
        logs = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
        [warning] = [entry for entry in logs if entry["event"] == "falco_keys_not_supported"]
        assert warning["level"] == "warning"
        named = {key["key"] for key in warning["keys"]}
        assert {"libs_logger", "falco_libs", "syscall_event_timeouts", "base_syscalls"} <= named
        assert "rules_files" not in named and "json_output" not in named
        assert [entry["files"] for entry in logs if entry["event"] == "rules_loaded"] == [[str(two_rules)]]
