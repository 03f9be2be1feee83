"""The agent as a real subprocess for end-to-end tests: JSON logs parsed from stderr, alerts from stdout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from queue import Empty, Queue
from typing import Any

REPO = Path(__file__).resolve().parents[2]


class Agent:
    """`falco-agent` started with the given arguments; stderr log lines are parsed as they come."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, builtin_config: bool = False,
                 kernel: bool = False) -> None:
        """Without `builtin_config` the agent gets an empty configuration file (the plain defaults, which a `-c`
        in `args` replaces) rather than the built-in configuration, whose example CloudTrail logs raise alerts.
        Without `kernel` the kernel source stays off: loading BPF takes seconds the other tests do not need."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        # Each agent gets its own gRPC socket and spool, so agents of one test never collide.
        self.state = Path(tempfile.mkdtemp(prefix="falco-agent-test-"))
        base = []
        if not builtin_config:
            (self.state / "agent.yaml").write_text("")
            base = ["-c", str(self.state / "agent.yaml")]
        grpc = ["-o", f"grpc.socket_path={self.state / 'grpc.sock'}", "-o", f"grpc.spool_dir={self.state / 'spool'}",
                "-o", "webserver.listen_port=0"]
        if not kernel:
            grpc += ["-o", "sources.kernel.enabled=false"]
        self.proc = subprocess.Popen([sys.executable, "-m", "agent.cli", *base, *grpc, *args], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.logs: Queue[dict[str, Any]] = Queue()
        self.alerts: Queue[dict[str, Any]] = Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def read_alerts(self) -> None:
        """Collect JSON alerts from stdout as they come (instead of at exit)."""
        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.alerts.put(json.loads(line))
        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def wait_for_alerts(self, count: int, timeout_s: float = 20) -> list[dict[str, Any]]:
        got = []
        for _ in range(count):
            try:
                got.append(self.alerts.get(timeout=timeout_s))
            except Empty:
                raise AssertionError(f"{len(got)} of {count} alerts; stderr: {''.join(self.stderr)}") from None
        return got

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            if line.startswith("{"):
                self.logs.put(json.loads(line))

    def wait_for_log(self, event: str, timeout_s: float = 20) -> dict[str, Any]:
        while True:
            try:
                entry = self.logs.get(timeout=timeout_s)
            except Empty:
                raise AssertionError(f"no '{event}' log; stderr: {''.join(self.stderr)}") from None
            if entry.get("event") == event:
                return entry

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        reader = getattr(self, "_reader", None)
        if reader is not None:
            self.proc.wait(timeout=20)
            reader.join(timeout=10)  # every line the agent wrote is now in self.alerts
            return self.proc.returncode, ""
        out, _ = self.proc.communicate(timeout=20)
        return self.proc.returncode, out


def alerts_until(agent: Agent, rules: set[str], timeout_s: float = 20) -> list[dict[str, Any]]:
    """The alerts read until each of `rules` alerted once."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while not rules <= {str(a["rule"]) for a in seen}:
        assert time.monotonic() < deadline, f"alerts of {rules}, got {seen}; stderr: {''.join(agent.stderr)}"
        seen += agent.wait_for_alerts(1)
    return seen
