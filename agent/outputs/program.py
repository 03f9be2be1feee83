"""Alert lines piped to a shell command's standard input, like Falco's program_output, from a background thread.

With `keep_alive` one process reads every alert, one line each; when it has died it is started again before the next
write (counted in `restarts`). Lines the dead process had taken into its pipe but not yet read are lost with it and
cannot be counted; a write that fails is retried with backoff on the new process. Without `keep_alive` the command
runs once per alert with that alert on its standard input (e.g. `mail -s "Falco alert" ops@example.com`); a run that
exits non-zero counts as rejected. The program inherits the agent's stdout and stderr and runs in its own session,
so a Ctrl-C meant for the agent does not kill it before the last alerts are written.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading

import structlog

from agent.alert import FALCO_JSON, Alert, AlertEncoder, JsonAlertFormat, alert_encoder
from agent.outputs.async_writer import AsyncWriter, Backoff, DeliveryError, QueuedOutput, RejectedError

__all__ = ["DEFAULT_BACKOFF", "ProgramOutput"]

log = structlog.get_logger(__name__)

DEFAULT_BACKOFF = Backoff(initial_s=0.2, max_s=10.0)
_MAX_BATCH = 500
_RUN_TIMEOUT_S = 30.0  # one run of a non-keep-alive command
_EXIT_WAIT_S = 5.0  # for a keep-alive program to exit once its stdin is closed
_JOIN_GRACE_S = _EXIT_WAIT_S + 2.0


class _ProgramDestination:
    """The running process (keep-alive) or one process per alert; used by the writer thread only."""

    def __init__(self, command: str, *, encode: AlertEncoder, keep_alive: bool) -> None:
        self._command = command
        self._encode = encode
        self._keep_alive = keep_alive
        self._proc: subprocess.Popen[bytes] | None = None
        self._proc_lock = threading.Lock()
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    def _spawn(self) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(self._command, shell=True, stdin=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise DeliveryError(f"cannot start program: {exc}") from None

    def send(self, items: list[Alert]) -> None:
        data = b"".join(self._encode(alert) + b"\n" for alert in items)
        if not self._keep_alive:
            self._run_once(data)
            return
        proc = self._running()
        assert proc.stdin is not None
        try:
            proc.stdin.write(data)
            proc.stdin.flush()
        except (ValueError, OSError) as exc:  # BrokenPipeError; ValueError: pipe closed
            raise DeliveryError(f"program stdin closed ({type(exc).__name__}); it will be restarted") from None

    def _running(self) -> subprocess.Popen[bytes]:
        """The live keep-alive process, started (or restarted, counted) when there is none."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            return proc
        if proc is not None:
            self.restarts += 1
            log.warning("output_program_restarted", output="program", exit_code=proc.returncode,
                        restarts=self.restarts)
            self._close_pipe(proc)
        with self._proc_lock:
            self._proc = self._spawn()
            return self._proc

    def _run_once(self, data: bytes) -> None:
        with self._proc_lock:
            proc = self._proc = self._spawn()
        try:
            proc.communicate(data, timeout=_RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait()
            raise RejectedError(f"program did not exit within {_RUN_TIMEOUT_S}s; killed") from None
        except OSError as exc:
            proc.wait()
            raise RejectedError(f"program closed its stdin early: {exc}") from None
        if proc.returncode != 0:
            raise RejectedError(f"program exited with status {proc.returncode}")

    @staticmethod
    def _close_pipe(proc: subprocess.Popen[bytes]) -> None:
        if proc.stdin is not None:
            # OSError: the reader is gone; what was buffered in the pipe is lost with it (see module docstring).
            with contextlib.suppress(OSError):
                proc.stdin.close()

    def kill(self) -> None:
        """End the current process now (any thread): unblocks a writer stuck on a program that does not read."""
        with self._proc_lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            _kill_group(proc)

    def release(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._close_pipe(proc)
        try:
            proc.wait(_EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            log.warning("output_program_killed", output="program", reason="did not exit after stdin closed")
            _kill_group(proc)
            proc.wait()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the program's session: the shell and whatever it forked, which may hold the pipe open."""
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(proc.pid, signal.SIGKILL)


class ProgramOutput(QueuedOutput[Alert]):
    """Falco's program_output; `emit` never waits for the program."""

    name = "program"

    def __init__(self, command: str, *, as_json: bool, iso8601: bool, keep_alive: bool, max_queue: int,
                 close_timeout_s: float, json_format: JsonAlertFormat = FALCO_JSON,
                 backoff: Backoff = DEFAULT_BACKOFF) -> None:
        encode = alert_encoder(as_json=as_json, iso8601=iso8601, json_format=json_format)
        self._destination = _ProgramDestination(command, encode=encode, keep_alive=keep_alive)
        self._close_timeout_s = close_timeout_s
        self._writer: AsyncWriter[Alert] = AsyncWriter(self.name, self._destination, max_queue=max_queue,
                                                       max_batch=_MAX_BATCH if keep_alive else 1, backoff=backoff)

    def close(self) -> None:
        """Write what is queued until `close_timeout_s`, close the program's stdin and wait for it to exit."""
        if not self._writer.stop(self._close_timeout_s):
            log.warning("output_close_deadline", output=self.name, timeout_s=self._close_timeout_s)
            self._destination.kill()
        if not self._writer.join(_JOIN_GRACE_S):
            self._destination.kill()
            if not self._writer.join(_JOIN_GRACE_S):
                log.error("output_writer_stuck", output=self.name)

    @property
    def pid(self) -> int | None:
        """The process id of the current (or last) program; None before the first alert."""
        return self._destination.pid

    def counters(self) -> dict[str, int]:
        """delivered, dropped, rejected, failed_attempts, restarts and queue_depth, for the metrics endpoint."""
        return {**self._writer.counters(), "restarts": self._destination.restarts}

    @property
    def restarts(self) -> int:
        return self._destination.restarts
