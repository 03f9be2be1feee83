"""`falco-agent` command line: run the agent, validate rules, replay recorded events, list fields; Falco's flags
with Falco's meaning (agent.cli_falco for those that print and exit)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TextIO

import structlog

from agent.alert import json_bytes
from agent.builtin_sources import (
    capture_syscalls,
    new_engine,
    recorded_replayers,
    syscall_buffer_types,
    syscall_rule_types,
)
from agent.cli_falco import flag_overrides, print_and_exit, write_json
from agent.config import AgentConfig, load_config
from agent.config.schema import KernelConfig
from agent.engine.load_result import LoadResult
from agent.errors import AgentError, ConfigError, DecodeError
from agent.explain.command import add_explain_parser, explain_command
from agent.logging import configure_logging
from agent.outputs.stdout import StdoutOutput
from agent.plugins.registry import PluginRegistry, load_registry
from agent.priority import Priority
from agent.recorded import recorded_events
from agent.rule_tests.command import add_test_parser, test_command

log = structlog.get_logger("agent.cli")
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _priority(text: str) -> Priority:
    try:
        return Priority.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="falco-agent",
        description="Falco-language threat detection over kernel syscalls, Kubernetes audit logs and AWS CloudTrail.",
    )
    parser.add_argument("--version", action="store_true",
                        help="print the agent, Falco engine, plugin API and plugin versions and exit")
    parser.add_argument("-c", "--config", metavar="AGENT_YAML", help="configuration file (the agent's or falco.yaml)")
    parser.add_argument("-r", "--rules", action="append", default=[], metavar="RULES",
                        help="rules file or directory, instead of the configured rules_files; repeat to load "
                             "several, in order")
    parser.add_argument("--enable-source", action="append", default=[], metavar="NAME",
                        help="run only this event source (built-in or of a loaded plugin: see `fields`); repeat for "
                             "several")
    parser.add_argument("--disable-source", action="append", default=[], metavar="NAME",
                        help="run every event source but this one; repeat for several; not with --enable-source")
    parser.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                        help="override a configuration key")
    parser.add_argument("--json", action="store_true",
                        help="alerts as JSON lines; JSON from --version, -L, -l, -V and --list too")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    _add_falco_flags(parser.add_argument_group("Falco's flags"))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    rules = sub.add_parser("rules", help="work with rules files")
    rules_sub = rules.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    validate = rules_sub.add_parser("validate", help="check rules files; exit 1 on any error")
    validate.add_argument("--json", action="store_true", dest="as_json",
                          help='print {"errors": [...], "warnings": [...]}')
    validate.add_argument("files", nargs="+", metavar="FILE", help="loaded together, in order")
    add_test_parser(rules_sub)

    replay = sub.add_parser("replay", help="evaluate rules on recorded k8s audit, CloudTrail or kernel capture files")
    replay.add_argument("-r", "--rules", action="append", required=True, dest="replay_rules", metavar="RULES",
                        help="rules file, once per file, loaded in order")
    replay.add_argument("--source", help="decode every input as this source instead of recognising it")
    replay.add_argument("--rule-matching", choices=["first", "all"], default="first")
    replay.add_argument("--min-priority", type=_priority, default=Priority.DEBUG, metavar="PRIORITY")
    replay.add_argument("--iso8601", action="store_true", help="time prefix in ISO 8601 (UTC)")
    replay.add_argument("--text", action="store_true", help="print text lines instead of JSON alerts")
    replay.add_argument("inputs", nargs="+", metavar="INPUT",
                        help=".json, .json.gz, JSON lines, a kernel capture, or a directory")

    add_explain_parser(sub)

    tail = sub.add_parser("tail", help="print alerts from a running agent's gRPC API as they arrive")
    tail.add_argument("--min-priority", type=_priority, metavar="PRIORITY", help="only alerts at least this severe")
    tail.add_argument("--source", action="append", default=[], dest="tail_sources", metavar="SOURCE",
                      help="only alerts of this source; repeat for several")
    tail.add_argument("--rule", action="append", default=[], dest="tail_rules", metavar="GLOB",
                      help="only rules with this name or glob; repeat for several")
    tail.add_argument("--resume-from", type=int, metavar="SEQ",
                      help="first the retained alerts after this sequence number, then live ones")
    where = tail.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH", help="the agent's unix socket (default: /run/falco-agent/grpc.sock)")
    where.add_argument("--address", metavar="HOST:PORT", help="the agent's TCP address")
    tail.add_argument("--tls-ca", metavar="PEM", help="CA that signed the server certificate (TCP with TLS)")
    tail.add_argument("--tls-cert", metavar="PEM", help="client certificate for mutual TLS")
    tail.add_argument("--tls-key", metavar="PEM", help="client key for mutual TLS")
    tail.add_argument("--json", action="store_true", dest="as_json", help="Falco JSON alerts with a seq key")

    capture = sub.add_parser("capture", help="record live syscalls (root, BCC) to a file that replay reads")
    capture.add_argument("file", metavar="FILE", help="capture file to write (JSON lines)")
    capture.add_argument("--seconds", type=float, help="stop after this long (default: at Ctrl-C or SIGTERM)")
    capture.add_argument("-r", "--rules", action="append", default=[], dest="capture_rules", metavar="RULES",
                         help="capture only what these rules and the process state need (default: every syscall)")
    capture.add_argument("--ring-buffer-pages", type=int, default=KernelConfig().ring_buffer_pages)

    fields = sub.add_parser("fields", help="list the fields rules can use")
    fields.add_argument("--source", help="only this source")
    fields.add_argument("--json", action="store_true", dest="as_json")
    fields.add_argument("--all", action="store_true", dest="all_fields",
                        help="also list the fields Falco has that this agent does not support (rules may not use them)")
    return parser


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of seconds, at least 1, got '{text}'")
    return int(text)


def _add_falco_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("-L", dest="list_rules", action="store_true",
                       help="print the name and description of every loaded rule and exit")
    group.add_argument("-l", dest="describe_rule", metavar="RULE",
                       help="print the name and description of this rule and exit")
    group.add_argument("--list", dest="list_fields_source", nargs="?", const="", metavar="SOURCE",
                       help="print the fields rules can use (of SOURCE only, when given) and exit")
    group.add_argument("-V", "--validate", dest="validate_files", action="append", default=[], metavar="RULES",
                       help="validate this rules file and exit (as `rules validate`); repeat for several")
    group.add_argument("--dry-run", action="store_true",
                       help="load the configuration, plugins and rules, open no source, and exit 0 when all is fine")
    group.add_argument("-M", dest="duration", type=_positive_int, metavar="SECONDS",
                       help="stop after this many seconds, as SIGTERM does")
    group.add_argument("-p", "--print", dest="print_format", metavar="FORMAT",
                       help="append FORMAT to every rule's output (an append_output entry)")
    group.add_argument("-U", "--unbuffered", action="store_true",
                       help="flush the outputs after every alert (buffered_outputs: false)")
    group.add_argument("--support", action="store_true",
                       help="print a JSON support report (versions, system, configuration, rules files) and exit")
    group.add_argument("-i", dest="print_ignored_events", action="store_true",
                       help="print which syscalls the kernel source captures and which never, and exit")
    group.add_argument("--list-plugins", action="store_true", help="print the loaded plugins and exit")
    group.add_argument("--plugin-info", metavar="NAME", help="print one loaded plugin and its configuration and exit")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(level=args.log_level)
    try:
        return _dispatch(args, sys.argv[1:] if argv is None else list(argv))
    except BrokenPipeError:
        # The reader of stdout went away (`| head`): stop quietly, as command-line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _dispatch(args: argparse.Namespace, argv: list[str]) -> int:
    if args.command == "tail":
        return tail_alerts(args)
    if args.command == "capture":
        return capture(args)
    try:
        config = load_config(args.config, overrides=args.option)
        overrides = [*args.option, *flag_overrides(args, config)]
        if overrides != args.option:
            config = load_config(args.config, overrides=overrides)
        registry = load_registry(config)
    except ConfigError as exc:
        print(f"falco-agent: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "rules" and args.rules_command == "test":
        return test_command(args, config, registry)
    if args.command == "rules":
        return validate_rules(args.files, registry, as_json=args.as_json)
    if args.command == "explain":
        return explain_command(args, config, registry)
    if args.command == "replay":
        return replay(args, registry)
    if args.command == "fields":
        return list_fields(args.source, registry, as_json=args.as_json, include_unsupported=args.all_fields)
    as_json = args.json or config.outputs.stdout.format == "json"
    done = print_and_exit(args, config, registry, argv=argv, as_json=as_json)
    if done is not None:
        return done
    if args.list_fields_source is not None:
        return list_fields(args.list_fields_source or None, registry, as_json=as_json)
    if args.validate_files:
        return validate_rules(args.validate_files, registry, as_json=as_json)
    return _run(args, config, registry, overrides)


def _run(args: argparse.Namespace, config: AgentConfig, registry: PluginRegistry, overrides: list[str]) -> int:
    from agent.runtime import run_agent  # the runtime's imports (gRPC, outputs) only when the agent runs

    return run_agent(args, config, registry, overrides=overrides)


def print_load_result(result: LoadResult, *, stream: TextIO | None = None) -> None:
    for problem in result.problems:
        print(problem.as_text(), file=stream or sys.stderr)


def validate_rules(files: list[str], registry: PluginRegistry, *, as_json: bool) -> int:
    result = new_engine(sources=registry.specs()).load_rules_files(files)
    if as_json:
        write_json(result.as_json())
    else:
        print_load_result(result, stream=sys.stdout)
        status = "Ok" if result.successful else "Invalid"
        print(f"{', '.join(files)}: {status} ({len(result.errors)} errors, {len(result.warnings)} warnings)")
    return EXIT_OK if result.successful else EXIT_FAILURE


def replay(args: argparse.Namespace, registry: PluginRegistry) -> int:
    engine = new_engine(rule_matching=args.rule_matching, min_priority=args.min_priority, sources=registry.specs())
    decoders = registry.decoders(hostname=engine.hostname)
    forced = next((d for d in decoders if d.source == args.source), None) if args.source else None
    if args.source and forced is None:
        known = ", ".join(decoder.source for decoder in decoders)
        print(f"replay: --source {args.source}: no source of that name reads recorded JSON; known: {known}",
              file=sys.stderr)
        return EXIT_USAGE
    result = engine.load_rules_files(args.replay_rules)
    print_load_result(result)
    if not result.successful:
        return EXIT_FAILURE
    out = StdoutOutput(as_json=not args.text, iso8601=args.iso8601)
    events = skipped = alerts = 0
    started = time.perf_counter()
    replayers = recorded_replayers(hostname=engine.hostname)
    for item in recorded_events(args.inputs, decoders, forced=forced, replayers=replayers):
        if isinstance(item, DecodeError):
            skipped += 1
            log.warning("record_skipped", where=str(item.location), reason=item.message)
            continue
        events += 1
        for alert in engine.process(item):
            alerts += 1
            out.emit(alert)
    out.close()
    elapsed = time.perf_counter() - started
    print(f"replay: {events} events, {alerts} alerts, {skipped} records skipped, "
          f"{engine.stats.rule_errors} rule evaluation errors, {elapsed:.3f}s", file=sys.stderr)
    return EXIT_OK


def capture(args: argparse.Namespace) -> int:
    rule_types = buffer_types = None
    if args.capture_rules:
        engine = new_engine()
        result = engine.load_rules_files(args.capture_rules)
        print_load_result(result)
        if not result.successful:
            return EXIT_FAILURE
        rule_types = syscall_rule_types(engine)
        buffer_types = syscall_buffer_types(engine)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    config = replace(KernelConfig(), ring_buffer_pages=args.ring_buffer_pages)
    try:
        summary = capture_syscalls(args.file, config=config, rule_types=rule_types, stop=stop,
                                   seconds=args.seconds, hostname=socket.gethostname(), buffer_types=buffer_types)
    except AgentError as exc:
        print(f"falco-agent capture: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"capture: {summary.records} records in {summary.seconds:.1f}s to {args.file}, "
          f"{summary.lost} lost in the kernel", file=sys.stderr)
    return EXIT_OK


def list_fields(source: str | None, registry: PluginRegistry, *, as_json: bool,
                include_unsupported: bool = False) -> int:
    """Print the fields rules can use; with `include_unsupported`, also those a rule is refused for, marked."""
    specs = registry.specs()
    if source is not None:
        specs = [s for s in specs if s.name == source]
        if not specs:
            print(f"unknown source '{source}'; known: {', '.join(registry.source_names())}", file=sys.stderr)
            return EXIT_USAGE
    rows = [
        {"source": spec.name, "name": f.name, "type": f.type.value, "list": f.is_list, "arg": f.arg.label,
         "implemented": f.is_implemented, "description": f.description}
        for spec in specs for f in spec.fields if include_unsupported or f.is_implemented
    ]
    if as_json:
        write_json(rows)
        return EXIT_OK
    current = None
    for row in rows:
        if row["source"] != current:
            current = row["source"]
            print(f"\n# source: {current}")
        kind = str(row["type"]) + (" (list)" if row["list"] else "")
        arg = "" if row["arg"] == "none" else f" [arg: {row['arg']}]"
        unsupported = "" if row["implemented"] else " [not supported: a rule using it fails to load]"
        print(f"{row['name']:<48} {kind:<16}{arg}{unsupported} {row['description']}")
    return EXIT_OK


def tail_alerts(args: argparse.Namespace) -> int:
    """Stream alerts from the gRPC API to stdout until interrupted; gaps are reported on stderr."""
    import grpc

    from agent.grpc.client import AlertClient, Gap, make_filter
    from agent.grpc.server import DEFAULT_SOCKET_PATH
    from agent.grpc.tls import ClientTls

    tls = ClientTls(args.tls_ca, args.tls_cert, args.tls_key) if args.tls_ca or args.tls_cert else None
    client = AlertClient(socket_path=None if args.address else (args.socket or DEFAULT_SOCKET_PATH),
                         address=args.address, tls=tls)
    wanted = make_filter(min_priority=args.min_priority, sources=args.tail_sources, rules=args.tail_rules)
    out = sys.stdout.buffer
    try:
        for item in client.subscribe(allow=[wanted], resume_after=args.resume_from):
            if isinstance(item, Gap):
                log.warning("alerts_missed", count=item.missed, first_seq=item.first_missed_seq,
                            last_seq=item.last_missed_seq)
                continue
            if args.as_json:
                out.write(json_bytes({**item.falco_json(), "seq": item.seq}) + b"\n")
            else:
                out.write(item.text_line().encode() + b"\n")
            out.flush()
    except KeyboardInterrupt:
        return EXIT_OK
    except grpc.RpcError as exc:
        print(f"tail: {client.target}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        client.close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
