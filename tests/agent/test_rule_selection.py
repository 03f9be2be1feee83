"""The `rules` enable/disable commands of the configuration, applied in order over the loaded rules."""

from __future__ import annotations

import pytest

from agent.builtin_sources import new_engine
from agent.config import load_config
from agent.engine.engine import Engine, RulesText
from agent.rule_selection import apply_rule_selection


def rule(name: str, tags: str, *, enabled: bool = True) -> str:
    return (f"- rule: {name}\n  desc: d\n  condition: ka.verb=create\n  output: o %ka.target.name\n"
            f"  priority: NOTICE\n  source: k8s_audit\n  tags: [{tags}]\n  enabled: {str(enabled).lower()}\n")


# Four rules, one of which its file disables.
RULES = "".join([
    rule("Secret Read By Human", "k8s, secrets, T1552"),
    rule("Secret Listed", "k8s, secrets, T1552.007"),
    rule("NodePort Exposed", "k8s, network"),
    rule("Exec Audit Trail", "k8s, audit_trail", enabled=False),
])


@pytest.fixture
def engine() -> Engine:
    engine = new_engine(hostname="node-1")
    assert engine.load_rules([RulesText("rules.yaml", RULES)]).successful
    return engine


def enabled_after(engine: Engine, *overrides: str) -> set[str]:
    apply_rule_selection(engine, load_config(overrides=list(overrides)).rules)
    return {rule.name for rule in engine.rules if rule.enabled}


class TestApplyRuleSelection:
    def test_no_command_leaves_the_files_choice(self, engine: Engine) -> None:
        """Without commands the rules are enabled as their file says."""
        assert enabled_after(engine) == {"Secret Read By Human", "Secret Listed", "NodePort Exposed"}

    def test_disable_everything_then_enable_one_tag(self, engine: Engine) -> None:
        """Falco's idiom: `disable rule *` then `enable tag network` leaves only the network rules on."""
        assert enabled_after(engine, "rules[].disable.rule=*", "rules[].enable.tag=network") == {"NodePort Exposed"}

    def test_name_globs_and_tag_globs(self, engine: Engine) -> None:
        """A name glob and a tag glob each select every rule they match."""
        assert enabled_after(engine, "rules[].disable.rule=Secret *") == {"NodePort Exposed"}
        assert enabled_after(engine, "rules[].enable.tag=T1552*", "rules[].disable.tag=netw?rk") == {
            "Secret Read By Human", "Secret Listed"}

    def test_the_later_command_wins(self, engine: Engine) -> None:
        """Commands apply in order: an enable after a disable of the same rule leaves it on, and the reverse off."""
        assert "NodePort Exposed" in enabled_after(
            engine, "rules[].disable.rule=NodePort Exposed", "rules[].enable.tag=network")
        assert "NodePort Exposed" not in enabled_after(
            engine, "rules[].enable.tag=network", "rules[].disable.rule=NodePort Exposed")

    def test_rule_and_tag_in_one_command_both_apply(self, engine: Engine) -> None:
        """A command giving both `rule` and `tag` selects the rules either one matches, as Falco does."""
        commands = load_config(overrides=["rules=[{disable: {rule: 'Secret Listed', tag: network}}]"]).rules
        apply_rule_selection(engine, commands)
        assert {rule.name for rule in engine.rules if rule.enabled} == {"Secret Read By Human"}

    def test_enable_overrides_the_rules_file(self, engine: Engine) -> None:
        """A rule its file says `enabled: false` runs once a command enables it, and is evaluated then."""
        assert "Exec Audit Trail" in enabled_after(engine, "rules[].enable.tag=audit_trail")
        ruleset = engine.ruleset("k8s_audit")
        assert ruleset is not None and "Exec Audit Trail" in [r.name for r in ruleset.rules]
