"""The load bench/whole_agent.py puts on a running agent: a paced sender per source, each on its own thread.

A sender offers its events at a set rate in units (a POSTed batch, a dropped file) and says how many events the
agent accepted, so that the benchmark can tell evaluated events from drops. Another source's load (syscalls from
a generator process, as bench/kernel.py makes them) plugs in as one more `Load`.
"""

from __future__ import annotations

import gzip
import http.client
import os
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import orjson
from process_stats import Samples, total

_RETRY_WAIT_S = 0.01


class Load(Protocol):
    source: str
    #: Units the agent refused and got again.
    retries: int

    @property
    def unit_events(self) -> int: ...

    def send(self, index: int) -> None:
        """Offer unit `index` (of `unit_events` events) and wait until the agent took it."""
        ...

    def accepted(self, samples: Samples) -> int | None:
        """Events the agent accepted to evaluate, by its answers or its metrics; None while it has not yet taken
        every unit sent."""
        ...


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
        self._accepted = 0
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
        self._accepted += answer["accepted"]

    def accepted(self, samples: Samples) -> int | None:
        return self._accepted


class TrailDirectoryLoad:
    """CloudTrail log files (gzipped, `records_per_file` records) written into the watched directory, each
    written under a dot name and renamed, as `aws s3 sync` does, so that the agent never sees half a file.

    What the agent accepted is what it read (its `records_read`): records it skips by design (Insight records,
    records without eventTime) are no drops.
    """

    source = "aws_cloudtrail"

    def __init__(self, folder: Path, records: list[dict[str, Any]], *, records_per_file: int) -> None:
        self._folder = folder
        self._files = [gzip.compress(orjson.dumps({"Records": [records[(start + i) % len(records)]
                                                               for i in range(records_per_file)]}), 1)
                       for start in range(0, len(records), records_per_file)]
        self._records_per_file = records_per_file
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

    def accepted(self, samples: Samples) -> int | None:
        if total(samples, "falco_agent_source_files_read", source=self.source) < self._files_sent:
            return None
        return int(total(samples, "falco_agent_source_records_read", source=self.source))


class SyscallLoad:
    """openat+close pairs on one file from this process, which the agent's kernel source captures (needs root).

    The openat is what the rules see; other processes add their own syscalls, so the agent evaluates at least
    what was sent. What the kernel could not hand over is the source's `kernel_lost`."""

    source = "syscall"

    def __init__(self, path: Path, *, batch: int = 100) -> None:
        self._path = str(path)
        path.write_text("bench\n")
        self._batch = batch
        self._sent = 0
        self.retries = 0

    @property
    def unit_events(self) -> int:
        return self._batch

    def send(self, index: int) -> None:
        for _ in range(self._batch):
            os.close(os.open(self._path, os.O_RDONLY))
        self._sent += self._batch

    def accepted(self, samples: Samples) -> int | None:
        return self._sent


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
