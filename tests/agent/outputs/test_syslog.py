"""The syslog output against a unix datagram socket the test binds: glibc's datagram layout, severities from
priorities, JSON messages, and a daemon that is absent, restarted or not reading, none of which blocks or stops it."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from agent.alert import JsonAlertFormat
from agent.outputs.syslog import FACILITIES, MAX_DATAGRAM_BYTES, SyslogOutput, SyslogSocket
from agent.priority import Priority
from tests.agent.outputs.conftest import WAIT_S, make_alert
from tests.support.webhook_agent import audit_event, every_event_agent, post_until_accepted

pytestmark = pytest.mark.server

# What glibc 2.36's syslog(3) sends with openlog(ident, LOG_PID): no hostname, day padded with a space, no newline.
DATAGRAM = re.compile(rb"<(\d+)>(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ 1-3]\d \d\d:\d\d:\d\d "
                      rb"([^\[]+)\[(\d+)\]: (.*)", re.DOTALL)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[socket.socket]:
    """A stand-in syslog daemon: a datagram socket bound in tmp_path (its path is `getsockname()`)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "log"))
        sock.settimeout(WAIT_S)
        yield sock


def new_output(address: str, **options: Any) -> SyslogOutput:
    settings: dict[str, Any] = {"as_json": False, "iso8601": False, "max_queue": 1000, "timeout_s": 1.0}
    return SyslogOutput(address, **{**settings, **options})


def received(sock: socket.socket) -> tuple[int, str, int, bytes]:
    """PRI, ident, pid and message of the next datagram."""
    match = DATAGRAM.fullmatch(sock.recv(MAX_DATAGRAM_BYTES * 2))
    assert match is not None
    return int(match[1]), match[3].decode(), int(match[4]), match[5]


class TestDatagrams:
    def test_text_alert_at_its_priority_severity(self, daemon: socket.socket) -> None:
        """Each alert is one datagram `<PRI>Mmm dd hh:mm:ss falco[pid]: <text line>`, PRI = user * 8 + severity."""
        output = new_output(daemon.getsockname())
        alerts = [make_alert(1, priority=Priority.WARNING), make_alert(2, priority=Priority.EMERGENCY),
                  make_alert(3, priority=Priority.DEBUG)]
        try:
            for alert in alerts:
                output.emit(alert)
            got = [received(daemon) for _ in alerts]
        finally:
            output.close()
        assert [pri for pri, *_ in got] == [8 + 4, 8 + 0, 8 + 7]
        assert {(ident, pid) for _, ident, pid, _ in got} == {("falco", os.getpid())}
        assert [message for *_, message in got] == [alert.text_bytes() for alert in alerts]
        assert output.counters()["delivered"] == 3

    @pytest.mark.root
    @pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
    def test_same_bytes_as_glibc_syslog(self, daemon: socket.socket) -> None:
        """What glibc's syslog(3) sends to /dev/log (our socket mounted there in a private mount namespace) and
        what the output sends differ only in the time and the process id."""
        script = ("import syslog; syslog.openlog('falco', syslog.LOG_PID, syslog.LOG_LOCAL3); "
                  "syslog.syslog(syslog.LOG_WARNING, 'same \u00e9 message')")
        mount = 'mount -t tmpfs none /dev && touch /dev/log && mount --bind "$0" /dev/log && exec "$1" -c "$2"'
        subprocess.run(["unshare", "--mount", "sh", "-c", mount, daemon.getsockname(), sys.executable, script],
                       check=True, timeout=WAIT_S)
        from_glibc = daemon.recv(MAX_DATAGRAM_BYTES)
        ours = SyslogSocket(daemon.getsockname(), ident="falco", facility=FACILITIES["local3"], timeout_s=1.0)
        ours.send(int(Priority.WARNING), "same é message".encode())
        ours.close()
        from_output = daemon.recv(MAX_DATAGRAM_BYTES)

        def normal(datagram: bytes) -> bytes:
            return re.sub(rb"\d\d:\d\d:\d\d (\w+)\[\d+\]", rb"hh:mm:ss \1[pid]", datagram)

        assert normal(from_output) == normal(from_glibc)
        assert from_glibc.startswith(b"<%d>" % (19 * 8 + 4))

    def test_timestamp_is_the_local_time_of_sending(self, daemon: socket.socket) -> None:
        """As syslog(3): the header's time is when the alert is sent, in local time, not the event's time."""
        output = new_output(daemon.getsockname())
        try:
            output.emit(make_alert(1))  # its event is from 2023
            datagram = daemon.recv(MAX_DATAGRAM_BYTES)
        finally:
            output.close()
        now = time.time()
        stamps = {time.strftime("%b %e %H:%M:%S", time.localtime(now - delta)).encode() for delta in (0, 1, 2)}
        assert datagram.split(b">", 1)[1][:15] in stamps

    def test_json_alert_with_facility_and_ident(self, daemon: socket.socket) -> None:
        """With format json the message is Falco's JSON alert, as the shared JSON format shapes it."""
        shape = JsonAlertFormat(include_message=True, include_tags=False)
        output = new_output(daemon.getsockname(), as_json=True, iso8601=True, facility="local3", ident="falco-test",
                            json_format=shape)
        alert = make_alert(1, priority=Priority.CRITICAL)
        try:
            output.emit(alert)
            pri, ident, _, message = received(daemon)
        finally:
            output.close()
        assert (pri, ident) == (19 * 8 + 2, "falco-test")
        document = orjson.loads(message)
        assert document == orjson.loads(shape.line(alert, iso8601=True))
        assert document["message"] == alert.output and "tags" not in document

    def test_message_longer_than_a_datagram_is_cut_at_a_character(self, daemon: socket.socket) -> None:
        """A 200 KB alert arrives as one datagram of at most MAX_DATAGRAM_BYTES, valid UTF-8, counted truncated."""
        alert = make_alert(1)
        alert.output = "é" * 100_000 + "end"
        output = new_output(daemon.getsockname())
        try:
            output.emit(alert)
            output.emit(make_alert(2))
            datagram = daemon.recv(MAX_DATAGRAM_BYTES * 4)
            _, _, _, after = received(daemon)
        finally:
            output.close()
        assert MAX_DATAGRAM_BYTES - 1 <= len(datagram) <= MAX_DATAGRAM_BYTES
        message = DATAGRAM.fullmatch(datagram)[5].decode()  # type: ignore[index]
        assert message.startswith(alert.text_line()[:40]) and message.endswith("é")
        assert after == make_alert(2).text_bytes()
        assert output.counters()["truncated"] == 1 and output.counters()["delivered"] == 2


class TestDaemonTrouble:
    def test_absent_socket_drops_counted_logged_once_then_recovers(self, tmp_path: Path) -> None:
        """No socket (a container without /dev/log): alerts are dropped and counted, one warning; once a daemon
        binds the path the next alerts arrive and the recovery is logged with the count."""
        address = str(tmp_path / "log")
        output = new_output(address)
        try:
            with capture_logs() as logs:
                for i in range(3):
                    output.emit(make_alert(i))
                    assert output.wait_idle(WAIT_S)
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as daemon:
                    daemon.bind(address)
                    daemon.settimeout(WAIT_S)
                    output.emit(make_alert(3))
                    assert received(daemon)[3] == make_alert(3).text_bytes()
                    assert output.wait_idle(WAIT_S)
        finally:
            output.close()
        assert output.counters() | {"queue_depth": 0} == {"delivered": 1, "dropped": 3, "rejected": 0,
                                                           "failed_attempts": 0, "queue_depth": 0, "truncated": 0}
        events = [e for e in logs if e["event"].startswith("syslog_")]
        assert [e["event"] for e in events] == ["syslog_output_unavailable", "syslog_output_recovered"]
        assert events[0]["address"] == address and events[1]["dropped"] == 3

    def test_restarted_daemon_is_reached_on_its_new_socket(self, tmp_path: Path) -> None:
        """A daemon that goes and comes back (new socket at the same path) gets the next alert: reconnected."""
        address = str(tmp_path / "log")
        output = new_output(address)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as first:
                first.bind(address)
                first.settimeout(WAIT_S)
                output.emit(make_alert(1))
                assert received(first)[3] == make_alert(1).text_bytes()
            os.unlink(address)
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as second:
                second.bind(address)
                second.settimeout(WAIT_S)
                output.emit(make_alert(2))
                assert received(second)[3] == make_alert(2).text_bytes()
        finally:
            output.close()
        assert output.counters()["delivered"] == 2 and output.counters()["dropped"] == 0

    def test_daemon_that_does_not_read_never_blocks_the_engine(self, daemon: socket.socket) -> None:
        """A daemon whose queue is full: emit stays instant, alerts beyond what it holds are dropped after the
        timeout, and every alert is accounted for as delivered or dropped."""
        count = 3000  # far beyond a unix datagram socket's queue (max_dgram_qlen, 512 by default)
        output = new_output(daemon.getsockname(), timeout_s=0.05, max_queue=count)
        started = time.monotonic()
        for i in range(count):
            output.emit(make_alert(i))
        emit_s = time.monotonic() - started
        try:
            assert output.wait_idle(WAIT_S)
        finally:
            output.close()
        counters = output.counters()
        assert emit_s < 2.0
        assert counters["dropped"] > 0 and counters["delivered"] > 0
        assert counters["delivered"] + counters["dropped"] == count


@pytest.mark.slow
def test_agent_alerts_to_syslog_and_runs_on_without_it(tmp_path: Path) -> None:
    """The agent with the syslog output and its own logs to syslog: with no socket at the address it starts, its
    alerts still reach stdout and the outage is logged; once a daemon binds the address, alerts and logs arrive."""
    address = tmp_path / "log"
    agent, urls = every_event_agent(tmp_path, "--json", "-o", "outputs.syslog.enabled=true",
                                    "-o", f"outputs.syslog.address={address}", "-o", "logging.syslog=true")
    agent.read_alerts()
    try:
        post_until_accepted(urls.webhook, audit_event("before"))
        assert agent.wait_for_alerts(1)[0]["output_fields"]["ka.auditid"] == "before"
        agent.wait_for_log("syslog_output_unavailable")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as daemon:
            daemon.bind(str(address))
            daemon.settimeout(WAIT_S)
            post_until_accepted(urls.webhook, audit_event("after"))
            assert agent.wait_for_alerts(1)[0]["output_fields"]["ka.auditid"] == "after"
            by_ident: dict[str, list[bytes]] = {}
            while "falco" not in by_ident or "falco-agent" not in by_ident:
                _, ident, pid, message = received(daemon)
                assert pid == agent.proc.pid
                by_ident.setdefault(ident, []).append(message)
    finally:
        code, _ = agent.stop()
    assert code == 0
    assert by_ident["falco"][0].endswith(b": Warning audit event seen (id=after source=<NA>)")
