"""The agent's own logs: on stderr or not (Falco's log_stderr), to syslog or not (log_syslog), never failing when
syslog is absent."""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from agent.logging import SYSLOG_IDENT, configure_logging

pytestmark = pytest.mark.server

WAIT_S = 20.0
DATAGRAM = re.compile(rb"<(\d+)>\w{3} [ \d]\d \d\d:\d\d:\d\d ([^\[]+)\[(\d+)\]: (.*)", re.DOTALL)


@pytest.fixture(autouse=True)
def _default_logging() -> Iterator[None]:
    yield
    configure_logging()  # closes the test's syslog connection, stderr on again
    structlog.reset_defaults()


def bound_daemon(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(WAIT_S)
    return sock


def test_logs_to_syslog_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """stderr off, syslog on: each log line is one datagram from falco-agent[pid] at its level's severity, and
    nothing is written on stderr."""
    with bound_daemon(tmp_path / "log") as daemon:
        configure_logging(json=True, stderr=False, syslog_address=str(tmp_path / "log"))
        log = structlog.get_logger("test")
        log.info("agent_started", sources=["k8s_audit"])
        log.error("output_write_failed", file="/x")
        got = [DATAGRAM.fullmatch(daemon.recv(1 << 16)) for _ in range(2)]
    assert all(match is not None for match in got)
    assert [(int(m[1]), m[2].decode(), int(m[3])) for m in got if m] == [(8 + 6, SYSLOG_IDENT, os.getpid()),
                                                                          (8 + 3, SYSLOG_IDENT, os.getpid())]
    first = json.loads(got[0][4])  # type: ignore[index]
    assert first["event"] == "agent_started" and first["sources"] == ["k8s_audit"]
    assert capsys.readouterr().err == ""


def test_absent_syslog_is_reported_once_and_logs_go_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With no daemon at the address the logs still reach stderr, one line says syslog is unavailable, and once a
    daemon binds the address the logs reach it and the recovery is reported."""
    configure_logging(json=True, stderr=True, syslog_address=str(tmp_path / "log"))
    log = structlog.get_logger("test")
    for i in range(3):
        log.info("tick", i=i)
    with bound_daemon(tmp_path / "log") as daemon:
        log.info("tick", i=3)
        arrived = [json.loads(DATAGRAM.fullmatch(daemon.recv(1 << 16))[4])["event"]  # type: ignore[index]
                   for _ in range(2)]
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    events = [line["event"] for line in lines]
    assert events == ["tick", "syslog_log_unavailable", "tick", "tick", "tick", "syslog_log_recovered"]
    assert lines[-1]["dropped"] >= 3
    assert arrived == ["tick", "syslog_log_recovered"]


def test_stderr_off_and_no_syslog_is_silent(capsys: pytest.CaptureFixture[str]) -> None:
    """log_stderr false without log_syslog: the logs go nowhere (as in Falco), and nothing fails."""
    configure_logging(json=True, stderr=False)
    structlog.get_logger("test").warning("dropped_somewhere")
    assert capsys.readouterr().err == ""
