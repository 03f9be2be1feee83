"""`falco-agent tail`: prints alerts from a running agent as they arrive."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent.grpc.server import AlertServer
from agent.priority import Priority
from tests.agent.grpc.conftest import WAIT_S, make_alert

pytestmark = pytest.mark.server
REPO = Path(__file__).resolve().parents[3]


def _tail(server: AlertServer, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "agent.cli", "tail", "--socket", str(server.socket_path), *args],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        proc.communicate(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
    return proc.returncode


class TestTail:
    def test_json_lines_with_filters_and_resume(self, unix_server: AlertServer) -> None:
        """`tail --json --min-priority error --resume-from 1` prints matching alerts after seq 1, then live ones."""
        for i, priority in enumerate([Priority.CRITICAL, Priority.ERROR, Priority.NOTICE]):
            unix_server.output.emit(make_alert(i, priority=priority))
        proc = _tail(unix_server, "--json", "--min-priority", "error", "--resume-from", "1")
        try:
            assert proc.stdout is not None
            first = json.loads(proc.stdout.readline())
            assert (first["seq"], first["priority"], first["rule"]) == (2, "Error", "Rule 1")
            unix_server.output.emit(make_alert(3, priority=Priority.DEBUG))
            unix_server.output.emit(make_alert(4, priority=Priority.EMERGENCY))
            live = json.loads(proc.stdout.readline())
            assert (live["seq"], live["priority"], live["output_fields"]["proc.pid"]) == (5, "Emergency", 4)
        finally:
            assert _stop(proc) == 0

    def test_text_lines_by_source(self, unix_server: AlertServer) -> None:
        """Without --json, tail prints Falco's text line for each alert of the chosen source."""
        unix_server.output.emit(make_alert(0, source="k8s_audit"))
        unix_server.output.emit(make_alert(1))
        proc = _tail(unix_server, "--source", "syscall", "--resume-from", "0")
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.rstrip().endswith(": Warning alert number 1 (proc.name=cat)")
        finally:
            assert _stop(proc) == 0
