"""Kernel records benchmark, offline (no BPF, no root): what user space spends per record, phase by phase.

Builds the binary records the probe writes to its ring buffer (sources/kernel/wire.py layout) for openat+close
pairs, then times each phase of the kernel source's user-space path separately: `RecordDecoder.decode`, the
state's `apply` (a `KernelState` seeded from a few made-up processes, no /proc), and `Engine.process` with the
stable Falco rules on the events the live source would forward (those of an `evt.type` some rule names: the
openat, not the close). The --workload is that of bench/kernel.py: `irrelevant` opens /etc/hostname, which no
rule can match; `relevant` opens /etc/shadow as `rkhunter`, a name "Read sensitive file untrusted" excepts, so
the rule is a candidate by type and path and its guard on `proc.name` refuses the name before the condition runs
(without guards the condition is evaluated down to that exception; the run first proves it: the same open under
another name raises the rule); `mixed` alternates both; `distinct` opens another file each time, which no
rule can match. The evaluate phase runs twice, with the rules' guards
(agent.engine.rule_guards) and with an engine whose source declares no guard fields; both must raise the same
alerts (none). Each phase is timed in batches of 1,000 records (events) over --repeats runs on fresh records, and
its figure is the fastest batch, per item: on a shared machine other work preempts some batches, rarely all.
The last line gives issue 17's figure, a typical openat decoded, applied and evaluated: the openat records alone,
a batch at a time as the live source takes them (the other phases hold every record of the run in memory, which
the source never does, and costs them cache misses).

A run in which the engine evaluated fewer events than offered exits 1 with no figures (bench/accounting.py).
Prints readable lines; with --json the last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson
from accounting import BenchmarkInvalid, Tally, counted, main_guard, require_none

from agent.builtin_sources import new_engine
from agent.engine.engine import Engine
from agent.gc_tuning import settle_after_startup
from agent.syscall_prefilter import prefilter_plan
from sources.kernel.fields import SOURCE_NAME
from sources.kernel.probe_program import WATCHED_FILES_MAX
from sources.kernel.source import take_records
from sources.kernel.state import Accounts, ContainerMeta, KernelState, ProcessSnapshot, UserEntry
from sources.kernel.watched_files import scan
from sources.kernel.wire import HEADER, TYPE_IDS, RecordDecoder

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_RULES = ROOT.parent / "shared" / "reference" / "rules" / "falco_rules.yaml"
IRRELEVANT_FILE = b"/etc/hostname"
SENSITIVE_FILE = b"/etc/shadow"
RELEVANT_RULE = "Read sensitive file untrusted"
#: A name of the rule's `read_sensitive_file_binaries` exception, and one no rule excepts.
EXCEPTED_NAME = b"rkhunter"
PROBE_NAME = b"fa-bench-probe"
AT_FDCWD = (1 << 64) - 100  # as the tracepoint slot may hold it: sign-extended
O_RDONLY = 0
OPENED_FD = 3
#: The made-up host: init, a shell, and one process per program name the workloads open files as.
SHELL_PID = 200
PIDS = {b"cat": 210, EXCEPTED_NAME: 220, PROBE_NAME: 230}
#: Items per timed batch; a phase's figure is its fastest batch (per item) over every run.
BATCH = 1_000


class Workload(StrEnum):
    IRRELEVANT = "irrelevant"
    RELEVANT = "relevant"
    MIXED = "mixed"
    #: Every open of another file no rule can match (/var/tmp/f0, f1...): no memo of the engine helps.
    DISTINCT = "distinct"

    def open_of(self, index: int) -> tuple[bytes, bytes]:
        """The (program name, path) of the workload's open number `index`."""
        if self is Workload.IRRELEVANT:
            return b"cat", IRRELEVANT_FILE
        if self is Workload.RELEVANT:
            return EXCEPTED_NAME, SENSITIVE_FILE
        if self is Workload.DISTINCT:
            return b"cat", b"/var/tmp/f%d" % index
        return EXCEPTED_NAME, (IRRELEVANT_FILE, SENSITIVE_FILE)[index % 2]


class BenchHost:
    """A HostView of a few processes as /proc would describe them; it knows no container."""

    def __init__(self) -> None:
        self._snapshots = [_snapshot(1, 0, "systemd"), _snapshot(SHELL_PID, 1, "bash")]
        self._snapshots += [_snapshot(pid, SHELL_PID, comm.decode()) for comm, pid in PIDS.items()]
        self._accounts = Accounts({0: UserEntry(0, "root", "/root", "/bin/bash")}, {0: "root"})

    def processes(self) -> list[ProcessSnapshot]:
        return list(self._snapshots)

    def process(self, tid: int) -> ProcessSnapshot | None:
        return next((s for s in self._snapshots if s.tid == tid), None)

    def accounts(self, container_id: str, pid: int) -> Accounts:
        return self._accounts

    def container(self, container_id: str) -> ContainerMeta | None:
        return None

    def container_of_cgroup(self, cgroup_id: int) -> str | None:
        return ""


def _snapshot(pid: int, ppid: int, comm: str) -> ProcessSnapshot:
    # Started long before the records: "Read sensitive file trusted after startup" sees old processes.
    return ProcessSnapshot(tid=pid, pid=pid, ppid=ppid, comm=comm, exe=comm, exepath=f"/usr/bin/{comm}",
                           args=[comm], cwd="/root", start_ns=1, sid=1, pgid=pid, vpid=pid)


def raw_record(type_name: str, *, comm: bytes, args: tuple[int, ...] = (), parts: tuple[bytes, ...] = (),
               res: int = 0, ts_ns: int) -> bytes:
    """One record as the probe writes it: the fixed header, then its variable parts back to back."""
    pid = PIDS[comm]
    values = (list(args) + [0] * 6)[:6]
    lens = (list(len(p) for p in parts) + [0] * 6)[:6]
    header = HEADER.pack(ts_ns, 0, pid, pid, 0, 0, res, *values, TYPE_IDS[type_name], len(parts), *lens, comm, 0)
    return header + b"".join(parts)


def file_id(path: bytes) -> tuple[int, int]:
    """The device and inode the probe reports for an open of `path` (made up for a path that does not exist)."""
    try:
        info = os.stat(path)
    except OSError:
        return 0xFE00, 1_000_000 + len(path)
    return info.st_dev, info.st_ino


def workload_records(workload: Workload, pairs: int) -> list[bytes]:
    """`pairs` openat+close pairs of the workload, 1 µs apart."""
    raws = []
    for index in range(pairs):
        comm, path = workload.open_of(index)
        ts = 1_000_000_000 + index * 2_000
        raws.append(raw_record("openat", comm=comm, args=(AT_FDCWD, O_RDONLY, 0, *file_id(path)),
                               parts=(path + b"\0",), res=OPENED_FD, ts_ns=ts))
        raws.append(raw_record("close", comm=comm, args=(OPENED_FD,), ts_ns=ts + 1_000))
    return raws


def loaded_engine(*, guards: bool) -> Engine:
    engine = new_engine(rule_matching="first")
    if not guards:
        spec = engine.sources[SOURCE_NAME]
        engine.add_source(replace(spec, guard_fields=(), guard_paths=()))
    result = engine.load_rules_files([REFERENCE_RULES])
    if not result.successful:
        raise SystemExit(result.as_text())
    return engine


def new_state(engine: Engine | None = None) -> KernelState:
    """A seeded state; with `engine`, watching the files its rules name, as the live source does."""
    state = KernelState(BenchHost(), fetch_containers=False)
    state.seed()
    if engine is not None:
        plan = prefilter_plan(engine)
        state.watched_files = scan(plan.named, plan.named_prefixes, limit=WATCHED_FILES_MAX)
    return state


def forwarded_types(engine: Engine) -> frozenset[str] | None:
    """The event types the live source forwards to the engine: those some rule can match."""
    ruleset = engine.ruleset(SOURCE_NAME)
    return ruleset.index_values("evt.type") if ruleset is not None else frozenset()


def prove_relevance(engine: Engine) -> None:
    """The relevant open reaches RELEVANT_RULE: under a name it does not except, the same open raises it."""
    state = new_state()
    decoder = RecordDecoder()
    raw = raw_record("openat", comm=PROBE_NAME, args=(AT_FDCWD, O_RDONLY, 0), parts=(SENSITIVE_FILE + b"\0",),
                     res=OPENED_FD, ts_ns=1)
    event = state.apply(decoder.decode(raw))
    fired = [alert.rule for alert in engine.process(event)] if event is not None else []
    require_none([] if RELEVANT_RULE in fired else [f"an open of {SENSITIVE_FILE.decode()} as "
                                                    f"{PROBE_NAME.decode()} did not raise '{RELEVANT_RULE}'"])


def best_batch(items: list[Any], step: Callable[[Any], Any]) -> tuple[float, list[Any]]:
    """`step` applied to every item in order, and the seconds per item of the fastest batch of BATCH items: the
    machine's other work preempts some batches, rarely all."""
    out: list[Any] = []
    best = float("inf")
    clock = time.perf_counter
    for start in range(0, len(items), BATCH):
        batch = items[start:start + BATCH]
        began = clock()
        done = [step(item) for item in batch]
        best = min(best, (clock() - began) / len(batch))
        out += done
    return best, out


def run_once(raws: list[bytes], engine: Engine, forward: frozenset[str] | None, tally: Tally) -> dict[str, float]:
    """Seconds per record (decode, state) and per event (evaluate) over `raws`, on a fresh state; counts into
    `tally` what the engine evaluated."""
    decoder = RecordDecoder()
    state = new_state(engine)
    state.forwarded = forward  # as the live source sets it: records of other types only update the state
    alone = best_openat(raws[0::2], engine, forward)
    decode_s, records = best_batch(raws, decoder.decode)
    state_s, events = best_batch(records, state.apply)
    offered = [event for event in events if event is not None]
    taken_state = new_state(engine)
    taken_state.forwarded = forward
    take_s, taken = best_take(raws, RecordDecoder().decode, taken_state)
    if len(taken) != len(offered):
        raise BenchmarkInvalid(f"the source's path made {len(taken)} events of what decode and apply made "
                               f"{len(offered)} of")
    with counted(engine, tally, len(offered)):
        evaluate_s, _ = best_batch(offered, engine.process)
    return {"decode_s": decode_s, "state_s": state_s, "take_s": take_s, "evaluate_s": evaluate_s,
            **alone, "events": len(offered)}


def best_openat(opens: list[bytes], engine: Engine, forward: frozenset[str] | None) -> dict[str, float]:
    """Issue 17's figure: the openat records alone as the live source meets them, a batch at a time (decoded,
    applied to the state, evaluated, then dropped: the source holds no more than a batch), the fastest batch's
    seconds per openat in each phase. Each open replaces the same descriptor, which costs what opening a new one
    does."""
    decode = RecordDecoder().decode
    state = new_state(engine)
    state.forwarded = forward
    apply, process, clock = state.apply, engine.process, time.perf_counter
    decode_s = apply_s = evaluate_s = float("inf")
    with counted(engine, Tally("openat alone"), len(opens)):
        for start in range(0, len(opens), BATCH):
            batch = opens[start:start + BATCH]
            began = clock()
            records = [decode(raw) for raw in batch]
            decoded = clock()
            events = [apply(record) for record in records]
            applied = clock()
            for event in events:
                if event is not None:  # every openat is forwarded; one that is not goes uncounted, and fails the run
                    process(event)
            evaluated = clock()
            decode_s = min(decode_s, (decoded - began) / len(batch))
            apply_s = min(apply_s, (applied - decoded) / len(batch))
            evaluate_s = min(evaluate_s, (evaluated - applied) / len(batch))
    return {"decode_open_s": decode_s, "state_open_s": apply_s, "evaluate_open_s": evaluate_s}


def best_take(raws: list[bytes], decode: Callable[[bytes], Any], state: KernelState) -> tuple[float, list[Any]]:
    """The live source's path (take_records: a close no rule reads is applied undecoded), per record of the
    fastest batch, and the events it made."""
    counts: dict[str, int] = {"decode_errors": 0, "state_errors": 0}
    out: list[Any] = []
    best = float("inf")
    for start in range(0, len(raws), BATCH):
        batch = raws[start:start + BATCH]
        began = time.perf_counter()
        out += take_records(batch, decode, state, counts)
        best = min(best, (time.perf_counter() - began) / len(batch))
    if counts["decode_errors"] or counts["state_errors"]:
        raise BenchmarkInvalid(f"the source's path refused records: {counts}")
    return best, out


def measure(raws: list[bytes], engine: Engine, repeats: int, phase: str) -> tuple[dict[str, float], Tally]:
    forward = forwarded_types(engine)
    tally = Tally(phase)
    runs = [run_once(raws, engine, forward, tally) for _ in range(repeats)]
    best = {key: min(run[key] for run in runs)
            for key in ("decode_s", "state_s", "take_s", "evaluate_s", "decode_open_s", "state_open_s",
                        "evaluate_open_s")}
    best["events"] = runs[0]["events"]
    return best, tally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=[w.value for w in Workload], default=Workload.MIXED.value)
    parser.add_argument("--pairs", type=int, default=50_000, help="openat+close pairs per run (default 50000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per phase; the best counts (default 3)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of all figures")
    args = parser.parse_args()
    if not REFERENCE_RULES.is_file():
        print(f"reference rules not found at {REFERENCE_RULES}", file=sys.stderr)
        return 2
    workload = Workload(args.workload)
    guarded, unguarded = loaded_engine(guards=True), loaded_engine(guards=False)
    for engine in (guarded, unguarded):
        prove_relevance(engine)
    raws = workload_records(workload, args.pairs)
    settle_after_startup()
    with_guards, tally = measure(raws, guarded, args.repeats, "guarded")
    without_guards, plain_tally = measure(raws, unguarded, args.repeats, "unguarded")
    if tally.alerts != plain_tally.alerts:
        raise BenchmarkInvalid(f"guards changed the alerts: {tally.alerts} with, {plain_tally.alerts} without")
    records, opens = len(raws), int(with_guards["events"])
    us = 1e6
    per_pair = records / opens  # records per openat: the close comes with it
    figures: dict[str, Any] = {
        "workload": workload.value,
        "records": records,
        "openat_events": opens,
        "decode_us_per_record": round(with_guards["decode_s"] * us, 3),
        "state_us_per_record": round(with_guards["state_s"] * us, 3),
        "take_us_per_record": round(with_guards["take_s"] * us, 3),
        "evaluate_us_per_openat": round(with_guards["evaluate_s"] * us, 3),
        "evaluate_unguarded_us_per_openat": round(without_guards["evaluate_s"] * us, 3),
        "evaluate_unguarded_vs_guarded": round(without_guards["evaluate_s"] / with_guards["evaluate_s"], 2),
        "openat_decode_us": round(with_guards["decode_open_s"] * us, 3),
        "openat_state_us": round(with_guards["state_open_s"] * us, 3),
        "openat_evaluate_us": round(with_guards["evaluate_open_s"] * us, 3),
        "openat_us": round((with_guards["decode_open_s"] + with_guards["state_open_s"]
                            + with_guards["evaluate_open_s"]) * us, 3),
        "total_us_per_openat": round(((with_guards["decode_s"] + with_guards["state_s"]) * per_pair
                                      + with_guards["evaluate_s"]) * us, 3),
        "source_us_per_openat": round((with_guards["take_s"] * per_pair + with_guards["evaluate_s"]) * us, 3),
        **tally.as_figures(),
        **plain_tally.as_figures(),
    }
    print(f"{workload.value}: {records:,} records ({opens:,} openat evaluated) | decode "
          f"{figures['decode_us_per_record']} µs/record | state {figures['state_us_per_record']} µs/record | "
          f"evaluate {figures['evaluate_us_per_openat']} µs/openat with guards, "
          f"{figures['evaluate_unguarded_us_per_openat']} without ({figures['evaluate_unguarded_vs_guarded']}x) | "
          f"an openat and its close decoded and applied, the openat evaluated, in {figures['total_us_per_openat']} µs"
          f" | as the source takes them (closes no rule reads undecoded): {figures['take_us_per_record']} "
          f"µs/record, {figures['source_us_per_openat']} µs per openat evaluated with its close")
    print(f"a typical openat alone: decoded {figures['openat_decode_us']} + applied {figures['openat_state_us']} + "
          f"evaluated {figures['openat_evaluate_us']} = {figures['openat_us']} µs, a batch at a time")
    if args.json:
        print(orjson.dumps(figures).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
