"""Engine benchmark: JSON parse alone vs parse plus rule evaluation, per JSON source, and rules load time.

Replays the reference sample events (repeated to at least --events per source) through the full
upstream rules file of each source on one core. CloudTrail records go one per `{"Records": [...]}` document,
the shape the decoder reads. A run in which any event was not evaluated, or the samples raised no alert,
exits 1 with no figures (bench/accounting.py). The k8s samples are Falco's regression traces,
nine in ten of which raise an alert; `k8s_audit_read_mix` adds nine read requests (get, list,
watch) per sample, closer to what an API server really sends. Parse alone and the whole pipeline are timed batch
by batch in turn, the fastest of five timings of each batch counting (`time_interleaved`), so that the ratio
compares them at the same machine speed. Prints readable lines; with --json the last line is one JSON object with
every figure.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from accounting import Tally, counted, main_guard
from samples import REFERENCE, cloudtrail_records, k8s_audit_events, with_reads

from agent.builtin_sources import new_engine
from agent.config import AgentConfig
from agent.engine.engine import Engine
from agent.event import Event
from agent.gc_tuning import settle_after_startup
from agent.plugins.registry import load_registry
from agent.source import RecordDecoder

STABLE_RULES = ("falco_rules.yaml", "k8s_audit_rules.yaml", "aws_cloudtrail_rules.yaml")


def texts_of(documents: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(d) for d in documents]


def repeat(samples: list[bytes], count: int) -> list[bytes]:
    return (samples * (count // len(samples) + 1))[:count]


#: Texts timed at a time, and how many times each batch is timed (the fastest counts).
BATCH = 1_000
ROUNDS = 5


def time_interleaved(texts: list[bytes], decoder: RecordDecoder, engine: Engine, tally: Tally) -> tuple[float, float]:
    """Seconds to parse every text alone, and to parse, decode into events and evaluate every rule of the source:
    each the sum over batches of BATCH texts of the batch's fastest of ROUNDS timings. A batch's two timings are
    taken one after the other (in turn which first), so that both meet the machine at the same speed: on a shared
    machine that speed drifts by tens of percent within a run. Counts into `tally` what the engine really evaluated
    (a record the decoder refused is offered but never evaluated)."""
    loads = orjson.loads
    process = engine.process
    events = decoder.events
    clock = time.perf_counter
    batches = [texts[start:start + BATCH] for start in range(0, len(texts), BATCH)]
    parse_best = [float("inf")] * len(batches)
    pipeline_best = [float("inf")] * len(batches)

    def parse(batch: list[bytes]) -> float:
        began = clock()
        for text in batch:
            loads(text)
        return clock() - began

    def pipeline(batch: list[bytes]) -> float:
        began = clock()
        for text in batch:
            for event in events(loads(text), origin="bench"):
                if isinstance(event, Event):
                    process(event)
        return clock() - began

    with counted(engine, tally, len(texts) * ROUNDS):
        for round_ in range(ROUNDS):
            for index, batch in enumerate(batches):
                if round_ % 2:
                    pipeline_s, parse_s = pipeline(batch), parse(batch)
                else:
                    parse_s, pipeline_s = parse(batch), pipeline(batch)
                parse_best[index] = min(parse_best[index], parse_s)
                pipeline_best[index] = min(pipeline_best[index], pipeline_s)
    return sum(parse_best), sum(pipeline_best)


def time_load(files: list[Path], repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        engine = new_engine()
        start = time.perf_counter()
        result = engine.load_rules_files(files)
        best = min(best, time.perf_counter() - start)
        if not result.successful:
            raise SystemExit(f"rules failed to load: {result.as_text()}")
    return best


def bench_source(name: str, rules_file: str, texts: list[bytes], decoder_source: str,
                 rule_matching: str) -> dict[str, float]:
    """One source's figures; BenchmarkInvalid unless every text became an evaluated event and the samples,
    all known to alert (Falco's regression traces, Stratus attack logs), raised alerts."""
    engine = new_engine(rule_matching=rule_matching)
    result = engine.load_rules_files([REFERENCE / "rules" / rules_file])
    if not result.successful:
        raise SystemExit(result.as_text())
    decoder = next(d for d in load_registry(AgentConfig()).decoders(hostname="bench") if d.source == decoder_source)
    settle_after_startup()
    tally = Tally(name, expect_alerts=True)
    parse_s, pipeline_s = time_interleaved(texts, decoder, engine, tally)
    n = len(texts)
    return {
        f"{name}_events": n,
        f"{name}_parse_events_per_s": round(n / parse_s),
        f"{name}_parse_us_per_event": round(parse_s / n * 1e6, 3),
        f"{name}_events_per_s": round(n / pipeline_s),
        f"{name}_us_per_event": round(pipeline_s / n * 1e6, 3),
        f"{name}_ratio_vs_parse": round(pipeline_s / parse_s, 2),
        # Per pass over the texts (each was evaluated ROUNDS times).
        f"{name}_evaluated": tally.evaluated // ROUNDS,
        f"{name}_alerts": tally.alerts // ROUNDS,
        f"{name}_rule_errors": engine.stats.rule_errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="events per source (default 200000)")
    parser.add_argument("--rule-matching", choices=["first", "all"], default="first")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of all figures")
    args = parser.parse_args()
    if not REFERENCE.is_dir():
        print(f"reference data not found at {REFERENCE}", file=sys.stderr)
        return 2
    figures: dict[str, float] = {}
    load_s = time_load([REFERENCE / "rules" / f for f in STABLE_RULES])
    figures["load_three_stable_files_s"] = round(load_s, 4)
    print(f"load+compile {', '.join(STABLE_RULES)}: {load_s * 1000:.1f} ms")
    audit = k8s_audit_events()
    for name, rules, documents, source in (
        ("k8s_audit", "k8s_audit_rules.yaml", audit, "k8s_audit"),
        ("k8s_audit_read_mix", "k8s_audit_rules.yaml", with_reads(audit), "k8s_audit"),
        # One log file per record, as the decoder takes whole CloudTrail documents.
        ("cloudtrail", "aws_cloudtrail_rules.yaml", [{"Records": [r]} for r in cloudtrail_records()],
         "aws_cloudtrail"),
    ):
        texts = repeat(texts_of(documents), args.events)
        result = bench_source(name, rules, texts, source, args.rule_matching)
        figures.update(result)
        print(f"{name}: {result[f'{name}_events']} events | orjson.loads alone "
              f"{result[f'{name}_parse_events_per_s']:,} ev/s ({result[f'{name}_parse_us_per_event']} µs) | "
              f"parse+evaluate {result[f'{name}_events_per_s']:,} ev/s ({result[f'{name}_us_per_event']} µs) | "
              f"{result[f'{name}_ratio_vs_parse']}x parse | {result[f'{name}_alerts']} alerts")
    figures["rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(f"max RSS {figures['rss_mb']} MiB")
    if args.json:
        print(orjson.dumps(figures).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
