"""Kernel source benchmark: the real agent (kernel source only, stable Falco rules) under a syscall load, with the
kernel prefilter off (the baseline) and on, in the same run.

A load generator process does read-only openat+close pairs at a set rate (one openat = one offered event;
the close is state-only) and, alongside, execve of /bin/true at a low fixed rate; no alert is expected of
either. What it opens is the --workload (`Workload`): `irrelevant` opens /etc/hostname, which no loaded rule
can match; `relevant` opens /etc/shadow under a program name that "Read sensitive file untrusted" excepts, so
each open reaches the engine with that rule among its candidates by type and path, and the rule's guard on
`proc.name` refuses the excepted name before its condition runs (a run first proves it: the same open
under another name must raise the rule's alert); `mixed` alternates both files under the excepted name, half
each. For each offered rate (default 10k, 50k, 100k, 200k openat/s) it prints what the agent's kernel source
delivered to user space, the openat records the prefilter kept in the kernel, what the kernel dropped (ring
buffer full), the agent's CPU, and alerts. The generator's unthrottled speed (the best of three runs) is measured
without and with the agent: their ratio is the overhead the agent puts on the traced workload. Its floor, measured in
the same run, is the generator's speed with empty programs on the openat and close exit tracepoints: what any
tracepoint probe of these syscalls costs them before it does any work (the agent's probe, given BTF, attaches these
two and no enter program). Needs root and BCC. With --json the last line is one JSON object holding every figure.

Losses at high rates are what this measures, so a phase need not evaluate all it offered, but must account
for it (bench/agent_load.py, SyscallAccount), from the agent's /metrics once the engine evaluated an open of
a fence file this process makes after the generator exits. Correlations that never fire, run beside the rules,
count the generator's openat events the engine evaluated (by its process name and file) and the fence's; they
add some 10-20% to the engine's time per openat event. With the prefilter on, they count only the opens of the
sensitive file (a counter naming /etc/hostname would make the prefilter pass those opens too); the others must
be covered by the kernel's filtered-openat counter. A phase without loss must have evaluated or filtered every
openat; with losses, evaluated + lost + filtered must cover the openat calls, and records delivered + lost +
filtered the pairs' syscalls (the kernel counts for the whole machine: bounds, then). A phase that does not
add up, or whose records failed to decode, exits 1 with no figures (bench/accounting.py).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson
from accounting import BenchmarkInvalid, main_guard, require_none
from agent_load import RULE_ALERTS, Fence, SyscallAccount, drain
from process_stats import BpfStats, Samples, bpf_run_ns, cpu_s, growth, memory_mb
from running_agent import RunningAgent

from sources.kernel import bcc_setup
from sources.kernel.probe_program import EXIT_ARGS

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_RULES = ROOT.parent / "shared" / "reference" / "rules" / "falco_rules.yaml"
#: A file no loaded rule can match when opened read-only.
_IRRELEVANT_FILE = "/etc/hostname"
#: A file of the stable rules' `sensitive_file_names`: its reads reach the sensitive-file rules.
_SENSITIVE_FILE = "/etc/shadow"
#: The stable rule the relevant workload reaches, and a program name of its `read_sensitive_file_binaries`
#: exception, under which its reads end false.
_RELEVANT_RULE = "Read sensitive file untrusted"
_EXCEPTED_NAME = "rkhunter"
#: The name of a program no rule excepts: its reads of the sensitive file raise `_RELEVANT_RULE`.
_PROBE_NAME = "fa-bench-probe"
_PROBE_TIMEOUT_S = 30.0


class Workload(StrEnum):
    IRRELEVANT = "irrelevant"
    RELEVANT = "relevant"
    MIXED = "mixed"


@dataclass(frozen=True)
class LoadShape:
    """The generator's process name (its command runs through a link of that name to the interpreter), by which
    the agent tells its openat calls from other processes', and the files it opens in turn.

    Only the opens of `counted` files (those a rule can match, which leave the kernel) are counted as they are
    evaluated: a counting correlation on the others would make the prefilter pass them too. The others are
    accounted by the kernel's filtered counter."""

    name: str
    files: tuple[str, ...]
    counted: tuple[str, ...]

    def condition(self, *, prefilter: bool) -> str | None:
        """What the load counter counts: every open without a prefilter, else those of the `counted` files."""
        counted = self.counted if prefilter else self.files
        if not counted:
            return None
        return f"proc.name = {self.name} and fd.name in ({', '.join(counted)})"


SHAPES = {
    Workload.IRRELEVANT: LoadShape("fa-bench-gen", (_IRRELEVANT_FILE,), ()),
    Workload.RELEVANT: LoadShape(_EXCEPTED_NAME, (_SENSITIVE_FILE,), (_SENSITIVE_FILE,)),
    Workload.MIXED: LoadShape(_EXCEPTED_NAME, (_IRRELEVANT_FILE, _SENSITIVE_FILE), (_SENSITIVE_FILE,)),
}

_GENERATOR = r"""
import os, subprocess, sys, time
rate, seconds, exec_rate = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
files = sys.argv[4].split(",")
start = time.perf_counter()
done = execs = 0
next_exec = start
batch = 200
# Whole turns through the files in each batch: every file gets its share, at no cost per open.
cycle = files * (batch // len(files))
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
    for path in cycle:
        os.close(os.open(path, os.O_RDONLY))
    done += len(cycle)
print(done, done / (time.perf_counter() - start), execs)
"""


def _generate(python: Path, files: tuple[str, ...], rate: float, seconds: float,
              exec_rate: float) -> tuple[int, float, int]:
    """Run the load generator with `python` on `files`: the openat calls it made, its achieved openat/s and how
    many execs it did."""
    out = subprocess.run([str(python), "-c", _GENERATOR, str(rate), str(seconds), str(exec_rate), ",".join(files)],
                         capture_output=True, text=True, check=True, timeout=seconds + 60)
    opens, speed, execs = out.stdout.split()
    return int(opens), float(speed), int(execs)


#: Unthrottled runs per speed measured: the best of them, since other work on the machine only ever slows one.
_SPEED_RUNS = 3


def _unthrottled(python: Path, files: tuple[str, ...], seconds: float) -> float:
    """The generator's best openat/s over _SPEED_RUNS unthrottled runs."""
    return max(_generate(python, files, 0, seconds, 0)[1] for _ in range(_SPEED_RUNS))


#: The syscalls of the generator's loop (`os.open`, `os.close`): the probe, given BTF, traces both at their exit alone.
_LOAD_SYSCALLS = ("openat", "close")
assert set(_LOAD_SYSCALLS) <= set(EXIT_ARGS)
#: Programs that do nothing, on the tracepoints the load's syscalls reach: the floor of any probe's cost to them.
_EMPTY_PROBE = "".join(f"TRACEPOINT_PROBE(syscalls, sys_exit_{name}) {{ return 0; }}\n" for name in _LOAD_SYSCALLS)


def _with_empty_probe(python: Path, files: tuple[str, ...], seconds: float) -> float:
    """The generator's best openat/s with _EMPTY_PROBE attached (and nothing else of this benchmark's running)."""
    bcc, _headers, _available = bcc_setup.prepare()
    probe = bcc.BPF(text=_EMPTY_PROBE.encode(), cflags=["-w"])
    try:
        return _unthrottled(python, files, seconds)
    finally:
        probe.cleanup()


def _kernel_started(samples: Samples) -> bool:
    return any(name == "falco_agent_source_records" and labels.get("source") == "kernel"
               for name, labels, _value in samples)


def _link(folder: Path, name: str) -> Path:
    """A link named `name` to this interpreter: what runs through it has that process name."""
    link = folder / name
    link.symlink_to(os.path.realpath(sys.executable))
    return link


def _prove_relevant(agent: RunningAgent, folder: Path) -> int:
    """Open the sensitive file under a name no rule excepts and wait for `_RELEVANT_RULE` to alert: the rule is a
    candidate for such opens, and only the exception the workload's program name meets keeps it silent. The alerts
    it raised;
    BenchmarkInvalid when none came."""
    def alerts(samples: Samples) -> int:
        return growth(before, samples, RULE_ALERTS, rule=_RELEVANT_RULE)

    before = agent.metrics()
    subprocess.run([str(_link(folder, _PROBE_NAME)), "-c", f"import os; os.close(os.open({_SENSITIVE_FILE!r}, 0))"],
                   check=True, timeout=30)
    found = agent.wait_for(lambda samples: alerts(samples) > 0, _PROBE_TIMEOUT_S)
    if found is None:
        raise BenchmarkInvalid(f"a read of {_SENSITIVE_FILE} by {_PROBE_NAME} raised no '{_RELEVANT_RULE}' alert "
                               f"within {_PROBE_TIMEOUT_S:.0f}s: the relevant workload would not reach the rule")
    return alerts(found)


def _phase(agent: RunningAgent, fence: Fence, python: Path, files: tuple[str, ...], rate: float, seconds: float,
           exec_rate: float) -> dict[str, Any]:
    """One offered rate, counted from the agent's /metrics once it drained the load; BenchmarkInvalid when the
    phase does not add up."""
    phase = f"{rate:,.0f}/s"
    before, cpu_before, started = agent.metrics(), cpu_s(agent.proc.pid), time.monotonic()
    bpf_before = bpf_run_ns(agent.proc.pid)
    opens, achieved, execs = _generate(python, files, rate, seconds, exec_rate)
    bpf_ns = bpf_run_ns(agent.proc.pid) - bpf_before
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
        # Records a kernel prefilter kept in the kernel, over the load and its drain (the machine's included).
        "filtered_in_kernel": account.filtered, "openat_filtered_in_kernel": account.filtered_opens,
        "agent_cpu_percent": round(100 * (cpu_after - cpu_before) / wall, 1),
        # Time in the probe's programs (every traced syscall of the machine) per openat+close pair of the load.
        "bpf_ns_per_open_close": round(bpf_ns / opens) if opens else 0,
        "alerts": account.alerts,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="10000,50000,100000,200000", help="offered openat/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each phase")
    parser.add_argument("--exec-rate", type=float, default=50.0, help="execve of /bin/true per second alongside")
    parser.add_argument("--rules", type=Path, default=REFERENCE_RULES, help="rules file (default: stable Falco rules)")
    parser.add_argument("--workload", type=Workload, choices=list(Workload), default=Workload.IRRELEVANT,
                        help="what the generator opens: a file no rule matches, a sensitive file by a program the "
                             "rules except, or both (default: irrelevant)")
    parser.add_argument("--prefilter", choices=("off", "on", "both"), default="both",
                        help="run the phases with the kernel prefilter off, on, or off then on (default: both, the "
                             "baseline first)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of figures")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/kernel.py needs root (the kernel source loads eBPF programs)", file=sys.stderr)
        return 2

    workload: Workload = args.workload
    shape = SHAPES[workload]
    settings = {"off": (False,), "on": (True,), "both": (False, True)}[args.prefilter]
    state = Path(tempfile.mkdtemp(prefix="falco-agent-bench-"))
    python = _link(state, shape.name)
    baseline = _unthrottled(python, shape.files, args.seconds)
    print(f"{workload} workload ({shape.name} opening {', '.join(shape.files)}), generator alone, unthrottled: "
          f"{baseline:,.0f} openat/s")
    with_empty_probe = _with_empty_probe(python, shape.files, args.seconds)
    floor = baseline / with_empty_probe
    print(f"  with empty programs on the openat and close exit tracepoints: {with_empty_probe:,.0f} openat/s "
          f"(slowdown x{floor:.2f}, the floor of any tracepoint probe)")
    runs = {("on" if prefilter else "off"): _run(args, shape, state, python, prefilter=prefilter, alone=baseline,
                                                 with_empty_probe=with_empty_probe)
            for prefilter in settings}
    if "on" in runs and "off" in runs:
        on, off = runs["on"], runs["off"]
        print(f"prefilter on against off: slowdown x{on['generator_slowdown']:.2f} against "
              f"x{off['generator_slowdown']:.2f}; per phase, agent CPU "
              + ", ".join(f"{a['agent_cpu_percent']}% against {b['agent_cpu_percent']}%"
                          for a, b in zip(on["phases"], off["phases"], strict=True)))
    if args.json:
        print(orjson.dumps({"workload": workload, "generator_name": shape.name, "opened_files": shape.files,
                            "generator_alone_per_s": round(baseline),
                            "generator_with_empty_probe_per_s": round(with_empty_probe),
                            "empty_probe_slowdown": round(floor, 3), "runs": runs}).decode())
    return 0


def _run(args: argparse.Namespace, shape: LoadShape, state: Path, python: Path, *, prefilter: bool, alone: float,
         with_empty_probe: float) -> dict[str, Any]:
    """The phases with the kernel prefilter on or off, in a fresh agent, and the generator's speed with it against
    its speed `alone` and `with_empty_probe`."""
    folder = state / ("prefilter-on" if prefilter else "prefilter-off")
    folder.mkdir()
    fence, counter = Fence(folder / "fence"), folder / "load-counter.yaml"
    counter.write_text(fence.rules(shape.condition(prefilter=prefilter)))
    agent = RunningAgent([args.rules, counter], state=folder,
                         options=["sources.k8s_audit.enabled=false", "sources.aws_cloudtrail.enabled=false",
                                  f"sources.kernel.prefilter={str(prefilter).lower()}"],
                         ready=_kernel_started)
    print(f"prefilter {'on' if prefilter else 'off'}:")
    try:
        exported = agent.metrics()
        filtering = any(name == "falco_agent_source_kernel_prefilter_syscalls" and value > 0
                        for name, _labels, value in exported)
        if filtering != prefilter:
            raise BenchmarkInvalid(f"the agent's kernel prefilter is {'on' if filtering else 'off'}, asked "
                                   f"{'on' if prefilter else 'off'} (falco_agent_source_kernel_prefilter_syscalls)")
        probe_alerts = None if shape.files == SHAPES[Workload.IRRELEVANT].files else _prove_relevant(agent, folder)
        if probe_alerts is not None:
            print(f"  relevance: a read of {_SENSITIVE_FILE} by {_PROBE_NAME} raised '{_RELEVANT_RULE}' "
                  f"({probe_alerts} alert); the workload's {shape.name} is its exception")
        phases = []
        for rate in [float(r) for r in args.rates.split(",")]:
            with BpfStats():
                phase = _phase(agent, fence, python, shape.files, rate, args.seconds, args.exec_rate)
            phases.append(phase)
            print(f"  offered {rate:>9,.0f}/s  achieved {phase['achieved_openat_per_s']:>9,}/s  "
                  f"delivered {phase['records_delivered_per_s']:>9,} records/s  lost {phase['records_lost']:>8,} "
                  f"({phase['lost_ratio']:.2%})  openat filtered in kernel {phase['openat_filtered_in_kernel']:>8,}  "
                  f"agent CPU {phase['agent_cpu_percent']:>5}%  in BPF {phase['bpf_ns_per_open_close']:>5} ns/pair  "
                  f"alerts {phase['alerts']}")
        # BPF run-time accounting off: it costs the traced syscalls time of its own, which the agent does not.
        with_agent = _unthrottled(python, shape.files, args.seconds)
        peak_rss = memory_mb(agent.proc.pid)
    finally:
        agent.stop()
    overhead = alone / with_agent if with_agent else float("inf")
    beyond_floor = with_empty_probe / with_agent if with_agent else float("inf")
    print(f"  generator with the agent, unthrottled: {with_agent:,.0f} openat/s "
          f"(slowdown x{overhead:.2f} against {alone:,.0f} alone, x{beyond_floor:.2f} against empty programs); "
          f"agent peak RSS {peak_rss:.0f} MB")
    return {"kernel_prefilter": prefilter, "relevance_probe_alerts": probe_alerts, "phases": phases,
            "generator_with_agent_per_s": round(with_agent), "generator_slowdown": round(overhead, 3),
            "slowdown_beyond_empty_probe": round(beyond_floor, 3), "agent_peak_rss_mb": round(peak_rss, 1)}


if __name__ == "__main__":
    sys.exit(main_guard(main))
