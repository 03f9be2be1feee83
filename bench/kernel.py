"""Kernel source benchmark: the real agent (kernel source only, stable Falco rules) under a syscall load.

A load generator process does openat+close pairs of /etc/hostname at a set rate (one openat = one offered
event the rules can use; the close is state-only) and, alongside, execve of /bin/true at a low fixed rate;
no alert is expected of either. For each offered rate (default 10k, 50k, 100k, 200k openat/s) it prints what
the agent's kernel source delivered to user space, what the kernel dropped (ring buffer full), the agent's
CPU, and alerts. The generator's unthrottled speed is measured without and with the agent: their ratio is the
overhead the agent puts on the traced workload. Needs root and BCC. With --json the last line is one JSON
object holding every figure.

Losses at high rates are what this measures, so a phase need not evaluate all it offered, but must account
for it (bench/agent_load.py, SyscallAccount), from the agent's /metrics once the engine evaluated an open of
a fence file this process makes after the generator exits. Two correlations that never fire, run beside the
rules, count the generator's openat events the engine evaluated (by its process name) and the fence's; they
add some 10-20% to the engine's time per openat event. A phase without loss must have evaluated every openat;
with losses, evaluated + lost must cover the openat calls, and records delivered + lost the pairs' syscalls
(the kernel counts losses for the whole machine: bounds, then). A phase that does not add up, or whose
records failed to decode, exits 1 with no figures (bench/accounting.py).
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
from accounting import main_guard, require_none
from agent_load import Fence, SyscallAccount, drain
from process_stats import Samples, cpu_s, growth, memory_mb
from running_agent import RunningAgent

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_RULES = ROOT.parent / "shared" / "reference" / "rules" / "falco_rules.yaml"
#: The generator's process name (its command runs through a link of that name to the interpreter), by which the
#: agent tells its openat calls from other processes'.
_GENERATOR_NAME = "fa-bench-gen"

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
print(done, done / (time.perf_counter() - start), execs)
"""


def _generate(python: Path, rate: float, seconds: float, exec_rate: float) -> tuple[int, float, int]:
    """Run the load generator with `python`: the openat calls it made, its achieved openat/s and how many execs
    it did."""
    out = subprocess.run([str(python), "-c", _GENERATOR, str(rate), str(seconds), str(exec_rate)],
                         capture_output=True, text=True, check=True, timeout=seconds + 60)
    opens, speed, execs = out.stdout.split()
    return int(opens), float(speed), int(execs)


def _kernel_started(samples: Samples) -> bool:
    return any(name == "falco_agent_source_records" and labels.get("source") == "kernel"
               for name, labels, _value in samples)


def _phase(agent: RunningAgent, fence: Fence, python: Path, rate: float, seconds: float,
           exec_rate: float) -> dict[str, Any]:
    """One offered rate, counted from the agent's /metrics once it drained the load; BenchmarkInvalid when the
    phase does not add up."""
    phase = f"{rate:,.0f}/s"
    before, cpu_before, started = agent.metrics(), cpu_s(agent.proc.pid), time.monotonic()
    opens, achieved, execs = _generate(python, rate, seconds, exec_rate)
    drained = drain(agent, lambda samples: [SyscallAccount.between(phase, before, samples, opens)], fence=fence)
    cpu_after, wall = cpu_s(agent.proc.pid), time.monotonic() - started
    account = SyscallAccount.between(phase, before, drained.final, opens)
    require_none(account.problems())
    delivered, lost = account.records, account.lost
    return {
        "offered_openat_per_s": round(rate), "achieved_openat_per_s": round(achieved), "execs": execs,
        # Over the load and its drain, the machine's other syscalls included.
        "records_delivered_per_s": round(growth(before, drained.samples, "falco_agent_source_records",
                                                source="kernel") / (drained.at - started)),
        "records_lost": lost, "lost_ratio": round(lost / (delivered + lost), 4) if delivered + lost else 0.0,
        # All syscall events, the machine's included; `evaluated`: the generator's openat events.
        "events_to_engine": account.handed, "events_evaluated": account.events,
        "offered_events": opens, "evaluated": account.evaluated, "records_delivered": delivered,
        "agent_cpu_percent": round(100 * (cpu_after - cpu_before) / wall, 1),
        "alerts": account.alerts,
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

    state = Path(tempfile.mkdtemp(prefix="falco-agent-bench-"))
    python = state / _GENERATOR_NAME
    python.symlink_to(os.path.realpath(sys.executable))
    _, baseline, _ = _generate(python, 0, args.seconds, 0)
    print(f"generator alone, unthrottled: {baseline:,.0f} openat/s")
    fence, counter = Fence(state / "fence"), state / "load-counter.yaml"
    counter.write_text(fence.rules(f"fd.name = /etc/hostname and proc.name = {_GENERATOR_NAME}"))
    agent = RunningAgent([args.rules, counter], state=state,
                         options=["sources.k8s_audit.enabled=false", "sources.aws_cloudtrail.enabled=false"],
                         ready=_kernel_started)
    try:
        phases = []
        for rate in rates:
            phase = _phase(agent, fence, python, rate, args.seconds, args.exec_rate)
            phases.append(phase)
            print(f"offered {rate:>9,.0f}/s  achieved {phase['achieved_openat_per_s']:>9,}/s  "
                  f"delivered {phase['records_delivered_per_s']:>9,} records/s  lost {phase['records_lost']:>8,} "
                  f"({phase['lost_ratio']:.2%})  agent CPU {phase['agent_cpu_percent']:>5}%  alerts {phase['alerts']}")
        _, with_agent, _ = _generate(python, 0, args.seconds, 0)
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
    sys.exit(main_guard(main))
