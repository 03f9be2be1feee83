"""Plugin benchmark: Falco's dummy_c through the native plugin layer against built-in JSON events, one rule each.

Plugin side: `plugin_next_batch` on the source's worker thread until EOF (events copied out and stamped), then
the engine evaluates dummy_c's own rule (`dummy.value > 1`) on each event, which costs one
`plugin_extract_fields` call per event. The same events are evaluated again with their fields already cached:
the difference is the ABI cost per event beyond the rule. JSON side: the same number of Kubernetes audit
samples, parsed, decoded and evaluated against one rule on `ka.verb`. Each phase is measured three times, the
best kept; a run in which the engine evaluated fewer events than offered, or the rules raised nothing, exits 1
with no figures (bench/accounting.py). dummy_c is built from the reference material unless --library names it.
With --json the last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
from accounting import Tally, counted, main_guard
from plugin_build import build_all, dummy_c_command, missing_compiler
from samples import REFERENCE, k8s_audit_events

from agent.builtin_sources import new_engine
from agent.config import AgentConfig
from agent.engine.engine import Engine, RulesText
from agent.event import Event
from agent.gc_tuning import settle_after_startup
from agent.plugins.native.extract import FieldExtraction
from agent.plugins.native.library import Plugin, PluginLibrary
from agent.plugins.native.source import PluginSource
from agent.plugins.native.spec import plugin_source_spec
from agent.plugins.registry import load_registry

K8S_RULE = """
- rule: Audit write
  desc: one rule on one field, as dummy_c's rule
  condition: ka.verb in (create, update, patch, delete)
  output: "verb=%ka.verb"
  priority: NOTICE
  source: k8s_audit
"""
_RUNS = 3


class _Collect:
    """The sink the source hands its batches to: a list, always with room."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def offer(self, events: Sequence[Event], on_done: Callable[[], None] | None = None) -> bool:
        self.events += events
        return True

    def put(self, events: Sequence[Event], on_done: Callable[[], None] | None = None, *,
            timeout_s: float | None = None) -> bool:
        self.events += events
        return True


def read_source(plugin: Plugin, count: int) -> tuple[list[Event], float]:
    """Every event of a fresh capture of `count` events, and the seconds it took to EOF."""
    sink = _Collect()
    source = PluginSource(plugin, orjson.dumps({"start": 1, "maxEvents": count}).decode(), batch_events=4096)
    start = time.perf_counter()
    source.start(sink)
    if not source.wait_finished(600):
        raise SystemExit("the dummy_c capture did not reach EOF in 600 s")
    elapsed = time.perf_counter() - start
    source.stop()
    if source.failure() is not None or len(sink.events) != count:
        raise SystemExit(f"the capture failed or fell short: {source.failure()}, {len(sink.events)} of {count}")
    return sink.events, elapsed


def time_process(engine: Engine, events: list[Event], tally: Tally, *, keep_cache: bool) -> float:
    """Seconds to evaluate `events`; without `keep_cache` every event starts with no field extracted."""
    if not keep_cache:
        for event in events:
            event.cache.clear()
    process = engine.process
    with counted(engine, tally, len(events)):
        start = time.perf_counter()
        for event in events:
            process(event)
        elapsed = time.perf_counter() - start
    return elapsed


def bench_plugin(library: Path, count: int) -> dict[str, float]:
    plugin = PluginLibrary(library).init({"jitter": 10})
    try:
        extraction = FieldExtraction(plugin, "dummy_c")
        engine = new_engine(hostname="bench")
        engine.add_source(plugin_source_spec(plugin, [extraction]))
        result = engine.load_rules_files([REFERENCE / "plugins" / "dummy_c" / "dummy_c_rules.yaml"])
        if not result.successful:
            raise SystemExit(result.as_text())
        settle_after_startup()
        read_s = float("inf")
        for _ in range(_RUNS):
            events, elapsed = read_source(plugin, count)
            read_s = min(read_s, elapsed)
        tally = Tally("plugin", expect_alerts=True)
        cold_s = min(time_process(engine, events, tally, keep_cache=False) for _ in range(_RUNS))
        calls_per_event = extraction.calls / (count * _RUNS)
        warm_s = min(time_process(engine, events, tally, keep_cache=True) for _ in range(_RUNS))
    finally:
        plugin.destroy()
    us = 1e6 / count
    return {
        "plugin_events": count,
        "plugin_next_batch_us_per_event": round(read_s * us, 3),
        "plugin_extract_and_rule_us_per_event": round(cold_s * us, 3),
        "plugin_rule_only_us_per_event": round(warm_s * us, 3),
        "plugin_abi_extract_us_per_event": round((cold_s - warm_s) * us, 3),
        "plugin_us_per_event": round((read_s + cold_s) * us, 3),
        "plugin_events_per_s": round(count / (read_s + cold_s)),
        "plugin_extract_calls_per_event": round(calls_per_event, 3),
        **tally.as_figures(),
    }


def bench_json(count: int) -> dict[str, float]:
    engine = new_engine(hostname="bench")
    result = engine.load_rules([RulesText("bench-k8s.yaml", K8S_RULE)])
    if not result.successful:
        raise SystemExit(result.as_text())
    decoder = next(d for d in load_registry(AgentConfig()).decoders(hostname="bench") if d.source == "k8s_audit")
    samples = [orjson.dumps(d) for d in k8s_audit_events()]
    texts = (samples * (count // len(samples) + 1))[:count]
    tally = Tally("json", expect_alerts=True)
    best = float("inf")
    for _ in range(_RUNS):
        with counted(engine, tally, count):
            start = time.perf_counter()
            for text in texts:
                for event in decoder.events(orjson.loads(text), origin="bench"):
                    if isinstance(event, Event):
                        engine.process(event)
            best = min(best, time.perf_counter() - start)
    return {"json_events": count, "json_us_per_event": round(best / count * 1e6, 3),
            "json_events_per_s": round(count / best), **tally.as_figures()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="events per side (default 200000)")
    parser.add_argument("--library", type=Path, help="a built libdummy_c.so (default: build it from the reference)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of all figures")
    args = parser.parse_args()
    if not REFERENCE.is_dir():
        print(f"reference data not found at {REFERENCE}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-plugins-") as folder:
        library = args.library
        if library is None:
            reason = missing_compiler()
            if reason is not None:
                print(f"cannot build dummy_c: {reason}", file=sys.stderr)
                return 2
            library, command = dummy_c_command(REFERENCE, Path(folder))
            build_all({"dummy_c": command})
        figures = bench_plugin(library, args.events)
    figures.update(bench_json(args.events))
    figures["plugin_vs_json"] = round(figures["plugin_us_per_event"] / figures["json_us_per_event"], 2)
    print(f"dummy_c: {figures['plugin_events_per_s']:,} ev/s ({figures['plugin_us_per_event']} µs: next_batch "
          f"{figures['plugin_next_batch_us_per_event']} µs + extraction and rule "
          f"{figures['plugin_extract_and_rule_us_per_event']} µs, of which ABI extraction "
          f"{figures['plugin_abi_extract_us_per_event']} µs, "
          f"{figures['plugin_extract_calls_per_event']} calls per event) | "
          f"k8s audit JSON: {figures['json_events_per_s']:,} ev/s ({figures['json_us_per_event']} µs) | "
          f"{figures['plugin_vs_json']}x JSON")
    if args.json:
        print(orjson.dumps(figures).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
