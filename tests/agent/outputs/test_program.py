"""The program output with real commands: lines on stdin, restarts after the program dies, a stuck program."""

from __future__ import annotations

import os
import select
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

from agent.outputs.async_writer import Backoff
from agent.outputs.program import ProgramOutput
from tests.agent.outputs.conftest import WAIT_S, emits_return, make_alert

FAST = Backoff(initial_s=0.01, max_s=0.05)


def new_output(command: str, **options: Any) -> ProgramOutput:
    settings: dict[str, Any] = {"as_json": False, "iso8601": False, "keep_alive": True, "max_queue": 100,
                                "close_timeout_s": WAIT_S, "backoff": FAST}
    return ProgramOutput(command, **{**settings, **options})


def wait_exit(pid: int) -> None:
    """Block until the process has ended (a pidfd turns readable), without polling."""
    fd = os.pidfd_open(pid)
    try:
        readable, _, _ = select.select([fd], [], [], WAIT_S)
        assert readable, f"process {pid} did not end within {WAIT_S}s"
    finally:
        os.close(fd)


def read_one_line(out: Path) -> str:
    """A command that appends exactly one line of its stdin to `out`, then exits."""
    script = "import sys; line = sys.stdin.readline(); open(sys.argv[1], 'a').write(line)"
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(script)} {shlex.quote(str(out))}"


class TestKeepAlive:
    def test_one_process_gets_every_line(self, tmp_path: Path) -> None:
        """All alerts reach one long-running program, one JSON line each, before close returns."""
        out = tmp_path / "out.jsonl"
        output = new_output(f"cat > {shlex.quote(str(out))}", as_json=True)
        for i in range(50):
            output.emit(make_alert(i))
        output.flush()
        assert output.wait_idle(WAIT_S)
        pid = output.pid
        output.close()
        assert [orjson.loads(line) for line in out.read_bytes().splitlines()] == [
            make_alert(i).falco_json() for i in range(50)]
        assert output.pid == pid and output.restarts == 0
        assert output.counters()["delivered"] == 50

    def test_program_that_exits_is_restarted(self, tmp_path: Path) -> None:
        """When the program has ended, the next alert starts it again and the restart is counted."""
        out = tmp_path / "out.txt"
        output = new_output(read_one_line(out))
        try:
            for i in range(3):
                output.emit(make_alert(i))
                assert output.wait_idle(WAIT_S)
                assert output.pid is not None
                wait_exit(output.pid)
        finally:
            output.close()
        assert out.read_text().splitlines() == [make_alert(i).text_line() for i in range(3)]
        assert output.restarts == 2 and output.counters()["restarts"] == 2

    def test_killed_program_is_restarted(self, tmp_path: Path) -> None:
        """A program killed from outside is replaced, and later alerts reach the new one."""
        out = tmp_path / "out.txt"
        output = new_output(f"exec cat >> {shlex.quote(str(out))}")
        try:
            output.emit(make_alert(0))
            assert output.wait_idle(WAIT_S)
            first = output.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            wait_exit(first)
            output.emit(make_alert(1))
            assert output.wait_idle(WAIT_S)
            assert output.pid != first
        finally:
            output.close()
        assert make_alert(1).text_line() in out.read_text().splitlines()
        assert output.restarts == 1

    def test_program_that_never_reads_does_not_block_emit(self) -> None:
        """With the program stuck, emit stays fast, overflow is counted, and close ends at its deadline."""
        output = new_output("exec sleep 60", as_json=True, max_queue=1000, close_timeout_s=0.2)
        # far more than the pipe (64 KiB, ~160 lines) and the queue hold; the program reads none of them
        assert emits_return(output, [make_alert(i) for i in range(3000)])
        output.close()
        counters = output.counters()
        assert counters["dropped"] > 0
        assert counters["delivered"] + counters["dropped"] + counters["rejected"] == 3000


class TestPerAlert:
    def test_command_runs_once_per_alert(self, tmp_path: Path) -> None:
        """Without keep_alive each alert starts the command with that alert alone on its stdin."""
        out = tmp_path / "out.txt"
        output = new_output(f"cat >> {shlex.quote(str(out))}", keep_alive=False, iso8601=True)
        try:
            for i in range(3):
                output.emit(make_alert(i))
            assert output.wait_idle(WAIT_S)
        finally:
            output.close()
        assert out.read_text().splitlines() == [make_alert(i).text_line(iso8601=True) for i in range(3)]
        assert output.delivered == 3 and output.restarts == 0

    def test_failing_command_is_counted_as_rejected(self) -> None:
        """A run that exits non-zero counts the alert as rejected instead of retrying it."""
        output = new_output("cat > /dev/null; exit 3", keep_alive=False)
        try:
            output.emit(make_alert(1))
            assert output.wait_idle(WAIT_S)
        finally:
            output.close()
        assert output.counters()["rejected"] == 1 and output.delivered == 0
