"""The load bench/whole_agent.py puts on a running agent: a paced sender per source, each on its own thread.

A sender offers its events at a set rate in units (a POSTed batch, a dropped file) and accounts for them from two
scrapes of the agent's /metrics, one before the load and one after: what it offered against what the engine
evaluated for its source (bench/accounting.py). `SyscallAccount` does that for openat+close pairs, here from a
thread, in bench/kernel.py from a generator process; the agent then runs `Fence.rules` too.
"""

from __future__ import annotations

import gzip
import http.client
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
from accounting import Tally
from process_stats import Samples, growth
from running_agent import RunningAgent

_RETRY_WAIT_S = 0.01
_DRAIN_TIMEOUT_S = 60.0
#: The kernel source reads the kernel's loss counters once a second: a scrape this long after a syscall load
#: ended holds all its losses.
_KERNEL_COUNTERS_S = 1.2
EVALUATED = "falco_agent_events_evaluated_total"
RULE_ALERTS = "falco_agent_rule_alerts_total"
#: The correlations of `Fence.rules`.
LOAD_COUNTER = "Benchmark load openat"
FENCE_COUNTER = "Benchmark fence openat"
#: Name prefix of the kernel source's counters of records its prefilter kept in the kernel (per syscall, say
#: `..._openat`); the kernel source has no prefilter while no such counter is exported.
KERNEL_FILTERED = "falco_agent_source_kernel_filtered"


def kernel_filtered(samples: Samples, syscall: str = "") -> int | None:
    """Records the kernel source's prefilter kept in the kernel so far, of `syscall` or all syscalls together;
    None when the source exports no such counter (it has no prefilter)."""
    wanted = f"{KERNEL_FILTERED}_{syscall}" if syscall else KERNEL_FILTERED
    counts = [value for name, labels, value in samples
              if name.startswith(wanted) and labels.get("source") == "kernel"]
    return int(sum(counts)) if counts else None


def _counting(name: str, condition: str) -> str:
    """Rules text of a correlation whose step matches count the openat events matching `condition` the engine
    evaluated. Its key, fd.sip, is never set on a file's open: nothing is kept and it never fires."""
    return f"""
- correlation: {name}
  desc: Counts the benchmark's openat events in its step matches; never fires.
  threshold:
    source: syscall
    condition: evt.type = openat and {condition}
    key: fd.sip
    count: 1000000
    window: 1ms
    lateness: 1ms
  output: "benchmark (%fd.sip)"
  priority: EMERGENCY
"""


class Fence:
    """A file this process opens, once a syscall load ended, until the engine has evaluated one of its opens: the
    ring buffer and the engine queue keep order, so by then every record the load made was read or counted lost.

    The agent must run `rules`: correlations that never fire and count, in their step matches, the load's openat
    events and the fence's.
    """

    def __init__(self, path: Path) -> None:
        path.write_text("fence\n")
        self._path = str(path)

    def rules(self, load: str | None) -> str:
        """`load`: the condition that tells the load's openat events from other processes' (None: the load's opens
        are not counted, as they are meant to stay in the kernel)."""
        counted = _counting(LOAD_COUNTER, load) if load is not None else ""
        return counted + _counting(FENCE_COUNTER, f'fd.name = "{self._path}"')

    def open(self) -> None:
        os.close(os.open(self._path, os.O_RDONLY))


class Account(Protocol):
    """What a load offered and what became of it, between two scrapes."""

    def settled(self) -> bool:
        """The agent has done all it will do with what it took of the load."""
        ...

    def problems(self) -> list[str]: ...

    def as_figures(self) -> dict[str, int]: ...


class Load(Protocol):
    source: str
    #: Units the agent refused and got again.
    retries: int

    @property
    def unit_events(self) -> int: ...

    def send(self, index: int) -> None:
        """Offer unit `index` (of `unit_events` events) and wait until the agent took it."""
        ...

    def account(self, before: Samples, after: Samples) -> Account:
        """What was offered so far against what the agent did between the scrapes `before` and `after`."""
        ...


def source_tally(source: str, before: Samples, after: Samples, offered: int, samples: int) -> Tally:
    """`offered` events, cycling through `samples` sample events, against what the engine evaluated for `source`
    and the alerts it raised. The audit and CloudTrail sample sets are known to alert (Falco's regression traces,
    Stratus attack logs), a part of them need not: alerts are due once every sample was offered."""
    return Tally(source, offered=offered, evaluated=growth(before, after, EVALUATED, source=source),
                 alerts=growth(before, after, RULE_ALERTS, source=source), expect_alerts=offered >= samples)


@dataclass(frozen=True)
class QueuedAccount:
    """A load of which the agent queues every event it takes: settled once it evaluated as many as it took."""

    tally: Tally
    #: Events the agent said it took, by its answers or its metrics; None while it has not yet taken every unit.
    taken: int | None

    def settled(self) -> bool:
        return self.taken is not None and self.tally.evaluated >= self.taken

    def problems(self) -> list[str]:
        return self.tally.problems()

    def as_figures(self) -> dict[str, int]:
        return self.tally.as_figures()


@dataclass(frozen=True)
class Drained:
    """The agent done with a load: when, and its /metrics then; `final` holds every loss the kernel counted (the
    same scrape when there was no syscall load)."""

    at: float
    samples: Samples
    final: Samples


def drain(agent: RunningAgent, accounts: Callable[[Samples], list[Account]], *, fence: Fence | None) -> Drained:
    """Scrape until the `accounts` of the loads that just ended all settled (or the drain timeout passed), opening
    the `fence` of a syscall load meanwhile; then, with a fence, once more when the agent has read the kernel's
    loss counters since."""
    def settled(samples: Samples) -> bool:
        if all(account.settled() for account in accounts(samples)):
            return True
        if fence is not None:
            fence.open()  # again: an open may be lost while the ring buffer is full
        return False

    ended = time.monotonic()
    if fence is not None:
        fence.open()
    found = agent.wait_for(settled, _DRAIN_TIMEOUT_S)
    at = time.monotonic()
    samples = agent.metrics() if found is None else found
    if found is None or fence is None:  # never settled (the accounts will say why), or no loss counters to wait for
        return Drained(at, samples, samples)
    time.sleep(max(0.0, ended + _KERNEL_COUNTERS_S - time.monotonic()))
    return Drained(at, samples, agent.metrics())


def run_paced(load: Load, rate_per_s: float, seconds: float) -> None:
    """Send units of `load` so that its events arrive at `rate_per_s` for `seconds` (less if the agent lags)."""
    interval_s = load.unit_events / rate_per_s
    started = time.perf_counter()
    index = 0
    while (now := time.perf_counter()) - started < seconds:
        due = started + index * interval_s
        if now < due:
            time.sleep(due - now)
            continue
        load.send(index)
        index += 1


class WebhookLoad:
    """k8s audit EventLists POSTed to the webhook over one keep-alive connection; a 503 is retried, as the API
    server does."""

    source = "k8s_audit"

    def __init__(self, port: int, path: str, events: list[dict[str, Any]], *, batch_size: int) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self._path = path
        self._bodies = [orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1",
                                      "items": [events[(start + i) % len(events)] for i in range(batch_size)]})
                        for start in range(0, len(events), batch_size)]
        self._batch_size = batch_size
        self._samples = len(events)
        self._offered = self._accepted = 0
        self.retries = 0

    @property
    def unit_events(self) -> int:
        return self._batch_size

    def send(self, index: int) -> None:
        body = self._bodies[index % len(self._bodies)]
        while True:
            self._connection.request("POST", self._path, body=body, headers={"Content-Type": "application/json"})
            response = self._connection.getresponse()
            answer = orjson.loads(response.read())
            if response.status != 503:
                break
            self.retries += 1
            time.sleep(_RETRY_WAIT_S)
        if response.status != 200:
            raise SystemExit(f"the webhook answered {response.status}: {answer}")
        self._offered += self._batch_size
        self._accepted += answer["accepted"]

    def account(self, before: Samples, after: Samples) -> QueuedAccount:
        return QueuedAccount(source_tally(self.source, before, after, self._offered, self._samples),
                             self._accepted)


class TrailDirectoryLoad:
    """CloudTrail log files (gzipped, `records_per_file` records) written into the watched directory, each
    written under a dot name and renamed, as `aws s3 sync` does, so that the agent never sees half a file.

    The agent has taken the files once it read them all (its `files_read`, `records_read`); every record written
    must then be evaluated.
    """

    source = "aws_cloudtrail"

    def __init__(self, folder: Path, records: list[dict[str, Any]], *, records_per_file: int) -> None:
        self._folder = folder
        self._files = [gzip.compress(orjson.dumps({"Records": [records[(start + i) % len(records)]
                                                               for i in range(records_per_file)]}), 1)
                       for start in range(0, len(records), records_per_file)]
        self._records_per_file = records_per_file
        self._samples = len(records)
        self._files_sent = 0
        self.retries = 0

    @property
    def unit_events(self) -> int:
        return self._records_per_file

    def send(self, index: int) -> None:
        name = f"123456789012_CloudTrail_us-east-1_20261129T1000Z_{index:08d}.json.gz"
        partial = self._folder / f".{name}"
        partial.write_bytes(self._files[index % len(self._files)])
        os.replace(partial, self._folder / name)
        self._files_sent += 1

    def account(self, before: Samples, after: Samples) -> QueuedAccount:
        read_all = growth(before, after, "falco_agent_source_files_read", source=self.source) >= self._files_sent
        taken = growth(before, after, "falco_agent_source_records_read", source=self.source) if read_all else None
        offered = self._files_sent * self._records_per_file
        return QueuedAccount(source_tally(self.source, before, after, offered, self._samples), taken)


@dataclass(frozen=True)
class SyscallAccount:
    """`opens` openat+close pairs made by a load, against what the agent counted meanwhile; settled once the
    engine evaluated an open of the load's `Fence`.

    `evaluated` is the load's openat events the engine evaluated, counted by a correlation of `Fence.rules`. With
    no loss it must equal `opens`; the kernel source sees every process, so losses can be told apart from the
    machine's other syscalls only in sum: `opens - lost <= evaluated <= opens`, and the pairs' two records each
    must be delivered or counted lost (ring buffer full, or an exit whose enter was lost): `records + lost >=
    2 * opens`. Less means events vanished uncounted. No record may fail to decode or to apply to the state.
    Records a kernel prefilter kept in the kernel (`filtered`, from `KERNEL_FILTERED` counters; none exist while
    the kernel source has no prefilter) count in both bounds as the lost ones do: in the first, only the openat
    records it kept (`filtered_opens`).
    """

    phase: str
    opens: int
    evaluated: int
    fences: int
    records: int
    lost: int
    filtered: int
    filtered_opens: int
    #: Every syscall event the engine evaluated, and those the source handed it (the load's and the machine's).
    events: int
    handed: int
    alerts: int
    errors: int

    @classmethod
    def between(cls, phase: str, before: Samples, after: Samples, opens: int) -> SyscallAccount:
        def grew(key: str) -> int:
            return growth(before, after, f"falco_agent_source_{key}", source="kernel")

        def matches(correlation: str) -> int:
            return growth(before, after, "falco_agent_correlation_step_matches_total", rule=correlation)

        return cls(phase, opens, evaluated=matches(LOAD_COUNTER), fences=matches(FENCE_COUNTER),
                   records=grew("records"), lost=grew("kernel_lost") + grew("kernel_exit_without_enter"),
                   filtered=(kernel_filtered(after) or 0) - (kernel_filtered(before) or 0),
                   filtered_opens=(kernel_filtered(after, "openat") or 0) - (kernel_filtered(before, "openat") or 0),
                   events=growth(before, after, EVALUATED, source="syscall"), handed=grew("events"),
                   alerts=growth(before, after, RULE_ALERTS, source="syscall"),
                   errors=grew("decode_errors") + grew("state_errors"))

    def settled(self) -> bool:
        return self.fences > 0

    def problems(self) -> list[str]:
        out = [] if self.opens > 0 else [f"{self.phase}: no openat was made"]
        unseen = self.lost + self.filtered
        if not self.opens - self.lost - self.filtered_opens <= self.evaluated <= self.opens:
            out.append(f"{self.phase}: {self.evaluated:,} events evaluated of {self.opens:,} openat made, with "
                       f"{self.lost:,} records counted lost and {self.filtered_opens:,} openat filtered in the "
                       f"kernel")
        if self.records + unseen < 2 * self.opens:
            out.append(f"{self.phase}: {self.records:,} records delivered, {self.lost:,} counted lost and "
                       f"{self.filtered:,} filtered in the kernel, fewer than the {2 * self.opens:,} syscalls of "
                       f"{self.opens:,} openat+close pairs")
        if self.errors:
            out.append(f"{self.phase}: {self.errors:,} records failed to decode or to apply to the state")
        return out

    def as_figures(self) -> dict[str, int]:
        return {f"{self.phase}_offered": self.opens, f"{self.phase}_evaluated": self.evaluated,
                f"{self.phase}_alerts": self.alerts, f"{self.phase}_records": self.records,
                f"{self.phase}_lost": self.lost, f"{self.phase}_filtered": self.filtered,
                f"{self.phase}_all_events": self.events}


class SyscallLoad:
    """openat+close pairs on one file from this process, which the agent's kernel source captures (needs root);
    the agent must run `rules()` too. Its files go in `folder`."""

    source = "syscall"

    def __init__(self, folder: Path, *, batch: int = 100) -> None:
        path = folder / "opened-by-bench"
        path.write_text("bench\n")
        self._path = str(path)
        self.fence = Fence(folder / "fence")
        self._batch = batch
        self._sent = 0
        self.retries = 0

    def rules(self) -> str:
        return self.fence.rules(f'fd.name = "{self._path}"')

    @property
    def unit_events(self) -> int:
        return self._batch

    def send(self, index: int) -> None:
        for _ in range(self._batch):
            os.close(os.open(self._path, os.O_RDONLY))
        self._sent += self._batch

    def account(self, before: Samples, after: Samples) -> SyscallAccount:
        return SyscallAccount.between(self.source, before, after, self._sent)


def run_loads(loads: list[tuple[Load, float]], seconds: float) -> float:
    """Run every (load, rate) at once for `seconds`; returns the wall time they took."""
    threads = [threading.Thread(target=run_paced, args=(load, rate, seconds), name=f"load-{load.source}")
               for load, rate in loads]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started
