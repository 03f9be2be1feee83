"""Guards: a rule whose condition bounds a guard field is skipped for events whose value it cannot match, and the
alerts stay exactly those of an engine without guards."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.builtin_sources import builtin_source_specs, recorded_replayers
from agent.config import AgentConfig
from agent.engine.engine import Engine, RuleMatching, RulesText
from agent.engine.rule_guards import Guard
from agent.errors import DecodeError
from agent.event import Event
from agent.fields import FieldSpec, FieldTable, FieldType
from agent.plugins.registry import load_registry
from agent.recorded import recorded_events
from agent.source import PathParts, SourceSpec
from tests.agent.engine.conftest import SOURCE, TS_NS, rule, sample_fields
from tests.sources.kernel.test_upstream_rules import CASES, _stream
from tests.support.kernel_scenarios import stream_files

REPO = Path(__file__).resolve().parents[3]


def _directory(event: Event) -> Any:
    path = event.payload.get("path")
    if path is None:
        return None
    pos = path.rfind("/")
    return "/" if pos <= 0 else (path[:pos] if pos < len(path) - 1 else path)


def _filename(event: Event) -> Any:
    path = event.payload.get("path")
    if path is None:
        return None
    pos = path.rfind("/")
    return "/" if pos < 0 else (path[pos + 1:] if pos < len(path) - 1 else path)


#: The test source plus the parts of `t.path` as the kernel source defines fd.directory and fd.filename.
PATH_FIELDS = [
    FieldSpec("t.dir", FieldType.STRING, "directory of t.path", lambda _arg: _directory),
    FieldSpec("t.file", FieldType.STRING, "file name of t.path", lambda _arg: _filename),
]


def guarded_source(*, guards: bool = True) -> SourceSpec:
    return SourceSpec(SOURCE, FieldTable([*sample_fields(), *PATH_FIELDS]), index_fields=("t.type",),
                      guard_fields=("t.path", "t.name") if guards else (),
                      guard_paths=(PathParts("t.path", "t.dir", "t.file"),) if guards else ())


def loaded(text: str, *, guards: bool = True) -> Engine:
    engine = Engine(rule_matching=RuleMatching.ALL)
    engine.add_source(guarded_source(guards=guards))
    result = engine.load_rules([RulesText("rules.yaml", text)])
    assert result.successful, result.as_text()
    return engine


def event(**payload: Any) -> Event:
    return Event(source=SOURCE, ts_ns=TS_NS, payload=payload)


def fired(engine: Engine, **payload: Any) -> list[str]:
    return [alert.rule for alert in engine.process(event(**payload))]


def candidates(engine: Engine, **payload: Any) -> list[str]:
    ruleset = engine.ruleset(SOURCE)
    assert ruleset is not None
    return [r.name for r in ruleset.candidates(event(**payload))]


SHADOW = rule("t.type = open and t.path in (/etc/shadow, /etc/gshadow)", name="shadow")


class TestSkipped:
    def test_a_rule_bounded_on_the_path_meets_only_its_paths(self) -> None:
        """The rule is not even a candidate for another path, and still fires for its own."""
        engine = loaded(SHADOW)
        assert engine.ruleset(SOURCE).guarded_by["shadow"] == ("t.path",)  # type: ignore[union-attr]
        assert candidates(engine, type="open", path="/etc/hostname") == []
        assert fired(engine, type="open", path="/etc/hostname") == []
        assert fired(engine, type="open", path="/etc/shadow") == ["shadow"]

    def test_a_missing_value_skips_a_rule_that_needs_one(self) -> None:
        engine = loaded(SHADOW)
        assert candidates(engine, type="open") == []

    @pytest.mark.parametrize(("condition", "path", "fires"), [
        ("t.dir in (/etc/pam.d)", "/etc/pam.d/login", True),
        ("t.dir in (/etc/pam.d)", "/etc/pam.dx/login", False),
        ("t.dir in (/etc/pam.d/)", "/etc/pam.d/", True),  # a path ending with a slash is its own directory
        ("t.dir startswith /var/log", "/var/log/app/x.log", True),
        ("t.file in (syslog)", "/var/log/syslog", True),
        ("t.file in (syslog)", "/var/log/syslog2", False),
        ("t.file endswith .log", "/srv/app.log", True),
        ("t.path endswith release_agent", "/sys/fs/cgroup/release_agent", True),
        ("t.path contains ../", "../../etc/passwd", True),
        ("t.path contains ../", "/etc/passwd", False),
    ])
    def test_parts_of_the_path_bound_it(self, condition: str, path: str, fires: bool) -> None:
        """A check on the path's directory or file name guards the rule on the path itself."""
        engine = loaded(rule(condition, name="part"))
        assert engine.ruleset(SOURCE).guarded_by["part"] == ("t.path",)  # type: ignore[union-attr]
        assert fired(engine, path=path) == (["part"] if fires else [])
        assert ("part" in candidates(engine, path=path)) is fires

    def test_one_guard_field_refusing_is_enough(self) -> None:
        engine = loaded(rule("t.path startswith /etc and t.name in (cat, less)", name="both"))
        assert engine.ruleset(SOURCE).guarded_by["both"] == ("t.path", "t.name")  # type: ignore[union-attr]
        assert candidates(engine, path="/etc/shadow", name="vi") == []
        assert candidates(engine, path="/tmp/x", name="cat") == []
        assert fired(engine, path="/etc/shadow", name="cat") == ["both"]


    def test_an_excepted_value_skips_the_rule_before_its_condition(self) -> None:
        """`not t.name in (...)`, as exceptions and trusted-program lists spell it, refuses those names: the rule is
        no candidate for them, and still one for other names and for events without a name."""
        engine = loaded(rule("t.path startswith /etc and not t.name in (rkhunter, aide)", name="read")
                        + rule("t.path startswith /etc and t.name != vi", name="edit"))
        assert candidates(engine, path="/etc/shadow", name="rkhunter") == ["edit"]
        assert candidates(engine, path="/etc/shadow", name="vi") == ["read"]
        assert fired(engine, path="/etc/shadow", name="cat") == ["read", "edit"]
        assert fired(engine, path="/etc/shadow") == ["read"]

    @pytest.mark.parametrize(("condition", "name", "refused"), [
        ("not (t.name = cat or t.path = /x)", "cat", True),
        ("not (t.name = cat and t.path = /x)", "cat", False),  # false only when the path is /x too
        ("not t.name = cat or t.path = /x", "cat", False),
        ("not (not t.name in (cat))", "vi", False),  # a double negation bounds, it refuses nothing exact
    ])
    def test_what_a_negation_decides(self, condition: str, name: str, refused: bool) -> None:
        engine = loaded(rule(condition, name="r"))
        assert ("r" not in candidates(engine, path="/y", name=name)) is refused


class TestStillCorrect:
    @pytest.mark.parametrize(("condition", "payload"), [
        ("not t.path startswith /etc", {"path": "/tmp/x"}),
        ("t.path != /etc/shadow", {"path": "/tmp/x"}),
        ("not t.path in (/etc/shadow)", {}),
        ("t.path = /etc/shadow or t.name = x", {"path": "/tmp/y", "name": "x"}),
        ("t.path pmatch (/etc/)", {"path": "/etc"}),  # components, not a text prefix
        ("t.path glob '/etc/*'", {"path": "/etc/x/y"}),
        ("tolower(t.path) = /etc/shadow", {"path": "/ETC/SHADOW"}),
        ("t.path = val(t.other)", {"path": "/a", "other": "/a"}),
    ])
    def test_what_a_guard_cannot_describe_is_left_to_the_condition(self, condition: str,
                                                                   payload: dict[str, Any]) -> None:
        engine = loaded(rule(condition, name="r"))
        assert fired(engine, **payload) == ["r"]

    def test_exceptions_and_macros(self) -> None:
        text = ("- macro: sensitive\n  condition: t.path in (/etc/shadow) or t.dir = /etc/sudoers.d\n"
                + rule("t.type = open and sensitive", name="read", extra=(
                    "  exceptions:\n    - name: known\n      fields: [t.name]\n      values: [[rkhunter]]\n")))
        engine = loaded(text)
        assert engine.ruleset(SOURCE).guarded_by["read"] == ("t.path", "t.name")  # type: ignore[union-attr]
        assert candidates(engine, type="open", path="/etc/shadow", name="rkhunter") == []
        assert fired(engine, type="open", path="/etc/shadow", name="cat") == ["read"]
        assert fired(engine, type="open", path="/etc/sudoers.d/x", name="cat") == ["read"]
        assert fired(engine, type="open", path="/etc/shadow", name="rkhunter") == []
        assert candidates(engine, type="open", path="/etc/hostname", name="cat") == []

    def test_a_correlation_step_is_guarded_like_a_rule(self) -> None:
        text = ("- correlation: Burst\n  desc: d\n  priority: WARNING\n  output: burst by %t.name\n"
                "  threshold:\n    source: test\n    condition: t.type = open and t.path startswith /etc/ssh/\n"
                "    key: t.name\n    count: 2\n    window: 1m\n")
        engine = loaded(text)
        for path in ("/etc/hostname", "/etc/sshd", "/etc/ssh/sshd_config"):
            assert fired(engine, type="open", path=path, name="cat") == []
        assert fired(engine, type="open", path="/etc/ssh/ssh_host_rsa_key", name="cat") == ["Burst"]

    def test_a_guard_admits_values_that_are_not_text(self) -> None:
        """Only text is judged: a number or a list value reaches the condition, which decides."""
        guard = Guard(0, True, frozenset({"a"}), ("/etc",), (), ())
        assert guard.admits(5) and guard.admits(("x",)) and not guard.admits(None) and not guard.admits("b")

    def test_a_guard_field_must_be_scalar_text(self) -> None:
        with pytest.raises(ValueError, match=r"guard field 't\.num'"):
            Engine().add_source(replace(guarded_source(), guard_fields=("t.num",)))


#: Conditions over the path and its parts, negated, combined and excepted, for the property below.
CONDITIONS = [
    "t.path in (/etc/shadow, /etc, /etc/)", "t.path startswith /etc/", "t.dir = /etc", "t.dir = /etc/",
    "t.dir in (/, /etc/pam.d)",
    "t.dir startswith /et", "t.file in (shadow, x/, /)", "t.file endswith adow", "t.path endswith /",
    "t.path contains ../", "t.path glob '/e*/s?adow'", "t.path pmatch (/etc)", "not t.path startswith /etc",
    "t.path = /etc/shadow or t.name = cat", "(t.dir = /etc or t.file = x) and not t.name = cat",
    "t.path startswith /etc and t.path endswith w", "t.path contains /. and (t.dir = /etc or t.path = ../x)",
    "t.name in (cat, vi) and t.path exists", "t.path = ''", "t.path != /etc/shadow",
    "t.path startswith /etc and not t.name in (cat)", "t.name != vi", "not (t.name = cat or t.path = /etc/shadow)",
    "not (t.name = cat and t.path = /etc/shadow)", "not t.name = cat or t.path startswith /etc",
    "not (not t.name in (cat, vi) or t.path = /etc)",
]
_PARTS = st.sampled_from(["", "/", "etc", "shadow", "pam.d", "x", "..", ".", "adow", "e"])


@settings(max_examples=300, deadline=None)
@given(paths=st.lists(st.one_of(st.none(), st.lists(_PARTS, max_size=5).map("".join)), min_size=1, max_size=8),
       names=st.sampled_from([None, "cat", "vi"]))
def test_guards_never_change_the_alerts(paths: list[str | None], names: str | None) -> None:
    """For any path, the rules that fire with guards are those that fire without."""
    text = "".join(rule(condition, name=f"r{index}") for index, condition in enumerate(CONDITIONS))
    guarded, plain = _pair(text)
    for path in paths:
        payload = {k: v for k, v in (("path", path), ("name", names)) if v is not None}
        assert fired(guarded, **payload) == fired(plain, **payload), payload


_ENGINES: dict[str, tuple[Engine, Engine]] = {}


def _pair(text: str) -> tuple[Engine, Engine]:
    if text not in _ENGINES:
        _ENGINES[text] = (loaded(text), loaded(text, guards=False))
    return _ENGINES[text]


# ----- the upstream rules over the shared samples ----------------------------------------------------------------
def _engines(*files: Path) -> tuple[Engine, Engine]:
    """Two engines of every built-in source with `files` loaded, reporting every match: with and without guards."""
    pair = []
    for guards in (True, False):
        engine = Engine(rule_matching=RuleMatching.ALL, hostname="node-1")
        for spec in builtin_source_specs():
            engine.add_source(spec if guards else replace(spec, guard_fields=(), guard_paths=()))
        result = engine.load_rules([RulesText(str(f), f.read_text()) for f in files])
        assert result.successful, result.as_text()
        pair.append(engine)
    return pair[0], pair[1]


def _guarded_rules(engine: Engine, source: str) -> list[str]:
    ruleset = engine.ruleset(source)
    return [name for name, fields in (ruleset.guarded_by.items() if ruleset is not None else ()) if fields]


def _same_alerts(guarded: Engine, plain: Engine, events: Iterable[tuple[Event, Event]]) -> int:
    """Feeds each pair of equal events to both engines; returns how many alerts they raised (the same)."""
    count = 0
    for first, second in events:
        with_guards = [(a.rule, a.output) for a in guarded.process(first)]
        assert with_guards == [(a.rule, a.output) for a in plain.process(second)]
        count += len(with_guards)
    return count


def _decoded(documents: list[Any], source: str) -> Iterator[tuple[Event, Event]]:
    decoder = next(d for d in load_registry(AgentConfig()).decoders(hostname="node-1") if d.source == source)
    for document in documents:
        twins = zip(decoder.events(document, origin="sample"), decoder.events(document, origin="sample"),
                    strict=True)
        yield from ((a, b) for a, b in twins if isinstance(a, Event) and isinstance(b, Event))


def test_k8s_audit_samples_raise_the_same_alerts(reference: Path) -> None:
    folder = reference / "samples" / "k8s_audit" / "falco-regression"
    documents = [orjson.loads(line) for path in sorted(folder.glob("*.json")) if not path.name.startswith("expected")
                 for line in path.read_bytes().splitlines() if line.strip()]
    guarded, plain = _engines(reference / "rules" / "k8s_audit_rules.yaml")
    assert _guarded_rules(guarded, "k8s_audit")
    assert _same_alerts(guarded, plain, _decoded(documents, "k8s_audit")) > 0


def test_cloudtrail_samples_raise_the_same_alerts(reference: Path) -> None:
    documents = [orjson.loads(path.read_bytes()) for path in sorted((reference / "samples" / "cloudtrail").rglob(
        "*.json")) if path.name != "expected.json"]
    guarded, plain = _engines(reference / "rules" / "aws_cloudtrail_rules.yaml")
    assert _guarded_rules(guarded, "aws_cloudtrail")
    assert _same_alerts(guarded, plain, _decoded(documents, "aws_cloudtrail")) > 0


def test_stable_syscall_rules_raise_the_same_alerts(reference: Path) -> None:
    """Every attack and benign stream of the upstream rule tests (tests/sources/kernel/test_upstream_rules.py)."""
    guarded, plain = _engines(reference / "rules" / "falco_rules.yaml")
    assert _guarded_rules(guarded, "syscall")
    scenarios = [scenario for case in CASES for scenario in (case[1], case[2])]
    pairs = [pair for scenario in scenarios for pair in zip(scenario(_stream()), scenario(_stream()), strict=True)]
    assert _same_alerts(guarded, plain, pairs) >= len(CASES)


def test_shipped_correlations_raise_the_same_alerts(reference: Path) -> None:
    """rules/correlation.yaml over its recorded streams (kernel, audit and CloudTrail) with and without guards."""
    guarded, plain = _engines(REPO / "rules" / "correlation.yaml")
    streams = sorted((REPO / "rules" / "tests" / "correlation").glob("*.jsonl"))
    with tempfile.TemporaryDirectory(prefix="guards-") as tmp:
        files = [file for stream in streams for file in stream_files(stream, Path(tmp) / stream.name)]
        runs = []
        for _ in range(2):
            items = recorded_events(files, load_registry(AgentConfig()).decoders(hostname="node-1"),
                                    replayers=recorded_replayers(hostname="node-1"))
            runs.append([item for item in items if not isinstance(item, DecodeError)])
    assert _same_alerts(guarded, plain, zip(*runs, strict=True)) > 0
