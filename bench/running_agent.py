"""`falco-agent` as a process for a benchmark: /metrics on a free loopback port, its own gRPC socket and spool,
stderr kept in a log, ready once its metrics say so."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from process_stats import Samples, scrape

ROOT = Path(__file__).resolve().parents[1]
_PAUSE_S = 0.2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RunningAgent:
    """Started with `rules` and the `options` (KEY=VALUE) of the benchmark; `ready` decides from /metrics."""

    def __init__(self, rules: Sequence[Path], *, state: Path, options: Sequence[str],
                 ready: Callable[[Samples], bool], start_timeout_s: float = 90.0) -> None:
        self.metrics_url = f"http://127.0.0.1:{free_port()}"
        command = [sys.executable, "-m", "agent.cli", "--json"]
        for path in rules:
            command += ["-r", str(path)]
        for option in (f"webserver.listen_port={self.metrics_url.rsplit(':', 1)[1]}",
                       f"grpc.socket_path={state / 'grpc.sock'}", f"grpc.spool_dir={state / 'spool'}",
                       "logging.format=json", "logging.level=warning", *options):
            command += ["-o", option]
        self._stderr = (state / "agent.log").open("w+")
        self.proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self._stderr)
        if self.wait_for(ready, start_timeout_s) is None:
            self.stop()
            raise SystemExit(f"the agent was not ready within {start_timeout_s:.0f} s")

    def wait_for(self, done: Callable[[Samples], bool], timeout_s: float) -> Samples | None:
        """Scrape /metrics until `done` holds: that scrape, or None after `timeout_s`. The agent exiting meanwhile
        ends the benchmark with the end of its log."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                self._stderr.seek(0)
                raise SystemExit(f"the agent exited (status {self.proc.returncode}):\n{self._stderr.read()[-3000:]}")
            try:
                samples = self.metrics()
            except OSError:
                pass  # not listening yet
            else:
                if done(samples):
                    return samples
            if time.monotonic() >= deadline:
                return None
            time.sleep(_PAUSE_S)

    def metrics(self) -> Samples:
        return scrape(f"{self.metrics_url}/metrics")

    def stop(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(timeout=60)
        self._stderr.close()
        return code
