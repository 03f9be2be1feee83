"""`append_output`: extra text, extra JSON fields and suggested fields added to the outputs of the rules an entry
matches, compiled when the rules load."""

from __future__ import annotations

from typing import Any

import pytest

from agent.engine.append_output import AppendMatch, AppendOutput, ExtraField
from agent.engine.engine import Engine, RulesText
from agent.fields import FieldFlag, FieldSpec, FieldTable, FieldType
from agent.source import SourceSpec
from sources.kernel.fields import syscall_source
from sources.kernel.state import KernelState
from tests.agent.engine.conftest import SOURCE, Lab, sample_fields, sample_source
from tests.sources.kernel.state_fixtures import Stream, default_host

RULES = (
    "- rule: Shell\n  desc: d\n  condition: t.type = exec\n  output: shell %t.name\n  priority: WARNING\n"
    "  tags: [process, mitre_execution]\n  source: test\n"
    "- rule: Read\n  desc: d\n  condition: t.type = open\n  output: read %t.path\n  priority: NOTICE\n"
    "  tags: [filesystem]\n  source: test\n"
)


def _engine(*entries: AppendOutput, rules: str = RULES, sources: tuple[SourceSpec, ...] = ()) -> Engine:
    engine = Engine(append_output=entries)
    for spec in sources or (sample_source(),):
        engine.add_source(spec)
    result = engine.load_rules([RulesText("rules.yaml", rules)])
    assert result.successful, result.as_text()
    return engine


def _alert(engine: Engine, lab: Lab, **payload: Any) -> tuple[str, dict[str, Any]]:
    [alert] = engine.process(lab.event(**payload))
    return alert.output, alert.falco_json()["output_fields"]


def test_extra_output_follows_the_rule_text_and_its_fields_join_output_fields(lab: Lab) -> None:
    engine = _engine(AppendOutput(extra_output="num=%t.num flag=%t.flag"))
    output, fields = _alert(engine, lab, type="exec", name="bash", num=7, flag=True)
    assert output == "shell bash num=7 flag=true"
    assert fields["t.num"] == 7 and fields["t.flag"] is True and fields["t.name"] == "bash"


def test_extra_fields_reach_json_only_a_field_typed_and_a_format_as_text(lab: Lab) -> None:
    engine = _engine(AppendOutput(extra_fields=(ExtraField("t.num"), ExtraField("where", "at %t.path (%t.num)"))))
    output, fields = _alert(engine, lab, type="exec", name="bash", num=7, path="/bin/x")
    assert output == "shell bash"
    assert fields["t.num"] == 7
    assert fields["where"] == "at /bin/x (7)"
    assert "t.path" not in fields  # a format's own fields stay out: only its text is the value


def test_a_missing_value_in_an_extra_field_is_null_or_na(lab: Lab) -> None:
    engine = _engine(AppendOutput(extra_fields=(ExtraField("t.num"), ExtraField("p", "%t.path"))))
    _output, fields = _alert(engine, lab, type="exec", name="bash")
    assert fields["t.num"] is None and fields["p"] == "<NA>"


def test_a_later_entry_replaces_an_extra_field_of_the_same_name(lab: Lab) -> None:
    engine = _engine(AppendOutput(extra_fields=(ExtraField("who", "first %t.name"),)),
                     AppendOutput(extra_fields=(ExtraField("who", "second %t.name"),)))
    assert _alert(engine, lab, type="exec", name="sh")[1]["who"] == "second sh"


@pytest.mark.parametrize(("match", "shell", "read"), [
    (AppendMatch(), True, True),
    (AppendMatch(source=SOURCE), True, True),
    (AppendMatch(source="other"), False, False),
    (AppendMatch(rule="Read"), False, True),
    (AppendMatch(tags=frozenset({"process"})), True, False),
    (AppendMatch(tags=frozenset({"process", "filesystem"})), False, False),  # every tag must be on the rule
    (AppendMatch(source=SOURCE, tags=frozenset({"filesystem"}), rule="Shell"), False, False),
    (AppendMatch(source=SOURCE, tags=frozenset({"filesystem"}), rule="Read"), False, True),
])
def test_match_by_source_tags_and_rule_all_must_hold(lab: Lab, match: AppendMatch, shell: bool, read: bool) -> None:
    engine = _engine(AppendOutput(match=match, extra_output="[x]", extra_fields=(ExtraField("mark", "yes"),)))
    shell_output, shell_fields = _alert(engine, lab, type="exec", name="sh")
    read_output, read_fields = _alert(engine, lab, type="open", path="/etc/passwd")
    assert (shell_output.endswith(" [x]"), "mark" in shell_fields) == (shell, shell)
    assert (read_output.endswith(" [x]"), "mark" in read_fields) == (read, read)


def test_entries_apply_in_order(lab: Lab) -> None:
    engine = _engine(AppendOutput(extra_output="one"),
                     AppendOutput(match=AppendMatch(rule="Shell"), extra_output="two"))
    assert _alert(engine, lab, type="exec", name="sh")[0] == "shell sh one two"
    assert _alert(engine, lab, type="open", path="/p")[0] == "read /p one"


def _suggesting_source() -> SourceSpec:
    """The test source with two fields marked for suggested_output, the second one with a dotted name."""
    marked = [FieldSpec("t.kind", FieldType.STRING, "k", lambda _a: lambda ev: ev.payload.get("kind"),
                        flags=FieldFlag.FORMAT_SUGGESTED),
              FieldSpec("t.owner.name", FieldType.STRING, "o", lambda _a: lambda ev: ev.payload.get("owner"),
                        flags=FieldFlag.FORMAT_SUGGESTED)]
    return SourceSpec(SOURCE, FieldTable([*sample_fields(), *marked]), index_fields=("t.type",))


def test_suggested_output_appends_the_marked_fields_as_key_equals_value(lab: Lab) -> None:
    engine = _engine(AppendOutput(suggested_output=True), sources=(_suggesting_source(),))
    output, fields = _alert(engine, lab, type="exec", name="sh", kind="job", owner="ops")
    assert output == "shell sh t_kind=job t_owner_name=ops"
    assert fields["t.kind"] == "job" and fields["t.owner.name"] == "ops"


def test_a_suggested_field_the_output_names_already_is_not_repeated(lab: Lab) -> None:
    rules = RULES.replace("output: shell %t.name", "output: shell %t.name of %t.owner.name")
    engine = _engine(AppendOutput(suggested_output=True), AppendOutput(suggested_output=True), rules=rules,
                     sources=(_suggesting_source(),))
    assert _alert(engine, lab, type="exec", name="sh", kind="job", owner="ops")[0] == "shell sh of ops t_kind=job"


def test_suggested_output_honours_the_match(lab: Lab) -> None:
    engine = _engine(AppendOutput(match=AppendMatch(tags=frozenset({"filesystem"})), suggested_output=True),
                     sources=(_suggesting_source(),))
    assert _alert(engine, lab, type="exec", name="sh", kind="job")[0] == "shell sh"
    assert _alert(engine, lab, type="open", path="/p", kind="job")[0] == "read /p t_kind=job t_owner_name=<NA>"


def test_a_source_without_suggested_fields_gets_nothing(lab: Lab) -> None:
    engine = _engine(AppendOutput(suggested_output=True))
    assert _alert(engine, lab, type="exec", name="sh")[0] == "shell sh"


@pytest.mark.parametrize(("entry", "named"), [
    (AppendOutput(extra_output="cpu %evt.cpux"), "append_output[1].extra_output, for source test"),
    (AppendOutput(extra_fields=(ExtraField("t.nope"),)), "append_output[1].extra_fields[0] (t.nope), for source test"),
    (AppendOutput(extra_fields=(ExtraField("x", "%t.nope"),)), "append_output[1].extra_fields[0] (x), for source test"),
])
def test_a_field_the_source_cannot_extract_fails_the_load_naming_the_entry(entry: AppendOutput, named: str) -> None:
    engine = Engine(append_output=(AppendOutput(extra_output="fine %t.name"), entry))
    engine.add_source(sample_source())
    result = engine.load_rules([RulesText("rules.yaml", RULES)])
    assert not result.successful
    [error] = result.errors
    assert error.code.value == "LOAD_ERR_COMPILE_OUTPUT"
    assert named in error.message, error.message
    assert error.location.item_name == "Shell"  # the first rule the entry applies to
    assert engine.rules == []  # nothing of a failed load is kept


def test_an_entry_for_another_source_is_not_compiled_against_this_one() -> None:
    engine = _engine(AppendOutput(match=AppendMatch(source="elsewhere"), extra_output="%t.nope"))
    assert len(engine.rules) == 2


def test_skip_if_unknown_filter_skips_the_rule_as_for_its_own_output() -> None:
    rules = RULES.replace("  tags: [process, mitre_execution]\n", "  tags: [process]\n  skip-if-unknown-filter: true\n")
    engine = Engine(append_output=(AppendOutput(extra_output="%t.nope"),))
    engine.add_source(sample_source())
    result = engine.load_rules([RulesText("rules.yaml", rules)])
    assert not result.successful  # Read has no skip: it fails the load
    assert [e.location.item_name for e in result.errors] == ["Read"]
    assert any(w.code.value == "LOAD_UNKNOWN_FILTER" and w.location.item_name == "Shell" for w in result.warnings)


def test_correlations_keep_their_output() -> None:
    rules = RULES + (
        "- correlation: Burst\n  desc: d\n  priority: WARNING\n  output: burst by %t.name\n  tags: [process]\n"
        "  threshold:\n    source: test\n    condition: t.type = exec\n    key: t.name\n    count: 2\n"
        "    window: 1m\n")
    engine = _engine(AppendOutput(extra_output="extra %t.num"), rules=rules)
    lab = Lab()
    alerts = [a for n in range(2) for a in engine.process(lab.event(type="exec", name="sh", num=n))]
    burst = [a for a in alerts if a.rule == "Burst"]
    assert burst and burst[0].output == "burst by sh"
    assert [a.output for a in alerts if a.rule == "Shell"] == ["shell sh extra 0", "shell sh extra 1"]


def test_syscall_alerts_get_the_container_and_pod_fields() -> None:
    rules = ("- rule: Open in container\n  desc: d\n  condition: evt.type = openat and container.id != host\n"
             "  output: open %fd.name by %proc.name\n  priority: WARNING\n")
    engine = _engine(AppendOutput(suggested_output=True), rules=rules, sources=(syscall_source(),))
    host = default_host()
    stream = Stream(host, seed=False)
    stream.state = KernelState(host, fetch_containers=True)
    try:
        stream.state.seed()
        stream.state.settle_containers(timeout_s=5)
        [alert] = engine.process(stream.open(300, "/etc/shadow"))
    finally:
        stream.state.close()
    assert alert.output == ("open /etc/shadow by sh container_id=aaaaaaaaaaaa container_name=web "
                            "container_image_repository=docker.io/library/nginx container_image_tag=1.25 "
                            "k8s_pod_name=web-0 k8s_ns_name=prod")
    fields = alert.falco_json()["output_fields"]
    expected = {"container.id": "aaaaaaaaaaaa", "container.name": "web",
                "container.image.repository": "docker.io/library/nginx", "container.image.tag": "1.25",
                "k8s.pod.name": "web-0", "k8s.ns.name": "prod"}
    assert {key: fields[key] for key in expected} == expected
    assert "container_id=aaaaaaaaaaaa" in alert.text_line()


def test_the_syscall_source_suggests_the_fields_falcos_container_plugin_does() -> None:
    marked = [spec.name for spec in syscall_source().fields if FieldFlag.FORMAT_SUGGESTED in spec.flags]
    assert marked == ["container.id", "container.name", "container.image.repository", "container.image.tag",
                      "k8s.pod.name", "k8s.ns.name"]


def test_without_entries_outputs_are_as_written(lab: Lab) -> None:
    engine = _engine(rules=RULES, sources=(_suggesting_source(),))
    assert _alert(engine, lab, type="exec", name="sh", kind="job")[0] == "shell sh"
