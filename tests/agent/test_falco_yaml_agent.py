"""Falco's own falco.yaml, edited as a Falco user edits it, runs the agent: its rules, its JSON file output, the
k8saudit plugin entry as the webhook, its web server with metrics on."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.agent_process import Agent
from tests.support.plugins import AUDIT, SECRET_DELETED_RULE
from tests.support.webhook_agent import WAIT_S, listening, post_until_accepted

K8SAUDIT_ENTRY = """\
  - name: k8saudit
    library_path: libk8saudit.so
    init_config:
      maxEventSize: 262144
    open_params: "http://127.0.0.1:0/k8s-audit"
  - name: json
    library_path: libjson.so
"""


def edit(text: str, section: str, old: str, new: str) -> str:
    """`text` with the first `old` after the line `section` replaced, as a person edits one key of one section."""
    start = text.index(f"\n{section}\n") + 1
    at = text.index(old, start)
    return text[:at] + new + text[at + len(old):]


def users_falco_yaml(reference: Path, folder: Path) -> tuple[Path, Path]:
    """Falco's falco.yaml with a user's edits: own rules, JSON alerts into a file, the k8saudit plugin, metrics on;
    stdout and syslog off, the web server on loopback. Returns the file and the alerts file it names."""
    rules = folder / "my_rules.yaml"
    rules.write_text(SECRET_DELETED_RULE)
    alerts = folder / "events.json"
    text = (reference / "config" / "falco.yaml").read_text(encoding="utf-8")
    text = edit(text, "rules_files:", "  - /etc/falco/falco_rules.yaml\n  - /etc/falco/falco_rules.local.yaml\n"
                                      "  - /etc/falco/rules.d\n", f"  - {rules}\n")
    text = edit(text, "load_plugins: []", "load_plugins: []", "load_plugins: [k8saudit, json]")
    text = edit(text, "plugins:", "      with_size: false\n", "      with_size: false\n" + K8SAUDIT_ENTRY)
    text = edit(text, "json_output: false", "json_output: false", "json_output: true")
    text = edit(text, "stdout_output:", "enabled: true", "enabled: false")
    text = edit(text, "syslog_output:", "enabled: true", "enabled: false")
    text = edit(text, "file_output:", "enabled: false", "enabled: true")
    text = edit(text, "file_output:", "filename: ./events.txt", f"filename: {alerts}")
    text = edit(text, "webserver:", "listen_port: 8765", "listen_port: 0")
    text = edit(text, "webserver:", "listen_address: 0.0.0.0", "listen_address: 127.0.0.1")
    text = edit(text, "webserver:", "prometheus_metrics_enabled: false", "prometheus_metrics_enabled: true")
    text = edit(text, "metrics:", "enabled: false", "enabled: true")
    text = edit(text, "log_syslog: true", "log_syslog: true", "log_syslog: false")
    path = folder / "falco.yaml"
    path.write_text(text, encoding="utf-8")
    return path, alerts


def first_line(path: Path, timeout_s: float = WAIT_S) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().endswith("\n"):
            return dict(json.loads(path.read_text().splitlines()[0]))
        time.sleep(0.05)
    raise AssertionError(f"no alert in {path}")


def test_a_users_falco_yaml_runs_the_agent(reference: Path, tmp_path: Path) -> None:
    """The audit event POSTed to the plugin's webhook comes out as Falco's JSON alert in the file; /metrics answers."""
    config, alerts = users_falco_yaml(reference, tmp_path)
    agent = Agent("-c", str(config), "--disable-source", "syscall")
    try:
        urls = listening(agent, "webhook_listening", "metrics_listening")
        assert urls["webhook_listening"].startswith("http://127.0.0.1:")  # the plugin's open_params, port 0
        assert urls["webhook_listening"].endswith("/k8s-audit")
        post_until_accepted(urls["webhook_listening"], AUDIT)
        alert = first_line(alerts)
        with urllib.request.urlopen(urls["metrics_listening"], timeout=WAIT_S) as response:
            families = list(text_string_to_metric_families(response.read().decode()))
    finally:
        code, out = agent.stop()
    assert code == 0 and out == ""  # stdout_output is off
    assert (alert["rule"], alert["priority"], alert["source"]) == ("Secret Deleted", "Warning", "k8s_audit")
    assert alert["output_fields"]["ka.user.name"] == "alice" and "deleted by alice" in alert["output"]
    assert "tags" in alert and "message" not in alert  # Falco's json_include_* defaults
    assert families
