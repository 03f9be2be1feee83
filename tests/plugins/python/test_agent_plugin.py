"""A Python plugin in a real agent process: its source runs beside a built-in one and is supervised like it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main
from tests.support.agent_process import REPO, Agent, alerts_until
from tests.support.plugins import SECRET_DELETED_RULE, append_audit, audit_file_config

RULES = """\
- required_plugin_versions:
    - name: ticker
      version: 0.2.0
- rule: Ticked
  desc: the ticker counted
  condition: ticker.count > 0 and ticker.message = hello
  output: tick %ticker.count
  priority: NOTICE
  source: ticker
"""


def write_config(tmp_path: Path, *, fail_after: int = 0) -> tuple[Path, Path]:
    """agent.yaml loading the ticker by entry point beside the k8s audit file reader; returns it and the log."""
    sources, audit_log = audit_file_config(tmp_path, RULES + SECRET_DELETED_RULE)
    config = tmp_path / "agent.yaml"
    config.write_text(f"""\
{sources}plugins:
  - name: ticker
    library_path: ticker
    init_config:
      interval_s: 0.05
      message: hello
      fail_after: {fail_after}
load_plugins: [ticker]
""")
    return config, audit_log


def agent(plugin_site: Path, config: Path, *args: str) -> Agent:
    return Agent("-c", str(config), "--json", *args, env={"PYTHONPATH": os.pathsep.join([str(plugin_site), str(REPO)])})


@pytest.mark.server
def test_the_plugin_source_runs_beside_a_builtin_one(plugin_site: Path, tmp_path: Path) -> None:
    config, audit_log = write_config(tmp_path)
    run = agent(plugin_site, config)
    run.read_alerts()
    try:
        assert run.wait_for_log("agent_started")["sources"] == ["k8s_audit", "ticker"]
        append_audit(audit_log)
        seen = alerts_until(run, {"Ticked", "Secret Deleted"})
    finally:
        code, _ = run.stop()
    assert code == 0
    tick = next(a for a in seen if a["rule"] == "Ticked")
    assert tick["source"] == "ticker"
    assert tick["rule"] == "Ticked" and str(tick["output"]).endswith(f"tick {tick['output_fields']['ticker.count']}")


@pytest.mark.server
def test_enable_source_takes_the_plugin_source(plugin_site: Path, tmp_path: Path) -> None:
    config, _ = write_config(tmp_path)
    run = agent(plugin_site, config, "--enable-source", "ticker")
    try:
        assert run.wait_for_log("agent_started")["sources"] == ["ticker"]
    finally:
        code, _ = run.stop()
    assert code == 0


@pytest.mark.server
def test_a_failing_plugin_input_is_restarted_and_the_other_sources_keep_running(plugin_site: Path,
                                                                              tmp_path: Path) -> None:
    config, audit_log = write_config(tmp_path, fail_after=2)
    run = agent(plugin_site, config)
    run.read_alerts()
    try:
        assert run.wait_for_log("source_failed")["source"] == "ticker"
        assert run.wait_for_log("source_restarted")["source"] == "ticker"
        append_audit(audit_log)
        seen = alerts_until(run, {"Secret Deleted", "Falco Agent Source Restarted"})
        ticks_after_restart = alerts_until(run, {"Ticked"})
    finally:
        run.stop()
    assert "Falco Agent Source Failed" in {str(a["rule"]) for a in seen}
    assert ticks_after_restart


def test_fields_lists_the_plugin_fields(plugin_site: Path, tmp_path: Path) -> None:
    config, _ = write_config(tmp_path)
    out = subprocess.run([sys.executable, "-m", "agent.cli", "-c", str(config), "fields", "--source", "ticker",
                          "--json"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(plugin_site)},
                         capture_output=True, text=True, check=True).stdout
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["ticker.count"]["type"] == "uint64" and rows["ticker.even"]["type"] == "bool"
    assert {row["source"] for row in rows.values()} == {"ticker"}


def test_an_unknown_load_plugins_name_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = write_config(tmp_path)
    config.write_text(config.read_text().replace("load_plugins: [ticker]", "load_plugins: [tickr]"))
    assert main(["-c", str(config), "fields"]) == 2
    assert "load_plugins[0]: no entry of plugins is named 'tickr'" in capsys.readouterr().err
