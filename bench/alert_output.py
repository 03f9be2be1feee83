"""What Falco's output keys cost per alert: `append_output`, the JSON include keys, and unbuffered stdout.

Three measurements, each against a baseline taken in the same run:

1. engine: Falco's k8s audit regression traces through the upstream k8s audit rules, with no `append_output` and
   with one entry appending text (`extra_output` naming two fields) and two `extra_fields` (a field and a
   format); the difference, per alert, is what appending costs.
2. json: the alerts of (1) written as Falco JSON with Falco's default keys, and with every key
   (`json_include_message_property` on).
3. stdout: the same alerts as JSON lines to /dev/null, flushed after each batch (`outputs.buffered: true`) and
   after each alert (Falco's `buffered_outputs: false`).

A run in which an event was not evaluated, or the traces raised no alert, exits 1 with no figures
(bench/accounting.py). With --json the last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import replace

import orjson
from accounting import Tally, counted, main_guard
from samples import REFERENCE, k8s_audit_events

from agent.alert import FALCO_JSON, Alert
from agent.config import AgentConfig
from agent.config.schema import AppendOutputConfig, ExtraFieldConfig
from agent.engine.engine import Engine
from agent.engine_setup import load_engine
from agent.event import Event
from agent.gc_tuning import settle_after_startup
from agent.outputs.stdout import StdoutOutput
from agent.plugins.registry import load_registry

APPEND = AppendOutputConfig(extra_output="user=%ka.user.name verb=%ka.verb",
                            extra_fields=(ExtraFieldConfig("ka.uri", "%ka.uri"),
                                          ExtraFieldConfig("target", "%ka.target.resource/%ka.target.name")))
ROUNDS = 3


def audit_events(count: int) -> list[Event]:
    """`count` decoded k8s audit events, the traces repeated."""
    decoder = next(d for d in load_registry(AgentConfig()).decoders(hostname="bench") if d.source == "k8s_audit")
    events = [e for doc in k8s_audit_events() for e in decoder.events(doc, origin="bench") if isinstance(e, Event)]
    return (events * (count // len(events) + 1))[:count]


def loaded(append_output: tuple[AppendOutputConfig, ...]) -> Engine:
    """The upstream k8s audit rules loaded as the agent loads them, with `append_output`."""
    config = AgentConfig(append_output=append_output)
    engine, result = load_engine(config, [REFERENCE / "rules" / "k8s_audit_rules.yaml"],
                                 sources=load_registry(config).specs(), hostname="bench")
    if not result.successful:
        raise SystemExit(result.as_text())
    return engine


def time_engine(engine: Engine, events: list[Event], tally: Tally) -> tuple[float, list[Alert]]:
    """Best of ROUNDS evaluations of every event; the alerts of the last round."""
    best, alerts = float("inf"), []
    process = engine.process
    for _ in range(ROUNDS):
        with counted(engine, tally, len(events)):
            out: list[Alert] = []
            started = time.perf_counter()
            for event in events:
                out.extend(process(event))
            best = min(best, time.perf_counter() - started)
        alerts = out
    return best, alerts


def best_of(work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def time_stdout(alerts: list[Alert], *, flush_each_alert: bool) -> float:
    with open("/dev/null", "wb") as sink:
        output = StdoutOutput(as_json=True, iso8601=False, flush_each_alert=flush_each_alert, stream=sink)

        def write_all() -> None:
            for alert in alerts:
                output.emit(alert)
            output.flush()

        return best_of(write_all)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="k8s audit events evaluated (default 100000)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of all figures")
    args = parser.parse_args()
    if not REFERENCE.is_dir():
        print(f"reference data not found at {REFERENCE}", file=sys.stderr)
        return 2
    events = audit_events(args.events)
    settle_after_startup()
    plain_tally, append_tally = Tally("plain", expect_alerts=True), Tally("appended", expect_alerts=True)
    plain_s, plain_alerts = time_engine(loaded(()), events, plain_tally)
    append_s, appended = time_engine(loaded((APPEND,)), events, append_tally)
    last = appended[0]
    if len(appended) != len(plain_alerts) or not last.output.endswith(f"verb={last.output_fields['ka.verb']}"):
        raise SystemExit("appending changed which alerts fire, or appended nothing: no figures")
    every_key = replace(FALCO_JSON, include_message=True)
    json_default_s = best_of(lambda: [FALCO_JSON.line(a) for a in appended])
    json_all_s = best_of(lambda: [every_key.line(a) for a in appended])
    buffered_s = time_stdout(appended, flush_each_alert=False)
    unbuffered_s = time_stdout(appended, flush_each_alert=True)
    n, a = len(events), len(appended)
    figures = {
        "events": n, "alerts": a, **plain_tally.as_figures(), **append_tally.as_figures(),
        "engine_plain_us_per_event": round(plain_s / n * 1e6, 3),
        "engine_appended_us_per_event": round(append_s / n * 1e6, 3),
        "append_output_us_per_alert": round((append_s - plain_s) / a * 1e6, 3),
        "append_output_ratio": round(append_s / plain_s, 3),
        "json_default_us_per_alert": round(json_default_s / a * 1e6, 3),
        "json_every_key_us_per_alert": round(json_all_s / a * 1e6, 3),
        "json_every_key_ratio": round(json_all_s / json_default_s, 3),
        "stdout_buffered_us_per_alert": round(buffered_s / a * 1e6, 3),
        "stdout_unbuffered_us_per_alert": round(unbuffered_s / a * 1e6, 3),
        "stdout_unbuffered_ratio": round(unbuffered_s / buffered_s, 3),
    }
    print(f"engine, {n:,} k8s audit events, {a:,} alerts: {figures['engine_plain_us_per_event']} µs/event plain, "
          f"{figures['engine_appended_us_per_event']} µs/event with append_output "
          f"({figures['append_output_ratio']}x; {figures['append_output_us_per_alert']} µs per alert)")
    print(f"JSON alert: {figures['json_default_us_per_alert']} µs with Falco's default keys, "
          f"{figures['json_every_key_us_per_alert']} µs with every key ({figures['json_every_key_ratio']}x)")
    print(f"stdout JSON lines to /dev/null: {figures['stdout_buffered_us_per_alert']} µs buffered, "
          f"{figures['stdout_unbuffered_us_per_alert']} µs flushed per alert ({figures['stdout_unbuffered_ratio']}x)")
    if args.json:
        print(orjson.dumps(figures).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
