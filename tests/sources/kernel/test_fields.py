"""Tests for sources/kernel/fields.py: the declared `syscall` field table against the reference."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.event import Event
from agent.fields import ArgKind, FieldFlag, FieldSpec, FieldType
from agent.generic_fields import generic_fields
from agent.source import SourceSpec
from sources.kernel.fields import (
    SYSCALL_EVENT_TYPES,
    load_event_types,
    load_syscall_field_specs,
    syscall_source,
)

REFERENCE = Path(__file__).resolve().parents[3].parent / "shared" / "reference"
SYSCALL_TSV = REFERENCE / "fields" / "syscall.tsv"
USAGE_JSON = REFERENCE / "fields" / "usage-by-upstream-rules.json"
FALCO_RULES = REFERENCE / "rules" / "falco_rules.yaml"

#: Fields whose argument kind was narrowed or loosened after reading libsinsp's parser, so the
#: plain EPF_* flag mapping does not predict them (reasons in sources/kernel/fields.py).
ARG_REFINEMENTS = {
    "evt.rawarg": ArgKind.KEY | ArgKind.REQUIRED,
    "evt.around": ArgKind.INDEX | ArgKind.REQUIRED,
    "evt.abspath": ArgKind.KEY,
    "thread.cgroup": ArgKind.KEY | ArgKind.REQUIRED,
    "fd.types": ArgKind.INDEX,
    "proc.aname": ArgKind.INDEX,
    "proc.apid": ArgKind.INDEX,
    "proc.aexe": ArgKind.INDEX,
    "proc.aexepath": ArgKind.INDEX,
    "proc.acmdline": ArgKind.INDEX,
    "proc.aargs": ArgKind.INDEX,
}

GENERIC_CLASS = "evt (generic, all sources)"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference data not found: {path}")
    return path


def _reference_rows() -> list[dict[str, str]]:
    with _need(SYSCALL_TSV).open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def _expected_arg(row: dict[str, str]) -> ArgKind:
    """The argument kind the reference flags imply, before any refinement."""
    flags = row["flags"]
    if row["provider"] != "libsinsp":
        words = flags.split("arg=", 1)[1].replace("DEPRECATED", "").split(",")
        kind = ArgKind.NONE
        for word in (w.strip() for w in words):
            kind |= {"None": ArgKind.NONE, "Index": ArgKind.INDEX, "Key": ArgKind.KEY,
                     "Required": ArgKind.REQUIRED}[word]
        return kind
    required = "EPF_ARG_REQUIRED" in flags
    if not required and "EPF_ARG_ALLOWED" not in flags:
        return ArgKind.NONE
    kind = ArgKind.REQUIRED if required else ArgKind.NONE
    if "EPF_ARG_INDEX" in flags:
        kind |= ArgKind.INDEX
    if "EPF_ARG_KEY" in flags:
        kind |= ArgKind.KEY
    if not kind.accepts_arg:
        kind |= ArgKind.INDEX | ArgKind.KEY
    return kind


def _expected_flags(row: dict[str, str]) -> FieldFlag:
    words = set(re.split(r"[|() ]+", row["flags"]))
    flags = FieldFlag.NONE
    for flag in FieldFlag:  # canonical members only: NONE is not iterated
        if f"EPF_{flag.name}" in words or flag.name in words:
            flags |= flag
    return flags


@pytest.fixture(scope="module")
def source() -> SourceSpec:
    return syscall_source()


@pytest.fixture(scope="module")
def falco_rules() -> list[dict[str, Any]]:
    with _need(FALCO_RULES).open(encoding="utf-8") as handle:
        rules: list[dict[str, Any]] = yaml.safe_load(handle)
    return rules


def _spec(source: SourceSpec, name: str) -> FieldSpec:
    spec = source.fields.get(name)
    assert spec is not None, f"{name} is not declared"
    return spec


def _event(**kwargs: Any) -> Event:
    return Event(source="syscall", ts_ns=1_700_000_000_123_456_789, payload=None, **kwargs)


class TestSourceSpec:
    def test_identity(self, source: SourceSpec) -> None:
        """The source is named syscall and buckets rules by evt.type."""
        assert source.name == "syscall"
        assert source.index_fields == ("evt.type",)

    def test_generic_fields_come_from_generic_fields(self, source: SourceSpec) -> None:
        """The 18 generic evt.* fields are the shared specs, not redeclared copies."""
        generic = generic_fields()
        assert len(generic) == 18
        for spec in generic:
            declared = _spec(source, spec.name)
            assert declared.is_implemented
            assert declared.type is spec.type
        own = {spec.name for spec in load_syscall_field_specs()}
        assert own.isdisjoint(spec.name for spec in generic)

    def test_plugins_satisfy_upstream_requirements(
        self, source: SourceSpec, falco_rules: list[dict[str, Any]]
    ) -> None:
        """Every plugin version falco_rules.yaml requires is met by the plugins this source stands in for."""
        provided = dict(source.plugins)
        required = [
            plugin for item in falco_rules if "required_plugin_versions" in item
            for plugin in item["required_plugin_versions"]
        ]
        assert required, "falco_rules.yaml lists no required plugin"
        for plugin in required:
            have = tuple(int(part) for part in provided[plugin["name"]].split("."))
            want = tuple(int(part) for part in str(plugin["version"]).split("."))
            assert have >= want, plugin

    def test_descriptions_are_one_line(self) -> None:
        """Each declared field has a non-empty single-line description."""
        for spec in load_syscall_field_specs():
            assert spec.description.strip(), spec.name
            assert "\n" not in spec.description, spec.name


class TestAgainstReference:
    def test_every_reference_name_is_declared(self, source: SourceSpec) -> None:
        """All 318 syscall field names of the reference table resolve in the source."""
        rows = _reference_rows()
        assert len(rows) == 318
        missing = [row["name"] for row in rows if source.fields.get(row["name"]) is None]
        assert missing == []
        assert len(source.fields) == len(rows)

    def test_types_lists_args_and_flags_match(self, source: SourceSpec) -> None:
        """Each field's type kind, list-ness, argument kind and flags follow the reference."""
        problems = []
        for row in _reference_rows():
            spec = _spec(source, row["name"])
            ref_type = FieldType.parse(row["type"].replace(" (list)", ""))
            is_list = "EPF_IS_LIST" in row["flags"] or row["type"].endswith("(list)")
            if spec.type.kind != ref_type.kind:
                problems.append(f"{spec.name}: type {spec.type} vs {ref_type}")
            if spec.is_list != is_list:
                problems.append(f"{spec.name}: list {spec.is_list}")
            if row["class"] == GENERIC_CLASS:
                continue
            if spec.type is not ref_type:
                problems.append(f"{spec.name}: exact type {spec.type} vs {ref_type}")
            arg = ARG_REFINEMENTS.get(spec.name, _expected_arg(row))
            if spec.arg != arg:
                problems.append(f"{spec.name}: arg {spec.arg.label} vs {arg.label}")
            # ANY_OF is ours: how libsinsp compares these fields, not one of its EPF_* flags. FORMAT_SUGGESTED is the
            # container plugin's addOutput, which the reference table does not carry (tests/agent/engine/
            # test_append_output.py checks which fields have it).
            if spec.flags & ~(FieldFlag.ANY_OF | FieldFlag.FORMAT_SUGGESTED) != _expected_flags(row):
                problems.append(f"{spec.name}: flags {spec.flags} vs {row['flags']}")
        assert problems == []

    def test_refinements_name_real_fields(self) -> None:
        """Every argument refinement the tests allow refers to a reference field that takes an argument."""
        by_name = {row["name"]: row for row in _reference_rows()}
        for name in ARG_REFINEMENTS:
            assert _expected_arg(by_name[name]).accepts_arg, name


class TestArguments:
    @pytest.mark.parametrize(
        ("written", "base", "arg"),
        [
            ("evt.arg.flags", "evt.arg", "flags"),
            ("evt.rawarg.fd", "evt.rawarg", "fd"),
            ("evt.type.is.open", "evt.type.is", "open"),
            ("evt.abspath.src", "evt.abspath", "src"),
            ("thread.cgroup.cpuacct", "thread.cgroup", "cpuacct"),
        ],
    )
    def test_dot_argument_resolves(self, source: SourceSpec, written: str, base: str, arg: str) -> None:
        """A dot-argument name resolves to its base field with the tail as the argument."""
        resolved = source.fields.resolve(written, None)
        assert resolved is not None
        spec, found = resolved
        assert (spec.name, found) == (base, arg)
        spec.bind(found)

    def test_exact_names_win_over_dot_arguments(self, source: SourceSpec) -> None:
        """Names that merely extend a dot-arg field (evt.args, thread.cgroups) stay their own fields."""
        for name in ("evt.args", "thread.cgroups", "evt.type.is"):
            resolved = source.fields.resolve(name, None)
            assert resolved is not None
            assert resolved == (_spec(source, name), None)

    def test_plugin_fields_take_no_dot_argument(self, source: SourceSpec) -> None:
        """Container and k8s labels must be written in brackets, as with the plugins."""
        assert source.fields.resolve("container.label.app", None) is None
        assert source.fields.resolve("k8s.pod.label.app", None) is None
        assert source.fields.resolve("container.label", "app") == (_spec(source, "container.label"), "app")

    def test_ancestor_index_binds(self, source: SourceSpec) -> None:
        """proc.aname[2] binds, and so does bare proc.aname, while a non-number is refused."""
        spec = _spec(source, "proc.aname")
        assert source.fields.resolve("proc.aname", "2") == (spec, "2")
        assert spec.bind("2")(_event()) is None
        spec.bind(None)
        with pytest.raises(ValueError, match="numeric index"):
            spec.bind("parent")

    def test_mount_pattern_binds(self, source: SourceSpec) -> None:
        """container.mount.dest takes a path pattern as its key, kept whole, as well as a position; an event
        outside any container gives no value for either form, each under its own use."""
        spec = _spec(source, "container.mount.dest")
        assert spec.is_implemented
        assert source.fields.resolve("container.mount.dest", "/proc*") == (spec, "/proc*")
        event = _event()
        assert spec.bind("/proc*")(event) is None
        assert spec.bind("0")(event) is None
        assert event.cache == {"container.mount.dest[/proc*]": None, "container.mount.dest[0]": None}

    @pytest.mark.parametrize("name", ["evt.arg", "evt.rawarg", "evt.type.is", "evt.around",
                                      "thread.cgroup", "container.label", "container.mount.dest"])
    def test_required_argument_is_enforced(self, source: SourceSpec, name: str) -> None:
        """A field that needs an argument refuses to bind without one."""
        with pytest.raises(ValueError, match="requires an argument"):
            _spec(source, name).bind(None)

    def test_argument_on_plain_field_is_refused(self, source: SourceSpec) -> None:
        """A field without arguments refuses one."""
        with pytest.raises(ValueError, match="does not take an argument"):
            _spec(source, "proc.name").bind("1")


class TestUpstreamRules:
    def test_used_fields_resolve(self, source: SourceSpec) -> None:
        """Every field falco_rules.yaml uses is declared."""
        with _need(USAGE_JSON).open(encoding="utf-8") as handle:
            used = json.load(handle)["falco_rules.yaml"]["distinct"]
        assert len(used) == 58
        assert [name for name in used if name not in source.fields] == []

    def test_used_argument_forms_bind(self, source: SourceSpec) -> None:
        """The argument forms in falco_rules.yaml (evt.arg.<name>, proc.a*[N]) resolve and bind."""
        text = _need(FALCO_RULES).read_text(encoding="utf-8")
        forms: set[tuple[str, str | None]] = set()
        forms.update((m.group(0), None) for m in re.finditer(r"\bevt\.arg\.[a-z_]+", text))
        forms.update((m.group(1), m.group(2)) for m in re.finditer(r"\b(proc\.a[a-z]+)\[(\d+)\]", text))
        forms.update((m.group(1), m.group(2)) for m in re.finditer(r"\b(fd\.types)\[(\d+)\]", text))
        assert ("evt.arg.flags", None) in forms and ("proc.aname", "2") in forms
        for name, arg in sorted(forms, key=str):
            resolved = source.fields.resolve(name, arg)
            assert resolved is not None, (name, arg)
            spec, bound_arg = resolved
            spec.bind(bound_arg)

    def test_used_event_types_are_known(self) -> None:
        """Every evt.type value compared in falco_rules.yaml is a known syscall event type."""
        text = _need(FALCO_RULES).read_text(encoding="utf-8")
        names = {m.group(1) for m in re.finditer(r"evt\.type\s*!?=\s*([a-z0-9_]+)", text)}
        for group in re.finditer(r"evt\.type\s+in\s*\(([^)]*)\)", text):
            names.update(item.strip() for item in group.group(1).split(","))
        assert {"execve", "openat2", "ptrace", "switch"} <= names
        assert sorted(names - SYSCALL_EVENT_TYPES) == []


class TestEventTypes:
    def test_common_and_special_names(self) -> None:
        """The known event types cover common syscalls and Falco's own event names."""
        expected = {"execve", "execveat", "open", "openat", "openat2", "connect", "accept",
                    "accept4", "clone3", "ptrace", "memfd_create", "procexit", "container",
                    "switch", "signaldeliver", "pluginevent", "asyncevent"}
        assert expected <= SYSCALL_EVENT_TYPES
        assert SYSCALL_EVENT_TYPES is load_event_types()
        assert len(SYSCALL_EVENT_TYPES) > 350

    def test_no_field_names_or_junk(self) -> None:
        """Event type names are lowercase identifiers."""
        assert all(re.fullmatch(r"[a-z_][a-z0-9_]*", name) for name in SYSCALL_EVENT_TYPES)
        assert "unknown" not in SYSCALL_EVENT_TYPES


class TestExtraction:
    def test_evt_type_extracts_event_type(self, source: SourceSpec) -> None:
        """evt.type yields the event's own type."""
        extract = _spec(source, "evt.type").bind(None)
        assert extract(_event(type="execve")) == "execve"

    def test_evt_type_empty_is_not_available(self, source: SourceSpec) -> None:
        """An event without a type has no evt.type value."""
        assert _spec(source, "evt.type").bind(None)(_event()) is None

    def test_generic_field_extracts(self, source: SourceSpec) -> None:
        """Generic fields such as evt.num and evt.source work on syscall events already."""
        event = _event(num=7)
        assert _spec(source, "evt.num").bind(None)(event) == 7
        assert _spec(source, "evt.source").bind(None)(event) == "syscall"

    @pytest.mark.parametrize("name", ["proc.name", "fd.name", "container.id", "evt.res", "user.uid"])
    def test_event_without_kernel_payload_is_not_available(self, source: SourceSpec, name: str) -> None:
        """A syscall field on an event that carries no kernel state yields None rather than failing."""
        spec = _spec(source, name)
        assert spec.is_implemented
        assert spec.bind(None)(_event(type="execve")) is None

    def test_every_field_the_upstream_rules_use_is_implemented(self, source: SourceSpec) -> None:
        """Each syscall field falco_rules.yaml uses extracts (fd.sip.name through sources/kernel/dns_names.py)."""
        usage = json.loads(_need(USAGE_JSON).read_text())["falco_rules.yaml"]["distinct"]
        missing = {name for name in usage if not _spec(source, name).is_implemented}
        assert missing == set()
