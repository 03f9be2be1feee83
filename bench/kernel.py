"""Kernel source benchmark: the real agent (kernel source only, stable Falco rules) under a syscall load.

A load generator process does openat+close pairs at a set rate (one openat = one offered event the
rules can use; the close is state-only) and, alongside, execve of /bin/true at a low fixed rate.
For each offered rate (default 10k, 50k, 100k, 200k openat/s) it prints what the agent's kernel
source delivered to user space, what the kernel dropped (ring buffer full), the agent's CPU, and
alerts. The generator's unthrottled speed is measured without and with the agent: their ratio is
the overhead the agent puts on the traced workload. Needs root and BCC. With --json the last line
is one JSON object holding every figure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from process_stats import Samples, cpu_s, memory_mb, total
from running_agent import RunningAgent

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_RULES = ROOT.parent / "shared" / "reference" / "rules" / "falco_rules.yaml"

_GENERATOR = r"""
import os, subprocess, sys, time
rate, seconds, exec_rate = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
path = "/etc/hostname"
start = time.perf_counter()
done = execs = 0
next_exec = start
batch = 200
while True:
    now = time.perf_counter()
    elapsed = now - start
    if elapsed >= seconds:
        break
    if exec_rate and now >= next_exec:
        subprocess.run(["/bin/true"])
        execs += 1
        next_exec += 1.0 / exec_rate
    if rate and done >= rate * elapsed:
        time.sleep(min(0.001, max(0.0, done / rate - elapsed)))
        continue
    for _ in range(batch):
        os.close(os.open(path, os.O_RDONLY))
    done += batch
print(done / (time.perf_counter() - start), execs)
"""


def _generate(rate: float, seconds: float, exec_rate: float) -> tuple[float, int]:
    """Run the load generator; its achieved openat/s and how many execs it did."""
    out = subprocess.run([sys.executable, "-c", _GENERATOR, str(rate), str(seconds), str(exec_rate)],
                         capture_output=True, text=True, check=True, timeout=seconds + 60)
    speed, execs = out.stdout.split()
    return float(speed), int(execs)


def _kernel_figures(agent: RunningAgent) -> dict[str, float]:
    """Kernel source counters and the alert total from the agent's /metrics."""
    samples = agent.metrics()
    figures = {name.removeprefix("falco_agent_source_"): value for name, labels, value in samples
               if name.startswith("falco_agent_source_") and labels.get("source") == "kernel"}
    figures["alerts"] = total(samples, "falco_agent_alerts_total")
    return figures


def _kernel_started(samples: Samples) -> bool:
    return any(name == "falco_agent_source_records" and labels.get("source") == "kernel"
               for name, labels, _value in samples)


def _phase(agent: RunningAgent, rate: float, seconds: float, exec_rate: float) -> dict[str, Any]:
    before, cpu_before, started = _kernel_figures(agent), cpu_s(agent.proc.pid), time.monotonic()
    achieved, execs = _generate(rate, seconds, exec_rate)
    time.sleep(1.5)  # let the agent drain what is still in the ring buffer
    after, cpu_after, wall = _kernel_figures(agent), cpu_s(agent.proc.pid), time.monotonic() - started
    delivered = after.get("records", 0) - before.get("records", 0)
    lost = after.get("kernel_lost", 0) - before.get("kernel_lost", 0)
    offered = achieved * seconds
    return {
        "offered_openat_per_s": round(rate), "achieved_openat_per_s": round(achieved), "execs": execs,
        "records_delivered_per_s": round(delivered / seconds), "records_lost": int(lost),
        "lost_ratio": round(lost / (delivered + lost), 4) if delivered + lost else 0.0,
        "events_to_engine": int(after.get("events", 0) - before.get("events", 0)),
        "offered_events": int(offered),
        "agent_cpu_percent": round(100 * (cpu_after - cpu_before) / wall, 1),
        "alerts": int(after.get("alerts", 0) - before.get("alerts", 0)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="10000,50000,100000,200000", help="offered openat/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each phase")
    parser.add_argument("--exec-rate", type=float, default=50.0, help="execve of /bin/true per second alongside")
    parser.add_argument("--rules", type=Path, default=REFERENCE_RULES, help="rules file (default: stable Falco rules)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of figures")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/kernel.py needs root (the kernel source loads eBPF programs)", file=sys.stderr)
        return 2
    rates = [float(r) for r in args.rates.split(",")]

    baseline, _ = _generate(0, args.seconds, 0)
    print(f"generator alone, unthrottled: {baseline:,.0f} openat/s")
    agent = RunningAgent([args.rules], state=Path(tempfile.mkdtemp(prefix="falco-agent-bench-")),
                         options=["sources.k8s_audit.enabled=false", "sources.aws_cloudtrail.enabled=false"],
                         ready=_kernel_started)
    try:
        phases = []
        for rate in rates:
            phase = _phase(agent, rate, args.seconds, args.exec_rate)
            phases.append(phase)
            print(f"offered {rate:>9,.0f}/s  achieved {phase['achieved_openat_per_s']:>9,}/s  "
                  f"delivered {phase['records_delivered_per_s']:>9,} records/s  lost {phase['records_lost']:>8,} "
                  f"({phase['lost_ratio']:.2%})  agent CPU {phase['agent_cpu_percent']:>5}%  alerts {phase['alerts']}")
        with_agent, _ = _generate(0, args.seconds, 0)
        peak_rss = memory_mb(agent.proc.pid)
    finally:
        agent.stop()
    overhead = baseline / with_agent if with_agent else float("inf")
    print(f"generator with the agent, unthrottled: {with_agent:,.0f} openat/s "
          f"(slowdown x{overhead:.2f} against {baseline:,.0f} alone); agent peak RSS {peak_rss:.0f} MB")
    if args.json:
        print(orjson.dumps({"phases": phases, "generator_alone_per_s": round(baseline),
                            "generator_with_agent_per_s": round(with_agent), "generator_slowdown": round(overhead, 3),
                            "agent_peak_rss_mb": round(peak_rss, 1)}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
