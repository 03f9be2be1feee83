"""Whole-agent benchmark: `falco-agent` as a real process with every source active at a set mix of rates.

The agent runs with the stable Falco rules (falco_rules.yaml, k8s_audit_rules.yaml, aws_cloudtrail_rules.yaml),
its webhook on 127.0.0.1, a watched CloudTrail directory, gRPC on a unix socket, JSON alerts on stdout (to
/dev/null) and /metrics. For `--seconds` this process POSTs k8s audit batches (the read-heavy mix: nine reads per
regression sample) at `--k8s-rate` events/s and drops CloudTrail files at `--cloudtrail-rate` records/s, then
waits for the agent to evaluate what it took. The baseline is the same agent idle (rules loaded, no events).
It prints events/s and alerts/s evaluated, the agent's CPU (/proc/<pid>/stat), peak RSS (VmHWM) and drops (records
the kernel lost, alerts an output dropped); with --json the last line is one JSON object.

Counts are the agent's /metrics between the start of the load and the end of the drain (bench/agent_load.py):
every audit event posted and CloudTrail record written must be evaluated, and each sample set, once offered
whole, must raise alerts. The openat calls are counted by correlations that never fire, run beside the rules
(bench/agent_load.py, Fence): each must be evaluated, unless the kernel counted losses (then evaluated + lost
must cover them). Otherwise the run exits 1 with no figures (bench/accounting.py). The kernel source sees every
process: events/s includes other processes' syscalls.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from accounting import main_guard, require_none
from agent_load import EVALUATED, Load, SyscallLoad, TrailDirectoryLoad, WebhookLoad, drain, run_loads
from process_stats import cpu_s, growth, memory_mb, total
from running_agent import RunningAgent, free_port
from samples import REFERENCE, cloudtrail_records, k8s_audit_events, with_reads

ROOT = Path(__file__).resolve().parents[1]
STABLE_RULES = ("falco_rules.yaml", "k8s_audit_rules.yaml", "aws_cloudtrail_rules.yaml")
WEBHOOK_PATH = "/k8s-audit"
_START_TIMEOUT_S = 90.0
_IDLE_S = 2.0


def start_agent(rules: list[Path], *, drop_dir: Path, state: Path, extra_options: list[str],
                kernel: bool) -> tuple[RunningAgent, int]:
    """The agent with every source on loopback and files under `state`, and its webhook port."""
    webhook_port = free_port()
    options = [
        f"sources.k8s_audit.webhook.listen=127.0.0.1:{webhook_port}",
        f"sources.aws_cloudtrail.directory.paths=[{drop_dir}]",
        "sources.aws_cloudtrail.directory.poll_interval_s=0.2",
        f"sources.kernel.enabled={'true' if kernel else 'false'}",
        *extra_options,
    ]
    agent = RunningAgent(rules, state=state, options=options,
                         ready=lambda samples: total(samples, "falco_agent_rules_loaded") > 0,
                         start_timeout_s=_START_TIMEOUT_S)
    return agent, webhook_port


class RssSampler:
    """The highest resident memory of a process seen while the block runs (sampled every 0.2 s)."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.peak_mb = memory_mb(pid, "VmRSS")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_mb = max(self.peak_mb, memory_mb(self._pid, "VmRSS"))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, memory_mb(self._pid, "VmRSS"))


def measure(agent: RunningAgent, loads: list[tuple[Load, float]], seconds: float) -> dict[str, Any]:
    """Idle baseline, then the load until drained: the figures of one run, counted from a scrape taken as the
    load starts. BenchmarkInvalid when a load's account does not add up."""
    pid = agent.proc.pid
    idle_cpu = cpu_s(pid)
    time.sleep(_IDLE_S)
    idle_cpu_percent = 100 * (cpu_s(pid) - idle_cpu) / _IDLE_S
    idle_rss_mb = memory_mb(pid, "VmRSS")
    before = agent.metrics()
    cpu_before, started = cpu_s(pid), time.monotonic()
    with RssSampler(pid) as rss:
        load_s = run_loads(loads, seconds)
        drained = drain(agent, lambda after: [load.account(before, after) for load, _ in loads],
                        fence=next((load.fence for load, _ in loads if isinstance(load, SyscallLoad)), None))
    cpu_used = cpu_s(pid) - cpu_before
    wall_s = drained.at - started
    accounts = {load.source: load.account(before, drained.final) for load, _ in loads}
    require_none([problem for account in accounts.values() for problem in account.problems()])
    counted = {key: value for account in accounts.values() for key, value in account.as_figures().items()}
    # Rates over the load and its drain, from the scrape that found it drained.
    events = sum(growth(before, drained.samples, EVALUATED, source=source) for source in accounts)
    alerts = growth(before, drained.samples, "falco_agent_alerts_total")
    kernel_lost = growth(before, drained.final, "falco_agent_source_kernel_lost", source="kernel")
    output_drops = growth(before, drained.final, "falco_agent_output_alerts_total", result="dropped")
    return {
        "seconds": round(seconds, 1), "load_s": round(load_s, 2), "drain_s": round(wall_s - load_s, 2),
        "offered_per_s": {load.source: rate for load, rate in loads},
        # What each load offered, as before (the checks above held it to what was evaluated).
        "accepted": {source: counted[f"{source}_offered"] for source in accounts},
        "evaluated": {source: counted[f"{source}_evaluated"] for source in accounts}, **counted,
        "events_per_s": round(events / wall_s), "alerts_per_s": round(alerts / wall_s, 1), "alerts": alerts,
        "agent_cpu_percent": round(100 * cpu_used / (time.monotonic() - started), 1),
        "idle_cpu_percent": round(idle_cpu_percent, 1), "idle_rss_mb": round(idle_rss_mb, 1),
        # VmHWM includes start-up (BCC compiling the kernel probe); the load's own peak is sampled.
        "peak_rss_mb": round(memory_mb(pid, "VmHWM"), 1), "load_peak_rss_mb": round(rss.peak_mb, 1),
        "drops": output_drops + kernel_lost,
        "output_drops": output_drops,
        "webhook_503_retries": sum(load.retries for load, _ in loads),
        "kernel_lost": kernel_lost,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the load runs (default 30)")
    parser.add_argument("--k8s-rate", type=float, default=2000.0, help="audit events/s posted (default 2000)")
    parser.add_argument("--cloudtrail-rate", type=float, default=500.0,
                        help="CloudTrail records/s dropped as files (default 500)")
    parser.add_argument("--syscall-rate", type=float, default=5000.0,
                        help="openat/s done by this process for the kernel source, as root (default 5000; 0: off)")
    parser.add_argument("--batch-size", type=int, default=100, help="audit events per POST (default 100)")
    parser.add_argument("--records-per-file", type=int, default=100, help="records per CloudTrail file (default 100)")
    parser.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                        help="an agent configuration override, e.g. queue_capacity_events=20000; repeatable")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of all figures")
    args = parser.parse_args()
    if not REFERENCE.is_dir():
        print(f"reference data not found at {REFERENCE}", file=sys.stderr)
        return 2
    state = Path(tempfile.mkdtemp(prefix="falco-agent-bench-"))
    drop_dir = state / "cloudtrail"
    drop_dir.mkdir()
    rules = [REFERENCE / "rules" / name for name in STABLE_RULES]
    syscalls = SyscallLoad(state) if args.syscall_rate > 0 and os.geteuid() == 0 else None
    if syscalls is not None:
        counter = state / "load-counter.yaml"
        counter.write_text(syscalls.rules())
        rules.append(counter)
    agent, webhook_port = start_agent(rules, drop_dir=drop_dir, state=state, extra_options=args.option,
                                      kernel=syscalls is not None)
    try:
        loads: list[tuple[Load, float]] = [
            (WebhookLoad(webhook_port, WEBHOOK_PATH, with_reads(k8s_audit_events()),
                         batch_size=args.batch_size), args.k8s_rate),
            (TrailDirectoryLoad(drop_dir, cloudtrail_records(), records_per_file=args.records_per_file),
             args.cloudtrail_rate),
        ]
        if syscalls is not None:
            loads.append((syscalls, args.syscall_rate))
        figures = measure(agent, loads, args.seconds)
    finally:
        code = agent.stop()
    figures["exit_code"] = code
    print(f"idle agent with {', '.join(STABLE_RULES)}: CPU {figures['idle_cpu_percent']}%, "
          f"RSS {figures['idle_rss_mb']} MiB")
    opens = f", openat {args.syscall_rate:,.0f}/s" if syscalls else " (kernel source off: not root or rate 0)"
    print(f"offered for {figures['seconds']} s: k8s audit {args.k8s_rate:,.0f} events/s, "
          f"CloudTrail {args.cloudtrail_rate:,.0f} records/s{opens}; sent {figures['accepted']}")
    print(f"evaluated {figures['evaluated']} in {figures['load_s'] + figures['drain_s']:.1f} s "
          f"(drained {figures['drain_s']} s after the load): {figures['events_per_s']:,} events/s, "
          f"{figures['alerts_per_s']:,} alerts/s")
    print(f"agent CPU {figures['agent_cpu_percent']}% of one core, RSS peak under load {figures['load_peak_rss_mb']} "
          f"MiB (peak since start {figures['peak_rss_mb']} MiB), "
          f"drops {figures['drops']} (output drops {figures['output_drops']}), "
          f"webhook 503 retries {figures['webhook_503_retries']}, exit code {code}")
    if args.json:
        print(orjson.dumps(figures).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
