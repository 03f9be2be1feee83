"""`falco-agent explain -r RULES [--rule NAME] INPUT...`: per event of the input, why each candidate rule (or the
one named) matched or not, each correlation's steps likewise, and at the end whether each correlation fired; as
text or one JSON document."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from agent.builtin_sources import recorded_replayers
from agent.cli_falco import write_json
from agent.config import AgentConfig
from agent.engine_setup import load_engine
from agent.errors import DecodeError, RulesError
from agent.explain.correlation import CorrelationExplainer, CorrelationOnEvent
from agent.explain.model import read_model
from agent.explain.render import correlation_lines, event_heading, rule_lines, verdict_lines
from agent.explain.verdict import Explainer, RuleExplanation
from agent.plugins.registry import PluginRegistry
from agent.rule_tests.inputs import EventReader
from agent.startup_check import rules_files_in_use

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXPAND_ALL = "all"


def add_explain_parser(sub: Any) -> None:
    explain = sub.add_parser("explain", help="show why rules match or not on recorded events, node by node")
    explain.add_argument("-r", "--rules", action="append", required=True, dest="explain_rules", metavar="RULES",
                         help="rules file or directory, once per file, loaded in order")
    explain.add_argument("--rule", dest="explain_rule", metavar="NAME",
                         help="explain this rule or correlation on every event (default: the rules and "
                              "correlation steps evaluated on each event)")
    explain.add_argument("--source", dest="explain_source", help="decode every JSON input as this source")
    explain.add_argument("--expand", action="append", default=[], metavar="MACRO",
                         help=f"show this macro's condition (repeat for several; '{EXPAND_ALL}' for every macro)")
    explain.add_argument("--json", action="store_true", dest="as_json", help="one JSON document with every tree")
    explain.add_argument("inputs", nargs="+", metavar="INPUT",
                         help=".json, .json.gz, JSON lines (kernel scenario lines too), a kernel capture, or a "
                              "directory")


def explain_command(args: argparse.Namespace, config: AgentConfig, registry: PluginRegistry) -> int:
    files = rules_files_in_use(config, args.explain_rules)
    engine, result = load_engine(config, files, sources=registry.specs(), hostname=config.hostname)
    if not result.successful:
        print(result.as_text(), file=sys.stderr)
        return EXIT_FAILURE
    try:
        explainer = Explainer(engine, read_model(files, known_sources=frozenset(engine.sources)))
    except RulesError as exc:
        print(f"explain: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    reader = EventReader(registry.decoders(hostname=engine.hostname), recorded_replayers(hostname=engine.hostname),
                         engine.hostname)
    forced = reader.decoder(args.explain_source)
    if args.explain_source and forced is None:
        print(f"explain: --source {args.explain_source}: no source of that name reads recorded JSON",
              file=sys.stderr)
        return EXIT_USAGE
    expand: bool | set[str] = EXPAND_ALL in args.expand or set(args.expand)
    correlations = _correlations_explainer(args.explain_rule, explainer, config, files, registry)
    names_rule = args.explain_rule is not None and correlations is None
    documents: list[dict[str, Any]] = []
    shown: set[str] = set()
    number = 0
    for item in reader.files([Path(p) for p in args.inputs], forced=forced):
        if isinstance(item, DecodeError):
            print(f"explain: record skipped: {item}", file=sys.stderr)
            continue
        number += 1
        names = [args.explain_rule] if names_rule else [] if args.explain_rule else explainer.candidates(item)
        explained = [explainer.explain(name, item) for name in names]
        passed_over = [] if args.explain_rule else explainer.passed_over(item)
        on_event = correlations.observe(item, every_step=args.explain_rule is not None) if correlations else []
        shown |= {c.correlation for c in on_event}
        if args.as_json:
            documents.append({"event": number, "source": item.source, "type": item.type, "ts_ns": item.ts_ns,
                              "rules": [e.as_json() for e in explained],
                              "passed_over": [e.as_json() for e in passed_over],
                              "correlations": [c.as_json() for c in on_event]})
        else:
            _print_event(number, item, explained + passed_over, on_event, expand=expand)
    verdicts = correlations.verdicts(only=None if args.explain_rule else shown) if correlations else []
    if args.as_json:
        write_json({"events": documents, "correlations": [v.as_json() for v in verdicts]})
    else:
        for verdict in verdicts:
            print("\n".join(verdict_lines(verdict)))
    return EXIT_OK


def _correlations_explainer(name: str | None, explainer: Explainer, config: AgentConfig, files: list[Path],
                            registry: PluginRegistry) -> CorrelationExplainer | None:
    """The correlations to explain: the one named, or every one when no rule is named (None when a rule is named,
    or none is loaded). Their verdict comes from a fresh engine of the same rules fed the same events."""
    loaded = [c.name for c in explainer.engine.correlations]
    if not loaded or (name is not None and name not in loaded):
        return None
    verdict_engine, _ = load_engine(config, files, sources=registry.specs(), hostname=config.hostname)
    return CorrelationExplainer(explainer, verdict_engine, [name] if name is not None else None)


def _print_event(number: int, event: Any, explained: list[RuleExplanation], on_event: list[CorrelationOnEvent], *,
                 expand: bool | set[str]) -> None:
    print(event_heading(number, event))
    if not explained and not on_event:
        print("  no rule is evaluated on this event (none of its source admits its index values)")
    for explanation in explained:
        print("\n".join(rule_lines(explanation, expand=expand)))
    for correlation in on_event:
        print("\n".join(correlation_lines(correlation, expand=expand)))
