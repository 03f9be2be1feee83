"""The NATS JetStream output against a real nats-server: alerts on the stream, outages survived, overflow counted."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from nats.js.api import StreamConfig

from agent.errors import ConfigError
from agent.outputs.async_writer import Backoff
from agent.outputs.nats import NatsOutput, SubjectTemplate
from agent.priority import Priority
from tests.agent.outputs.conftest import WAIT_S, emits_return, make_alert
from tests.support.queue_consumer import eventually

FAST = Backoff(initial_s=0.02, max_s=0.2)
STREAM = "FALCO_TEST"


def _binary() -> str | None:
    found = shutil.which("nats-server")
    if found:
        return found
    for candidate in ("/usr/bin/nats-server", "/usr/sbin/nats-server"):
        if Path(candidate).is_file():
            return candidate
    return None


class NatsServer:
    """A nats-server subprocess with JetStream; keeps its port and store directory across restarts."""

    def __init__(self, binary: str, store_dir: Path) -> None:
        self.binary = binary
        self.store_dir = store_dir
        self.port = -1  # nats-server picks a free port the first time and reports it in its log
        self.log: list[str] = []
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        ready = threading.Event()
        process = subprocess.Popen([self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port),
                                    "-sd", str(self.store_dir)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._process = process
        self._reader = threading.Thread(target=self._read, args=(process, ready), daemon=True)
        self._reader.start()
        if not ready.wait(WAIT_S) or process.poll() is not None or self.port < 0:
            self.stop()
            pytest.fail("nats-server did not become ready:\n" + "\n".join(self.log[-20:]))
        return self

    def _read(self, process: subprocess.Popen[str], ready: threading.Event) -> None:
        assert process.stderr is not None
        try:
            for line in process.stderr:
                self.log.append(line.rstrip())
                if "Listening for client connections on" in line:
                    self.port = int(line.rsplit(":", 1)[1])
                elif "Server is ready" in line:
                    ready.set()
        finally:
            ready.set()  # ended before it was ready: start() sees the exit

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(WAIT_S)
        if self._reader is not None:
            self._reader.join(WAIT_S)
        self._process = None


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    binary = _binary()
    if binary is None:
        pytest.skip("nats-server is not installed (scripts/bootstrap.sh installs the Debian package nats-server)")
    server = NatsServer(binary, tmp_path / "jetstream")
    try:
        yield server.start()
    finally:
        server.stop()


def new_output(url: str, **options: Any) -> NatsOutput:
    settings: dict[str, Any] = {"subject": "falco.alerts.{source}.{priority}", "stream": STREAM,
                                "create_stream": True, "iso8601": False, "max_queue": 100, "timeout_s": 1.0,
                                "close_timeout_s": WAIT_S, "backoff": FAST}
    return NatsOutput([url], **{**settings, **options})


def consume(url: str, count: int, *, stream: str = STREAM, subject: str = ">") -> tuple[list[Any], int]:
    """The first `count` messages of the stream (via an ephemeral pull consumer) and how many it holds."""

    async def run() -> tuple[list[Any], int]:
        client = await nats.connect(url)
        try:
            js = client.jetstream()
            subscription = await js.pull_subscribe(subject, stream=stream)
            messages: list[Any] = []
            deadline = time.monotonic() + WAIT_S
            while len(messages) < count and time.monotonic() < deadline:
                try:
                    messages += await subscription.fetch(count - len(messages), timeout=1.0)
                except nats.errors.TimeoutError:
                    continue
            for message in messages:
                await message.ack()
            info = await js.stream_info(stream)
            return messages, info.state.messages
        finally:
            await client.close()

    return asyncio.run(run())


def pids(messages: list[Any]) -> list[int]:
    return sorted(orjson.loads(m.data)["output_fields"]["proc.pid"] for m in messages)


@pytest.mark.server
class TestDelivery:
    def test_alerts_arrive_on_the_stream_as_falco_json(self, nats_server: NatsServer) -> None:
        """Each alert lands once on the created stream, on a subject naming its source and priority."""
        output = new_output(nats_server.url)
        alerts = [make_alert(i, priority=Priority.CRITICAL if i % 2 else Priority.NOTICE) for i in range(6)]
        try:
            for alert in alerts:
                output.emit(alert)
            assert output.wait_idle(WAIT_S)
        finally:
            output.close()
        messages, stored = consume(nats_server.url, len(alerts))
        assert stored == len(alerts)
        by_pid = {orjson.loads(m.data)["output_fields"]["proc.pid"]: m for m in messages}
        for i, alert in enumerate(alerts):
            assert orjson.loads(by_pid[i].data) == alert.falco_json()
            assert by_pid[i].subject == f"falco.alerts.syscall.{'critical' if i % 2 else 'notice'}"
            assert by_pid[i].headers["Nats-Msg-Id"]
        assert output.counters() == {"delivered": 6, "dropped": 0, "rejected": 0, "failed_attempts": 0,
                                     "queue_depth": 0}

    def test_an_existing_stream_is_used_as_it_is(self, nats_server: NatsServer) -> None:
        """Without create_stream, alerts go to the stream an operator made, under a per-host subject."""

        async def make_stream() -> None:
            client = await nats.connect(nats_server.url)
            try:
                await client.jetstream().add_stream(StreamConfig(name="OPS", subjects=["fleet.>"]))
            finally:
                await client.close()

        asyncio.run(make_stream())
        output = new_output(nats_server.url, stream="OPS", create_stream=False, subject="fleet.{hostname}.{rule}")
        try:
            output.emit(make_alert(0))
            assert output.wait_idle(WAIT_S)
        finally:
            output.close()
        messages, stored = consume(nats_server.url, 1, stream="OPS")
        assert stored == 1 and messages[0].subject == "fleet.node-1.Rule_0"


@pytest.mark.server
class TestOutages:
    def test_server_restart_loses_nothing(self, nats_server: NatsServer) -> None:
        """Alerts emitted while the server is down are queued and published once it is back, each exactly once."""
        output = new_output(nats_server.url)
        try:
            for i in range(20):
                output.emit(make_alert(i))
            assert output.wait_idle(WAIT_S)
            nats_server.stop()
            for i in range(20, 40):
                output.emit(make_alert(i))
            assert eventually(lambda: output.failed_attempts >= 1)
            nats_server.start()
            assert output.wait_idle(WAIT_S)
        finally:
            output.close()
        messages, stored = consume(nats_server.url, 40)
        assert stored == 40
        assert pids(messages) == list(range(40))
        counters = output.counters()
        assert (counters["delivered"], counters["dropped"]) == (40, 0) and counters["failed_attempts"] >= 1

    def test_overflow_is_counted(self, nats_server: NatsServer) -> None:
        """With the server down and the queue full, emit stays fast and every alert it cannot keep is counted."""
        nats_server.stop()
        output = new_output(nats_server.url, max_queue=3)
        try:
            output.emit(make_alert(0))
            assert eventually(lambda: output.failed_attempts >= 1)  # alert 0 is in flight, being retried
            assert emits_return(output, [make_alert(i) for i in range(1, 8)])  # the server is still down
            nats_server.start()
            assert output.wait_idle(WAIT_S)
        finally:
            output.close()
        messages, stored = consume(nats_server.url, 4)
        assert stored == 4 and pids(messages) == [0, 1, 2, 3]
        assert output.dropped == 4 and output.delivered == 4

    def test_close_gives_up_at_its_deadline(self, nats_server: NatsServer) -> None:
        """With no server, close returns after its deadline and counts what it could not deliver."""
        nats_server.stop()
        output = new_output(nats_server.url, close_timeout_s=0.5)
        for i in range(3):
            output.emit(make_alert(i))
        started = time.monotonic()
        output.close()
        assert time.monotonic() - started < 10.0
        assert output.dropped == 3 and output.delivered == 0


class TestSubjectTemplate:
    def test_values_are_made_subject_safe(self) -> None:
        """Rule names with spaces or dots become single subject tokens."""
        alert = make_alert(0)
        alert.rule = "Write below /etc (v1.2)"
        assert SubjectTemplate("a.{rule}.{priority}").render(alert) == "a.Write_below_etc_v1_2_.warning"

    def test_stream_subjects_cover_the_template(self) -> None:
        """The created stream captures every subject the template can produce."""
        assert SubjectTemplate("falco.alerts.{source}.{priority}").wildcard == "falco.alerts.*.*"

    @pytest.mark.parametrize(("template", "needle"), [
        ("falco.{severity}", "unknown placeholder(s) severity"),
        ("falco alerts", "not a valid NATS subject"),
        ("falco.>", "not a valid NATS subject"),
    ])
    def test_bad_templates_are_refused(self, template: str, needle: str) -> None:
        """A subject template the server could not take is refused at start, naming the key."""
        with pytest.raises(ConfigError, match=r"outputs\.nats\.subject") as caught:
            SubjectTemplate(template)
        assert needle in str(caught.value)
