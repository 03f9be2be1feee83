"""Native (Falco ABI) plugins loaded from `plugins:` in agent.yaml, in real agent processes and through the registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent.alert import Alert
from agent.config import load_config
from agent.errors import ConfigError
from agent.grpc.client import AlertClient, make_filter
from agent.plugins.registry import load_registry
from tests.plugins.python.test_agent_plugin import write_config
from tests.support.agent_process import REPO, Agent, alerts_until
from tests.support.plugins import SECRET_DELETED_RULE, Built, append_audit, audit_file_config

EVENTS = 12
TESTSRC_RULES = """\
- required_plugin_versions:
    - name: testsrc
      version: 1.2.0
- rule: Test Event
  desc: an event of the test source
  condition: test.num > 0 and extra.upper startswith EVT-
  output: test event %test.num (%extra.upper, %extra.len bytes)
  priority: NOTICE
  source: testsrc
"""


def dummy_entry(built: Built) -> str:
    return f"""\
  - name: dummy_c
    library_path: {built.dummy_c}
    init_config: {{jitter: 2}}
    open_params: '{{"start": 1, "maxEvents": {EVENTS}}}'
"""


def dummy_rules(reference: Path) -> str:
    return str(reference / "plugins" / "dummy_c" / "dummy_c_rules.yaml")


def write(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "agent.yaml"
    config.write_text(text)
    return config


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)


def source_config(tmp_path: Path, built: Built, init_config: str, *, library: Path | None = None) -> Path:
    return write(tmp_path, f"""\
plugins:
  - name: testsrc
    library_path: {library or built.source}
    init_config: {init_config}
load_plugins: [testsrc]
""")


def _collect(client: AlertClient, count: int) -> list[Alert]:
    out = []
    for item in client.subscribe(allow=[make_filter(sources=["dummy_c"])], resume_after=0, reconnect=False):
        assert isinstance(item, Alert), item  # a fresh agent has lost nothing, so there is no gap
        out.append(item)
        if len(out) == count:
            break
    return out


@pytest.mark.server
def test_dummy_c_alerts_on_stdout_and_to_a_grpc_subscriber(built: Built, reference: Path, tmp_path: Path) -> None:
    config = write(tmp_path, f"plugins:\n{dummy_entry(built)}load_plugins: [dummy_c]\n")
    agent = Agent("-c", str(config), "-r", dummy_rules(reference), "--enable-source", "dummy_c", "--json")
    agent.read_alerts()
    received: list[Alert] = []
    try:
        assert agent.wait_for_log("agent_started")["sources"] == ["dummy_c"]
        client = AlertClient(socket_path=agent.state / "grpc.sock")
        listener = threading.Thread(target=lambda: received.extend(_collect(client, EVENTS)), daemon=True)
        listener.start()
        stdout = agent.wait_for_alerts(EVENTS)
        listener.join(timeout=20)
        client.close()
    finally:
        code, _ = agent.stop()
    assert code == 0
    values = [alert["output_fields"]["dummy.value"] for alert in stdout]
    # start 1, then each event adds 1 plus a jitter in [0, 2] (dummy_c README); every value > 1 alerts
    assert all(1 <= later - earlier <= 3 for earlier, later in zip([1, *values], values, strict=False))
    for alert, value in zip(stdout, values, strict=True):
        assert (alert["source"], alert["rule"], alert["priority"]) == ("dummy_c", "Sample dummy_c plugin rule",
                                                                       "Critical")
        assert alert["output"].endswith(f"-> triggered (value={value})")
    assert [(a.source, a.output_fields["dummy.value"]) for a in received] == [("dummy_c", v) for v in values]


def test_fields_and_rules_validate_know_the_plugin_source(built: Built, reference: Path, tmp_path: Path) -> None:
    config = write(tmp_path, f"plugins:\n{dummy_entry(built)}load_plugins: [dummy_c]\n")
    fields = cli("-c", str(config), "fields", "--source", "dummy_c", "--json")
    assert fields.returncode == 0, fields.stderr
    rows = {row["name"]: row for row in json.loads(fields.stdout)}
    assert rows["dummy.value"]["type"] == "uint64" and rows["dummy.strvalue"]["source"] == "dummy_c"
    assert {"dummy.divisible", "evt.pluginname", "evt.plugininfo"} <= set(rows)
    valid = cli("-c", str(config), "rules", "validate", dummy_rules(reference))
    assert valid.returncode == 0 and ": Ok (0 errors, 0 warnings)" in valid.stdout, valid.stdout + valid.stderr
    # Without the plugin loaded, its rule is skipped with a warning, as Falco does for an unknown source.
    bare = cli("-c", str(write(tmp_path, f"plugins:\n{dummy_entry(built)}load_plugins: []\n")), "rules",
               "validate", dummy_rules(reference))
    assert "dummy_c, skipping" in bare.stdout and "1 warnings" in bare.stdout, bare.stdout + bare.stderr


@pytest.mark.server
def test_native_python_and_builtin_sources_at_once(built: Built, plugin_site: Path, reference: Path,
                                                   tmp_path: Path) -> None:
    config, audit_log = write_config(tmp_path)
    config.write_text(config.read_text().replace("load_plugins: [ticker]",
                                                 f"{dummy_entry(built)}load_plugins: [ticker, dummy_c]"))
    # `rules_files[]=` adds to the configured rules files, where `-r` would replace them (as in Falco).
    agent = Agent("-c", str(config), "-o", f"rules_files[]={dummy_rules(reference)}", "--json",
                  env={"PYTHONPATH": os.pathsep.join([str(plugin_site), str(REPO)])})
    agent.read_alerts()
    try:
        assert agent.wait_for_log("agent_started")["sources"] == ["k8s_audit", "ticker", "dummy_c"]
        append_audit(audit_log)
        seen = alerts_until(agent, {"Ticked", "Secret Deleted", "Sample dummy_c plugin rule"})
    finally:
        code, _ = agent.stop()
    assert code == 0
    by_rule = {str(alert["rule"]): alert for alert in seen}
    assert by_rule["Sample dummy_c plugin rule"]["source"] == "dummy_c"
    assert by_rule["Ticked"]["source"] == "ticker" and by_rule["Secret Deleted"]["source"] == "k8s_audit"


@pytest.mark.server
def test_a_failing_plugin_source_is_restarted_while_the_others_run(built: Built, tmp_path: Path) -> None:
    """testsrc fails at its 5th event (after handing over the 4 before it), with the extractor-only testextra
    adding its fields to testsrc's events; the k8s audit file source keeps running."""
    sources, audit_log = audit_file_config(tmp_path, TESTSRC_RULES + SECRET_DELETED_RULE)
    config = write(tmp_path, f"""\
{sources}plugins:
  - name: testsrc
    library_path: {built.source}
    init_config: '{{"count": 100, "fail_at": 5}}'
  - name: testextra
    library_path: {built.extractor}
""")
    agent = Agent("-c", str(config), "--json")
    agent.read_alerts()
    try:
        failed = agent.wait_for_log("source_failed")
        assert failed["source"] == "testsrc" and "disk on fire at event 5" in str(failed)
        assert agent.wait_for_log("source_restarted")["source"] == "testsrc"
        append_audit(audit_log)
        seen = alerts_until(agent, {"Falco Agent Source Failed", "Test Event", "Secret Deleted"})
    finally:
        code, _ = agent.stop()
    assert code == 0
    tests = [a for a in seen if a["rule"] == "Test Event"]
    assert tests[0]["output"].endswith("test event 1 (EVT-1, 5 bytes)")
    assert {a["output_fields"]["test.num"] for a in tests} <= {1, 2, 3, 4}


def test_a_plugin_whose_init_refuses_stops_the_agent(built: Built, tmp_path: Path) -> None:
    run = cli("-c", str(source_config(tmp_path, built, "{refuse: true}")))
    assert run.returncode == 2
    assert "plugins[0].init_config: plugin testsrc" in run.stderr
    assert "refused: the test config asks to refuse" in run.stderr


def test_init_config_is_checked_by_the_plugin_schema(built: Built, tmp_path: Path) -> None:
    run = cli("-c", str(source_config(tmp_path, built, "{colour: red}")), "fields")
    assert run.returncode == 2 and "plugins[0].init_config" in run.stderr and "colour" in run.stderr


@pytest.mark.parametrize(("library", "expected"), [
    ("not_a_plugin", "is not a Falco plugin: it exports no plugin_get_required_api_version"),
    ("too_new", "requires plugin API 3.13.0, a newer version than the 3.12.0 this agent implements"),
])
def test_a_library_the_agent_cannot_load_stops_it(built: Built, tmp_path: Path, library: str, expected: str) -> None:
    path: Path = getattr(built, library)
    run = cli("-c", str(source_config(tmp_path, built, "{}", library=path)))
    assert run.returncode == 2
    assert "plugins[0].library_path: " in run.stderr and str(path) in run.stderr and expected in run.stderr


def test_an_extractor_only_plugin_adds_its_fields_to_its_plugin_source(built: Built, tmp_path: Path) -> None:
    config = write(tmp_path, f"""\
plugins:
  - name: testextra
    library_path: {built.extractor}
  - name: testsrc
    library_path: {built.source}
""")
    registry = load_registry(load_config(config))
    try:
        spec = next(spec for spec in registry.specs() if spec.name == "testsrc")
        assert {"extra.len", "extra.upper", "test.num"} <= {field.name for field in spec.fields}
        assert set(spec.plugins) == {("testsrc", "1.2.3"), ("testextra", "0.1.0")}
    finally:
        registry.stop()


def test_an_extractor_without_its_source_is_refused(built: Built, tmp_path: Path) -> None:
    config = write(tmp_path, f"plugins:\n  - name: testextra\n    library_path: {built.extractor}\n")
    with pytest.raises(ConfigError, match=r"plugins\[0\].init_config: plugin 'testextra' extracts fields from "
                                          r"testsrc, which no loaded plugin provides"):
        load_registry(load_config(config))


def test_a_native_extractor_on_a_builtin_source_is_refused(built: Built, tmp_path: Path) -> None:
    """Its fields would read libscap events, and k8s_audit events are not: refused rather than never extracting."""
    config = write(tmp_path, f"""\
plugins:
  - name: testsrc
    library_path: {built.source}
  - name: testextra
    library_path: {built.extractor_k8s}
""")
    with pytest.raises(ConfigError, match=r"plugins\[1\].init_config: native plugin 'testextra' extracts fields "
                                          r"from k8s_audit, provided by sources.k8s_audit: a native plugin extracts "
                                          r"only from events of native source plugins"):
        load_registry(load_config(config))
