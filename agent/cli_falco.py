"""Falco's informational flags, which print and exit: `--version`, `--support`, `-i`, `--list-plugins`,
`--plugin-info`, `-L` and `-l`; and the flags that change the configuration (`-U`, `-p`) as overrides."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from agent.config import AgentConfig
from agent.errors import ConfigError
from agent.plugins.registry import LoadedPlugin, PluginRegistry
from agent.rule_listing import UnknownRuleError, rules_json, rules_table, select_rules
from agent.startup_check import load_rules, rules_files_in_use
from agent.support_report import config_json, support_report
from agent.versions import versions_info
from sources.kernel.fields import SYSCALL_EVENT_TYPES
from sources.kernel.syscalls import SCHED_TYPES, STATE_SYSCALLS, SYSCALLS

EXIT_OK, EXIT_FAILURE = 0, 1


def flag_overrides(args: argparse.Namespace, config: AgentConfig) -> list[str]:
    """`-o` overrides standing for `-U` and `-p`, so that a rules reload, which reads the configuration again,
    keeps them. `config` is loaded without them: `-p` adds its entry to the `append_output` it has."""
    out = []
    if args.unbuffered:
        out.append("outputs.buffered=false")
    if args.print_format is not None:
        entry = {"extra_output": args.print_format}
        if config.append_output == AgentConfig().append_output:
            # Maybe the schema's default, which the file does not hold: `append_output[]` would start a list
            # without it.
            out.append("append_output=" + orjson.dumps([{"suggested_output": True}, entry]).decode())
        else:
            out.append("append_output[]=" + orjson.dumps(entry).decode())
    return out


def print_and_exit(args: argparse.Namespace, config: AgentConfig, registry: PluginRegistry, *,
                   argv: Sequence[str], as_json: bool) -> int | None:
    """The exit code of the informational flag given (the first, in Falco's order), None when none is."""
    versions = versions_info(loaded_plugin_versions(registry))
    if args.version:
        if as_json:
            write_json(versions)
        else:
            print(versions_text(versions, registry))
        return EXIT_OK
    if args.support:
        write_json(support_report(argv=["falco-agent", *argv], versions=versions, config=config,
                                  config_files=config.loaded_files, rules_files=rules_files_in_use(config, args.rules),
                                  registry=registry))
        return EXIT_OK
    if args.print_ignored_events:
        print(ignored_events_text())
        return EXIT_OK
    if args.list_plugins or args.plugin_info is not None:
        return print_plugins(registry, args.plugin_info)
    if args.list_rules or args.describe_rule is not None:
        return describe_rules(args, config, registry, as_json=as_json)
    return None


def loaded_plugin_versions(registry: PluginRegistry) -> list[tuple[str, str]]:
    """The (name, version) of the plugins rules' `required_plugin_versions` see: a loaded plugin's own, or the Falco
    plugins a built-in source stands in for."""
    return [pair for loaded in registry.plugins for pair in loaded.plugin.reported_plugins]


def versions_text(versions: dict[str, Any], registry: PluginRegistry) -> str:
    """`--version` for a person: the versions, then each loaded plugin (and the Falco plugins it stands in for)."""
    lines = [f"falco-agent version: {versions['falco_version']}",
             f"Falco engine:        {versions['engine_version_semver']}",
             f"Plugin API:          {versions['plugin_api_version']}",
             "Plugins:"]
    for loaded in registry.plugins:
        plugin = loaded.plugin
        stands_in = ", ".join(f"{name} {version}" for name, version in plugin.falco_plugins)
        lines.append(f"  {plugin.name} {plugin.version}" + (f" (for {stands_in})" if stands_in else ""))
    return "\n".join(lines)


def describe_rules(args: argparse.Namespace, config: AgentConfig, registry: PluginRegistry, *, as_json: bool) -> int:
    """`-L`, `-l RULE`: exit 1 when the rules do not load or `-l` names no loaded rule."""
    try:
        rules = select_rules(load_rules(config, registry, args.rules)[0].rules, args.describe_rule)
    except (ConfigError, UnknownRuleError) as exc:
        print(f"falco-agent: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if as_json:
        write_json(rules_json(rules))
    else:
        print(rules_table(rules), end="")
    return EXIT_OK


def ignored_events_text() -> str:
    """`-i`: Falco skips some high-volume syscalls unless told otherwise; the kernel source instead captures what
    the loaded rules can match and what its state needs, so what it never captures is what its probe lacks."""
    never = sorted(SYSCALL_EVENT_TYPES - set(SYSCALLS) - set(SCHED_TYPES))
    sections = [
        ("Captured always (the process and file-descriptor state needs them)", sorted(STATE_SYSCALLS)),
        ("Captured when a loaded rule can match them (or sources.kernel.extra_syscalls names them)",
         sorted(set(SYSCALLS) - STATE_SYSCALLS)),
        ("Never captured (the probe does not implement them: a rule condition naming only these never matches)",
         never),
    ]
    lines = ["No event is ignored for performance: the kernel source attaches only to the syscalls below that the "
             "loaded rules need."]
    for title, names in sections:
        lines += ["", f"{title}:", *(f"- {name}" for name in names)]
    return "\n".join(lines)


def print_plugins(registry: PluginRegistry, name: str | None) -> int:
    """`--list-plugins`: every loaded plugin (built-in sources included); `--plugin-info NAME`: one, with its
    configuration as loaded. Exit 1 when no loaded plugin has that name."""
    if name is None:
        print(f"{len(registry.plugins)} plugins loaded:\n")
        print("\n\n".join(_plugin_text(loaded) for loaded in registry.plugins))
        return EXIT_OK
    loaded = next((loaded for loaded in registry.plugins if loaded.plugin.name == name), None)
    if loaded is None:
        known = ", ".join(loaded.plugin.name for loaded in registry.plugins)
        print(f"falco-agent: --plugin-info: no loaded plugin is named '{name}'; loaded: {known}", file=sys.stderr)
        return EXIT_FAILURE
    print(_plugin_text(loaded))
    print("Init config (as loaded):")
    sys.stdout.flush()
    write_json(config_json(loaded.config))
    if loaded.open_params:
        print(f"Open params: {loaded.open_params}")
    return EXIT_OK


def _plugin_text(loaded: LoadedPlugin) -> str:
    plugin = loaded.plugin
    lines = [f"Name: {plugin.name}", f"Version: {plugin.version}", f"Configured by: {loaded.config_key}"]
    if plugin.falco_plugins:
        lines.append("Stands in for: " + ", ".join(f"{n} {v}" for n, v in plugin.falco_plugins))
    lines.append("Capabilities:")
    if plugin.source and not plugin.inputs_only:
        lines.append(f"  - Event Sourcing (source '{plugin.source}')")
    elif plugin.inputs_only:
        lines.append(f"  - Live inputs for event source '{plugin.source}'")
    extracts = [s for s in (plugin.source, *plugin.extract_sources) if s] if plugin.fields else []
    if extracts:
        lines.append(f"  - Field Extraction ({len(plugin.fields)} fields; sources {', '.join(extracts)})")
    return "\n".join(lines)


def write_json(value: Any) -> None:
    """`value` as indented JSON on stdout, flushed (text may follow on the same stream)."""
    sys.stdout.buffer.write(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()
