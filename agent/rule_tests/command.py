"""`falco-agent rules test [-r RULES]... [CASES]...`: run labelled cases, one line per case, a readable diff on a
mismatch, coverage at the end, exit 1 on any failure.

Which rules run which cases: with `-r`, every case runs against all the `-r` files loaded in order (a base file and
the local overrides layered on it); the cases are the CASES given, or else those kept with the `-r` files. Without
`-r`, each cases file runs against the rules file it belongs to (`tests/x.tests.yaml` → `x.yaml`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.builtin_sources import recorded_replayers
from agent.cli_falco import write_json
from agent.config import AgentConfig
from agent.errors import RulesError
from agent.plugins.registry import PluginRegistry
from agent.rule_tests.cases import CASES_SUFFIX, CaseError, RuleCase, find_cases_files, load_cases, rules_file_for
from agent.rule_tests.coverage import Coverage, measure
from agent.rule_tests.inputs import EventReader
from agent.rule_tests.junit import write_junit
from agent.rule_tests.runner import CaseResult, RulesUnderTest
from agent.startup_check import rules_files_in_use

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_test_parser(rules_sub: Any) -> None:
    test = rules_sub.add_parser("test", help="run the test cases kept with rules files; exit 1 on any failure")
    test.add_argument("-r", "--rules", action="append", default=[], dest="test_rules", metavar="RULES",
                      help="rules file or directory, loaded in order (default: each cases file's own rules file)")
    test.add_argument("--junit", metavar="FILE", type=Path, help="also write the results as JUnit XML")
    test.add_argument("--json", action="store_true", dest="as_json", help="results and coverage as one JSON document")
    test.add_argument("--quiet", action="store_true", help="print only failures, coverage and the summary")
    test.add_argument("--require-cases", action="store_true",
                      help="also fail when a rule or correlation lacks a case expecting a match or one expecting none")
    test.add_argument("cases", nargs="*", metavar="CASES",
                      help=f"cases files (*{CASES_SUFFIX}) or directories of them (default: those of the -r files)")


@dataclass(slots=True)
class _Run:
    rules: RulesUnderTest
    results: list[CaseResult]


def test_command(args: argparse.Namespace, config: AgentConfig, registry: PluginRegistry) -> int:
    if not args.test_rules and not args.cases:
        print("rules test: give rules files (-r) or cases files", file=sys.stderr)
        return EXIT_USAGE
    rules_entries = [Path(entry) for entry in args.test_rules]
    cases_files = _cases_files(args.cases) if args.cases else find_cases_files(rules_entries)
    if not cases_files:
        print(f"rules test: no cases file (*{CASES_SUFFIX}) found", file=sys.stderr)
        return EXIT_USAGE
    try:
        cases = {path: load_cases(path) for path in cases_files}
    except CaseError as exc:
        print(f"rules test: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if rules_entries:
        groups = {tuple(rules_files_in_use(config, args.test_rules)): [c for cs in cases.values() for c in cs]}
    else:
        unnamed = [str(path) for path in cases if not path.name.endswith(CASES_SUFFIX)]
        if unnamed:
            print(f"rules test: {', '.join(unnamed)}: without -r, a cases file is named NAME{CASES_SUFFIX} to say "
                  "its rules file is NAME.yaml", file=sys.stderr)
            return EXIT_USAGE
        groups = {}
        for path, file_cases in cases.items():
            groups.setdefault((rules_file_for(path),), []).extend(file_cases)
    hostname = config.hostname or "falco-agent-test"
    reader = EventReader(registry.decoders(hostname=hostname), recorded_replayers(hostname=hostname), hostname)
    runs = []
    for files, group in groups.items():
        run = _run(config, files, group, registry, reader)
        if run is None:
            return EXIT_FAILURE
        runs.append(run)
    results = [result for run in runs for result in run.results]
    coverages = [measure(run.results, run.rules.engine, run.rules.model, files=map(str, run.rules.files))
                 for run in runs if run.rules.model]
    if args.junit is not None:
        write_junit(args.junit, results)
    if args.as_json:
        write_json({"cases": [_result_json(r) for r in results], "coverage": [c.as_json() for c in coverages]})
    else:
        _print_text(results, coverages, quiet=args.quiet)
    uncovered = any(c.without_positive or c.without_negative for c in coverages)
    if args.require_cases and uncovered:
        print("rules test: --require-cases: some rules lack a positive or a negative case (see coverage)",
              file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK if all(r.passed for r in results) else EXIT_FAILURE


def _cases_files(entries: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for entry in map(Path, entries):
        out += sorted(entry.rglob(f"*{CASES_SUFFIX}")) if entry.is_dir() else [entry]
    return out


def _run(config: AgentConfig, files: Sequence[Path], cases: list[RuleCase], registry: PluginRegistry,
         reader: EventReader) -> _Run | None:
    try:
        rules = RulesUnderTest(config, files, sources=registry.specs(), reader=reader)
    except RulesError as exc:
        print(f"rules test: {exc}", file=sys.stderr)
        return None
    if not rules.load_result.successful:
        print(rules.load_result.as_text(), file=sys.stderr)
        print(f"rules test: {', '.join(map(str, files))}: the rules do not load", file=sys.stderr)
        return None
    return _Run(rules, rules.run(cases))


def _print_text(results: list[CaseResult], coverages: list[Coverage], *, quiet: bool) -> None:
    for result in results:
        if result.passed and quiet:
            continue
        status = "PASS" if result.passed else "FAIL"
        print(f"{status}  {result.case.label}  ({result.case.location.file}:{result.case.location.line})")
        for line in result.problems:
            print(f"      {line}")
    for coverage in coverages:
        print("\n".join(coverage.lines()))
    failed = sum(not r.passed for r in results)
    print(f"{len(results)} cases: {len(results) - failed} passed, {failed} failed")


def _result_json(result: CaseResult) -> dict[str, Any]:
    return {"rule": result.case.rule, "case": result.case.name, "file": result.case.location.file,
            "line": result.case.location.line, "passed": result.passed, "problems": result.problems,
            "alerts": result.alerts}
