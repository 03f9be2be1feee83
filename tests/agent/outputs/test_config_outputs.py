"""Outputs as the configuration builds them: Falco's json_include_* keys on every JSON output, buffered_outputs,
outputs_queue.capacity, file keep_alive."""

from __future__ import annotations

import io
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest

from agent.alert import JsonAlertFormat
from agent.config.load import load_config
from agent.outputs.base import Output
from agent.outputs.file import FileOutput
from agent.outputs.stdout import StdoutOutput
from agent.runtime import build_outputs
from tests.agent.outputs.conftest import WAIT_S, make_alert, receiver

ALWAYS = {"hostname", "priority", "rule", "source", "time"}


def outputs_of(*overrides: str, json_alerts: bool = False) -> list[Output]:
    """The outputs of the built-in configuration with `overrides`, stdout off unless an override turns it on."""
    config = load_config(None, overrides=["outputs.stdout.enabled=false", *overrides])
    return build_outputs(config, json_alerts=json_alerts)


def close_all(outputs: list[Output]) -> None:
    for output in outputs:
        output.close()


@contextmanager
def stdout_pipe() -> Iterator[int]:
    """sys.stdout on the write end of a pipe (as when the agent's alerts are piped to a script); yields the read end,
    non-blocking, so that a test sees exactly what was written through so far. Entered in the test itself: pytest
    sets its own sys.stdout again after the fixtures are set up."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdout", io.TextIOWrapper(io.BufferedWriter(io.FileIO(write_fd, "w"), 1 << 16)))
        try:
            yield read_fd
        finally:
            os.close(read_fd)


def pending(read_fd: int) -> bytes:
    try:
        return os.read(read_fd, 1 << 16)
    except BlockingIOError:
        return b""


class TestJsonProperties:
    @pytest.mark.parametrize(("key", "prop", "default"), [
        ("include_output", "output", True), ("include_message", "message", False),
        ("include_output_fields", "output_fields", True), ("include_tags", "tags", True)])
    def test_each_include_key_adds_or_removes_its_property(self, key: str, prop: str, default: bool) -> None:
        """Each json_include_* key alone decides its property; the five others are always there."""
        alert = make_alert(1)
        on = JsonAlertFormat(**{key: True}).document(alert)
        off = JsonAlertFormat(**{key: False}).document(alert)
        assert prop in on and prop not in off
        assert set(on) - set(off) == {prop} and set(off) >= ALWAYS
        assert (prop in JsonAlertFormat().document(alert)) is default

    def test_values_and_key_order_are_falcos(self) -> None:
        """message is the output without time and priority; keys come sorted, as Falco writes them."""
        alert = make_alert(1)
        document = orjson.loads(JsonAlertFormat(include_message=True).line(alert))
        assert document["message"] == "alert number 1 (proc.name=cat)"
        assert document["output"] == alert.text_line()
        assert list(document) == sorted(document)
        lean = JsonAlertFormat(include_output=False, include_output_fields=False, include_tags=False)
        assert set(orjson.loads(lean.line(alert))) == ALWAYS

    @pytest.mark.server
    def test_every_json_output_writes_the_configured_object(self, tmp_path: Path) -> None:
        """stdout, file, program, HTTP and syslog all write the object the outputs.json keys describe."""
        keys = ["outputs.json.include_message=true", "outputs.json.include_tags=false",
                "outputs.json.include_output_fields=false"]
        alert = make_alert(7)
        expected = orjson.loads(JsonAlertFormat(include_message=True, include_tags=False,
                                                include_output_fields=False).line(alert))
        with receiver() as server, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as daemon, \
                stdout_pipe() as from_stdout:
            daemon.bind(str(tmp_path / "log"))
            daemon.settimeout(WAIT_S)
            outputs = outputs_of(
                *keys, "outputs.stdout.enabled=true", "outputs.stdout.format=json",
                "outputs.file.enabled=true", f"outputs.file.path={tmp_path / 'alerts.json'}",
                "outputs.program.enabled=true", "outputs.program.format=json",
                f"outputs.program.command=cat > {tmp_path / 'program.json'}",
                "outputs.http.enabled=true", f"outputs.http.url={server.url}/alerts",
                "outputs.syslog.enabled=true", "outputs.syslog.format=json",
                f"outputs.syslog.address={tmp_path / 'log'}")
            assert sorted(output.name for output in outputs) == ["file", "http", "program", "stdout", "syslog"]
            try:
                for output in outputs:
                    output.emit(alert)
                    output.flush()
                assert server.wait_for(lambda got: len(got) == 1)
                from_syslog = daemon.recv(1 << 16).split(b": ", 1)[1]
            finally:
                close_all(outputs)
            written = {
                "stdout": pending(from_stdout),
                "file": (tmp_path / "alerts.json").read_bytes(),
                "program": (tmp_path / "program.json").read_bytes(),
                "http": server.received[0].body,
                "syslog": from_syslog,
            }
        assert {name: orjson.loads(data) for name, data in written.items()} == dict.fromkeys(written, expected)


class TestBuffered:
    def test_unbuffered_stdout_is_readable_after_each_alert(self) -> None:
        """buffered false (Falco's buffered_outputs: false): each alert reaches the pipe as it is emitted, before
        the batch ends and the runtime flushes."""
        with stdout_pipe() as reader:
            (output,) = outputs_of("outputs.stdout.enabled=true", "outputs.buffered=false")
            output.emit(make_alert(1))
            assert pending(reader) == make_alert(1).text_bytes() + b"\n"
            output.emit(make_alert(2))
            assert pending(reader) == make_alert(2).text_bytes() + b"\n"
            output.close()

    def test_buffered_stdout_waits_for_the_flush_after_the_batch(self) -> None:
        """buffered true (the agent's default): lines wait in the buffer until the flush after the batch."""
        with stdout_pipe() as reader:
            (output,) = outputs_of("outputs.stdout.enabled=true", "outputs.buffered=true")
            output.emit(make_alert(1))
            output.emit(make_alert(2))
            assert pending(reader) == b""
            output.flush()
            assert pending(reader) == make_alert(1).text_bytes() + b"\n" + make_alert(2).text_bytes() + b"\n"
            output.close()


class TestQueueCapacity:
    @pytest.mark.server
    def test_capacity_replaces_each_outputs_own_queue_size(self) -> None:
        """outputs.queue_capacity 2: with the endpoint down, past one alert in flight and two queued, alerts are
        dropped, though outputs.http.max_queue says 10000."""
        with receiver(lambda index: 503) as server:
            (output,) = outputs_of("outputs.http.enabled=true", f"outputs.http.url={server.url}/alerts",
                                   "outputs.http.close_timeout_s=0", "outputs.queue_capacity=2")
            try:
                output.emit(make_alert(0))
                assert server.wait_for(lambda got: len(got) >= 1)  # taken by the writer: in flight
                for i in range(1, 6):
                    output.emit(make_alert(i))
                dropped_while_down = output.counters()["dropped"]  # type: ignore[attr-defined]
            finally:
                output.close()
        assert dropped_while_down == 3


class TestFileKeepAlive:
    def test_without_keep_alive_a_moved_file_is_followed_without_a_signal(self, tmp_path: Path) -> None:
        """keep_alive false opens the path for each alert: after logrotate moves the file away (no SIGUSR1), the
        next alert goes to a new file at the path."""
        path = tmp_path / "alerts.log"
        (output,) = outputs_of("outputs.file.enabled=true", f"outputs.file.path={path}", "outputs.file.format=text",
                               "outputs.file.keep_alive=false")
        assert isinstance(output, FileOutput)
        output.emit(make_alert(1))
        path.rename(tmp_path / "alerts.log.1")
        output.emit(make_alert(2))
        output.sync()  # by path: the descriptor is closed already
        path.unlink()
        output.emit(make_alert(3))
        output.close()
        assert (tmp_path / "alerts.log.1").read_text() == make_alert(1).text_line() + "\n"
        assert path.read_text() == make_alert(3).text_line() + "\n"
        assert output.counters() == {"delivered": 3, "dropped": 0, "reopens": 0}

    def test_with_keep_alive_a_moved_file_keeps_the_alerts_until_reopen(self, tmp_path: Path) -> None:
        """keep_alive true (the default) writes to the same open file until SIGUSR1 asks for a reopen."""
        path = tmp_path / "alerts.log"
        (output,) = outputs_of("outputs.file.enabled=true", f"outputs.file.path={path}", "outputs.file.format=text")
        output.emit(make_alert(1))
        path.rename(tmp_path / "alerts.log.1")
        output.emit(make_alert(2))
        output.close()
        assert not path.exists()
        assert len((tmp_path / "alerts.log.1").read_text().splitlines()) == 2


def test_stdout_json_flag_and_format_choose_json() -> None:
    """The command line's --json makes stdout write JSON whatever outputs.stdout.format says."""
    stream = io.BytesIO()
    output = StdoutOutput(as_json=True, iso8601=False, stream=stream)
    output.emit(make_alert(1))
    assert orjson.loads(stream.getvalue()) == make_alert(1).falco_json()
