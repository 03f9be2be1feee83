"""`--enable-source` / `--disable-source` take Falco's event-source names, with Falco's rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.cli import main
from agent.source_selection import SourceSelectionError, select_sources
from tests.support.agent_process import Agent

KNOWN = ("syscall", "k8s_audit", "aws_cloudtrail")


class TestSelect:
    def test_nothing_given_runs_every_source(self) -> None:
        assert select_sources(KNOWN) == frozenset(KNOWN)

    def test_enable_runs_only_the_named_sources(self) -> None:
        assert select_sources(KNOWN, enable=["syscall", "aws_cloudtrail"]) == {"syscall", "aws_cloudtrail"}

    def test_disable_runs_the_others(self) -> None:
        assert select_sources(KNOWN, disable=["syscall"]) == {"k8s_audit", "aws_cloudtrail"}

    @pytest.mark.parametrize(("enable", "disable", "message"), [
        (["kernel"], [], "--enable-source: unknown event source 'kernel'; valid names: syscall, k8s_audit, "
                         "aws_cloudtrail"),
        ([], ["k8saudit"], "--disable-source: unknown event source 'k8saudit'"),
        (["syscall"], ["k8s_audit"], "cannot be mixed"),
        ([], list(KNOWN), "every event source is disabled"),
    ])
    def test_refusals(self, enable: list[str], disable: list[str], message: str) -> None:
        with pytest.raises(SourceSelectionError, match=re.escape(message)):
            select_sources(KNOWN, enable=enable, disable=disable)


@pytest.mark.parametrize("argv", [
    ["--enable-source", "kernel"],
    ["--disable-source", "cloudtrail"],
    ["--enable-source", "syscall", "--disable-source", "k8s_audit"],
])
def test_a_bad_selection_is_a_usage_error_naming_the_valid_sources(argv: list[str], tmp_path: Path, capsys) -> None:
    """Exit 2 before anything starts, with the names the user could have written."""
    config = tmp_path / "agent.yaml"
    config.write_text("")
    assert main(["-c", str(config), *argv]) == 2
    err = capsys.readouterr().err
    assert "--enable-source" in err or "--disable-source" in err
    if "mixed" not in err:
        assert "valid names: syscall, k8s_audit, aws_cloudtrail" in err


@pytest.mark.server
@pytest.mark.parametrize("flags", [["--enable-source", "k8s_audit"],
                                   ["--disable-source", "aws_cloudtrail", "--disable-source", "syscall"]])
def test_only_the_selected_sources_start(flags: list[str], tmp_path: Path) -> None:
    """CloudTrail and the kernel are configured, but only the audit webhook starts (no BPF compile either)."""
    agent = Agent("-o", "sources.k8s_audit.webhook.listen=127.0.0.1:0",
                  "-o", f"sources.aws_cloudtrail.directory.paths=[{tmp_path}]", *flags, kernel=True)
    try:
        assert agent.wait_for_log("event_sources_enabled")["sources"] == ["k8s_audit"]
        assert agent.wait_for_log("agent_started")["sources"] == ["k8s_audit"]
    finally:
        code, _ = agent.stop()
    assert code == 0
    assert "kernel_source" not in "".join(agent.stderr)


@pytest.mark.server
def test_a_selected_source_without_input_says_where_to_enable_it(tmp_path: Path) -> None:
    agent = Agent("-o", "sources.k8s_audit.webhook.listen=127.0.0.1:0", "--enable-source", "aws_cloudtrail",
                  "--enable-source", "k8s_audit")
    try:
        warning = agent.wait_for_log("selected_source_has_no_input")
        assert warning["source"] == "aws_cloudtrail"
        assert "sources.aws_cloudtrail" in warning["hint"]
        assert agent.wait_for_log("agent_started")["sources"] == ["k8s_audit"]
    finally:
        agent.stop()
