"""The engine built from the configuration, at start and at each reload: `append_output` applied both times."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from agent.builtin_sources import builtin_source_specs
from agent.config import load_config
from agent.config.schema import AgentConfig, AppendMatchConfig, AppendOutputConfig, ExtraFieldConfig
from agent.engine_setup import load_engine
from agent.fields import FieldFlag
from agent.plugins.api import schema_fields
from tests.agent.test_reload import events, make_reloader, rules_text


def _outputs(config: AgentConfig, rules: Path) -> list[tuple[str, dict[str, object]]]:
    engine, result = load_engine(config, [rules], sources=builtin_source_specs(), hostname="node-1")
    assert result.successful, result.as_text()
    return [(a.output, a.falco_json()["output_fields"]) for e in events(1, 1) for a in engine.process(e)]


def test_the_configured_entries_reach_the_alerts(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text(1))
    config = AgentConfig(append_output=(
        AppendOutputConfig(suggested_output=True),
        AppendOutputConfig(match=AppendMatchConfig(source="k8s_audit"), extra_output="verb=%ka.verb",
                           extra_fields=(ExtraFieldConfig("ka.verb", "%ka.verb"),
                                         ExtraFieldConfig("who", "user %ka.user.name"))),
        AppendOutputConfig(match=AppendMatchConfig(source="syscall"), extra_output="never"),
    ))
    [(output, fields)] = _outputs(config, rules)
    # No field of the k8s_audit source is suggested (the upstream k8saudit plugin marks none).
    assert output == "exec v1 pod=cart-1 verb=create"
    assert fields["ka.verb"] == "create" and fields["who"] == "user alice@example.com"


def test_the_default_configuration_leaves_k8s_audit_outputs_as_written(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text(1))
    assert AgentConfig().append_output == (AppendOutputConfig(suggested_output=True),)
    assert [output for output, _ in _outputs(AgentConfig(), rules)] == ["exec v1 pod=cart-1"]


def test_a_reload_applies_a_changed_append_output(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text(1))
    config_file = tmp_path / "agent.yaml"
    config_file.write_text("append_output:\n  - extra_output: 'first %ka.verb'\n")
    reloader, swap, raised = make_reloader(tmp_path, rules, config=load_config(config_file),
                                           config_path=str(config_file))
    config_file.write_text("append_output:\n  - extra_output: 'second %ka.verb'\n"
                           "    extra_fields: [{name: where, format: 'ns %ka.target.namespace'}]\n")
    with capture_logs() as logs:
        assert reloader.reload(reason="test")
    reloaded = swap.take()
    assert reloaded is not None and raised == []
    [alert] = [a for e in events(1, 1) for a in reloaded.engine.process(e)]
    assert alert.output == "exec v1 pod=cart-1 second create"
    assert alert.output_fields["where"] == "ns shop"
    assert not [entry for entry in logs if entry["event"] == "config_change_needs_restart"]


def test_a_reload_with_an_unknown_appended_field_keeps_the_running_rules(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text(1))
    config_file = tmp_path / "agent.yaml"
    config_file.write_text("append_output: []\n")
    reloader, swap, raised = make_reloader(tmp_path, rules, config=load_config(config_file),
                                           config_path=str(config_file))
    config_file.write_text("append_output:\n  - match: {source: k8s_audit}\n    extra_output: 'cpu %evt.cpu'\n")
    assert not reloader.reload(reason="test")
    assert swap.take() is None
    [alert] = raised
    assert alert.output_fields["internal.code"] == "LOAD_ERR_COMPILE_OUTPUT"
    assert "append_output[0].extra_output, for source k8s_audit" in alert.output


def test_a_python_plugin_field_with_addoutput_is_suggested() -> None:
    marked, plain = schema_fields([{"name": "x.pod", "type": "string", "addOutput": True},
                                   {"name": "x.verb", "type": "string"}], lambda *_: None)
    assert FieldFlag.FORMAT_SUGGESTED in marked.flags and FieldFlag.FORMAT_SUGGESTED not in plain.flags
