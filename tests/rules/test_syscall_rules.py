"""The shipped `rules/syscall.yaml`: it loads cleanly, is indexed, tagged and tunable. Its cases (kernel scenario lines
in rules/tests/syscall.tests.yaml) run through `falco-agent rules test` in `make test`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.alert import Alert
from agent.engine.engine import Engine
from agent.event import Event
from tests.sources.kernel.state_fixtures import CONTAINER_ID, Stream, snapshot
from tests.support.rules_harness import loaded_engine, rule_names, shipped_cases

ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = ROOT / "rules" / "syscall.yaml"
SOURCE = "syscall"
PREFIX = "sys_"

HOST_SHELL = 200                        # alice's bash on the host (tty)
CONTAINER_EXEC = 320                    # a runc exec of the container with a terminal (see _stream)
PRIORITIES = {"CRITICAL", "ERROR", "WARNING", "NOTICE"}

Scenario = Callable[[Stream], None]


@pytest.fixture(scope="module")
def engine() -> Engine:
    return loaded_engine(RULES_FILE, clean=True)


def _stream() -> Stream:
    """The fake host of the kernel state tests, plus a `runc` exec process with a terminal in its container."""
    s = Stream(seed=False)
    s.host.snapshots.append(snapshot(CONTAINER_EXEC, 1, "runc", exepath="/usr/bin/runc", container_id=CONTAINER_ID,
                                     tty=34817, vpid=12))
    s.state.seed()
    s.state.learn_container(s.host.containers[CONTAINER_ID])
    return s


def _alerts(engine: Engine, events: list[Event], rule: str) -> list[tuple[Event, Alert]]:
    return [(event, alert) for event in events for alert in engine.process(event) if alert.rule == rule]


# Scenario builders for the tuning tests: each runs a record sequence on a stream.
def open_file(parent: int, exe: str, path: str, *, flags: int = 0, res: int = 3) -> Scenario:
    def scenario(s: Stream) -> None:
        s.spawn(parent, 410, exe)
        s.open(410, path, flags=flags, res=res)

    return scenario


def server_spawns(server: str, child: str, *argv: str, via: str = "") -> Scenario:
    def scenario(s: Stream) -> None:
        s.spawn(1, 400, f"/usr/sbin/{server}")
        parent = 400
        if via:
            s.spawn(400, 401, f"/usr/sbin/{via}")
            parent = 401
        s.spawn(parent, 410, child, *argv)

    return scenario


class TestRulesFile:
    @staticmethod
    def items() -> list[dict[str, Any]]:
        return [item for item in yaml.safe_load(RULES_FILE.read_text()) if isinstance(item, dict)]

    def test_every_rule_is_of_the_source(self, engine: Engine) -> None:
        """Every loaded rule belongs to the syscall source, so none is silently skipped."""
        assert {rule.source for rule in engine.rules} == {SOURCE}
        assert len(engine.rules) == len(rule_names(RULES_FILE))

    def test_every_rule_has_cases_of_both_kinds(self) -> None:
        """Adding a rule without a case expecting a match and one expecting none (or keeping cases of a removed
        rule) fails."""
        cases = shipped_cases(RULES_FILE)
        for expect in (True, False):
            assert {case.rule for case in cases if case.expect.matches is expect} == set(rule_names(RULES_FILE))

    def test_every_rule_names_its_event_types(self, engine: Engine) -> None:
        """Every rule is indexed by event type, so the kernel source only captures what the rules need."""
        ruleset = engine.ruleset(SOURCE)
        assert ruleset is not None
        indexed = ruleset.index_values("evt.type")
        assert indexed is not None and indexed

    def test_every_rule_has_mitre_tags_and_a_known_priority(self, engine: Engine) -> None:
        """Every rule has a MITRE technique id, a mitre_<tactic> tag and one of the priorities the README lists."""
        for rule in engine.rules:
            assert any(tag.startswith("T1") for tag in rule.tags), rule.name
            assert any(tag.startswith("mitre_") for tag in rule.tags), rule.name
        for item in self.items():
            if "rule" in item:
                assert item["priority"] in PRIORITIES, item["rule"]

    def test_every_rule_has_empty_exceptions(self) -> None:
        """Every rule ships structured exceptions without values, for users to append to."""
        for item in self.items():
            if "rule" in item:
                assert item.get("exceptions"), item["rule"]
                assert all("values" not in exc and exc["fields"] for exc in item["exceptions"]), item["rule"]

    def test_macros_and_lists_carry_the_file_prefix(self) -> None:
        """Macros and lists start with sys_, so they never collide with upstream or local names."""
        for item in self.items():
            name = item.get("macro") or item.get("list")
            if name is not None:
                assert name.startswith(PREFIX), name


class TestSideBySide:
    def test_loads_with_the_other_shipped_files_and_upstream_rules(self, reference: Path) -> None:
        """The whole rules/ folder plus the upstream falco_rules.yaml loads without an error."""
        files = sorted((ROOT / "rules").glob("*.yaml"))
        loaded_engine(*files, reference / "rules" / "falco_rules.yaml")


class TestTuning:
    def test_appended_exception_values_silence_only_their_tuple(self, tmp_path: Path) -> None:
        """A (program, file) pair appended from a local file silences exactly that pair."""
        local = tmp_path / "local.yaml"
        local.write_text(
            "- rule: Sensitive File Read By Unexpected Program\n"
            "  exceptions:\n"
            "    - name: program_and_file\n"
            "      values:\n"
            "        - [cat, /etc/sudoers]\n"
            "  override:\n"
            "    exceptions: append\n"
            "- list: sys_shell_binaries\n"
            "  items: [python3]\n"
            "  override:\n"
            "    items: append\n")
        tuned = loaded_engine(RULES_FILE, local, clean=True)
        rule = "Sensitive File Read By Unexpected Program"
        for path, expected in (("/etc/sudoers", 0), ("/etc/shadow", 1)):
            s = _stream()
            open_file(HOST_SHELL, "/usr/bin/cat", path)(s)
            assert len(_alerts(tuned, s.events, rule)) == expected, path
        s = _stream()
        server_spawns("nginx", "/usr/bin/python3", "-c", "x")(s)
        assert len(_alerts(tuned, s.events, "Shell Spawned By Server Process")) == 1
