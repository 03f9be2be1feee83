"""An `inputs_only` plugin adds live inputs to an event source another plugin defines (Falco's k8saudit-eks feeding
`k8s_audit`): the fields stay the defining plugin's, and it loads only when `plugins`/`load_plugins` name it."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import AgentError, ConfigError
from agent.plugins.api import NoConfig, Plugin, schema_fields
from agent.plugins.registry import PluginRegistry, load_registry
from sources.k8saudit.eks import EksAuditLogs

BUILTIN = ["syscall", "k8s_audit", "aws_cloudtrail"]
EKS = """\
plugins:
  - name: k8saudit-eks
    library_path: {path}
    init_config: {{region: us-east-1, polling_interval: 10, buffer_size: 500}}
    open_params: {cluster}
"""
#: Inputs for an event source no plugin defines.
ORPHAN = Plugin(name="orphan", version="1.0.0", config=NoConfig, source="nowhere", inputs_only=True,
                live=lambda config, context: [])


def registry(tmp_path: Path, text: str) -> PluginRegistry:
    config = tmp_path / "agent.yaml"
    config.write_text(text)
    return load_registry(load_config(config))


@pytest.mark.parametrize("path", ["k8saudit-eks", "sources.k8saudit.eks:PLUGIN"])
def test_the_eks_plugin_adds_an_input_to_k8s_audit_and_keeps_its_fields(tmp_path: Path, path: str) -> None:
    loaded = registry(tmp_path, EKS.format(path=path, cluster="prod-1"))
    assert loaded.source_names() == BUILTIN
    spec = next(spec for spec in loaded.specs() if spec.name == "k8s_audit")
    assert "ka.verb" in spec.fields and "evt.pluginname" in spec.fields
    assert {("k8saudit", "0.18.0"), ("k8saudit-eks", "0.12.0")} <= set(spec.plugins)
    assert loaded.config_key("k8s_audit") == "sources.k8s_audit"
    inputs = loaded.live_sources(hostname="h", rule_values=lambda source, field: None, selected={"k8s_audit"})
    eks = [source for source in inputs["k8s_audit"] if isinstance(source, EksAuditLogs)]
    assert [source.log_group for source in eks] == ["/aws/eks/prod-1/cluster"]
    assert not any(isinstance(source, EksAuditLogs) for source in
                   loaded.live_sources(hostname="h", rule_values=lambda source, field: None,
                                       selected={"aws_cloudtrail"}).get("k8s_audit", []))


def test_the_eks_plugin_loads_only_when_named(tmp_path: Path) -> None:
    def has_eks(text: str) -> bool:
        inputs = registry(tmp_path, text).live_sources(hostname="h", rule_values=lambda source, field: None)
        return any(isinstance(source, EksAuditLogs) for source in inputs["k8s_audit"])

    assert not has_eks("")
    assert not has_eks(EKS.format(path="k8saudit-eks", cluster="c") + "load_plugins: []\n")
    assert has_eks(EKS.format(path="k8saudit-eks", cluster="c") + "load_plugins: [k8saudit-eks]\n")


def test_the_eks_plugin_needs_a_cluster_name_and_checks_its_init_config(tmp_path: Path) -> None:
    loaded = registry(tmp_path, EKS.format(path="k8saudit-eks", cluster="'bad name'"))
    with pytest.raises(AgentError, match="open_params must be the EKS cluster's name"):
        loaded.live_sources(hostname="h", rule_values=lambda source, field: None)
    with pytest.raises(ConfigError, match=r"plugins\[0\]\.init_config\.buffer_size"):
        registry(tmp_path, EKS.format(path="k8saudit-eks", cluster="c").replace("500", "20000"))


def test_inputs_for_a_source_no_plugin_defines_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="adds live inputs to event source 'nowhere', which no loaded plugin"):
        registry(tmp_path, "plugins:\n  - name: orphan\n"
                           "    library_path: tests.plugins.python.test_inputs_only:ORPHAN\n")


def test_an_inputs_only_plugin_declares_no_fields() -> None:
    fields = schema_fields([{"name": "x.y", "type": "string"}], lambda event, name, arg: None)
    with pytest.raises(ValueError, match="inputs_only plugin gives `source` and `live` alone"):
        Plugin(name="x", version="1.0.0", config=NoConfig, source="k8s_audit", inputs_only=True, fields=fields,
               live=lambda config, context: [])
