"""structlog set-up: JSON lines on stderr when it is not a terminal, readable text when it is; and to syslog if asked.

These are the agent's own logs (Falco's `log_stderr` and `log_syslog`), not alerts. In syslog they carry the ident
`falco-agent`, the agent's program name, as glibc's syslog(3) would name it; alerts sent by the syslog output carry
`falco` (Falco's), so that a syslog rule can keep the two apart. Each log line is one datagram at the severity of its
level, sent without waiting: when the daemon is absent or busy the line is dropped there (still on stderr if that is
on), which is reported once on the logs themselves.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass

import structlog

from agent.outputs.syslog import FACILITIES, SyslogSocket

SYSLOG_IDENT = "falco-agent"
_SEVERITY = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}


class _SyslogSink:
    """The logs' connection to syslog; `send` is called under the logging lock."""

    def __init__(self, address: str) -> None:
        self._socket = SyslogSocket(address, ident=SYSLOG_IDENT, facility=FACILITIES["user"], timeout_s=0)
        self._dropped = 0

    def send(self, severity: int, message: str) -> None:
        try:
            self._socket.send(severity, message.encode("utf-8", "replace"))
        except OSError as exc:
            self._socket.close()  # connect again for the next line
            self._dropped += 1
            if self._dropped == 1:  # reported once per outage, through the logs (which come back here: counted)
                structlog.get_logger(__name__).warning(
                    "syslog_log_unavailable", address=self._socket.address, error=exc.strerror or str(exc),
                    hint="the agent's logs are not sent to syslog until it accepts them again")
            return
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            structlog.get_logger(__name__).info("syslog_log_recovered", address=self._socket.address,
                                                dropped=dropped)

    def close(self) -> None:
        self._socket.close()


@dataclass(slots=True)
class _Sinks:
    stderr: bool = True
    syslog: _SyslogSink | None = None


# Read at each line, so that a later configure_logging reaches the loggers structlog cached before it.
_sinks = _Sinks()


class _LineLogger:
    """Writes each event as one whole line to whatever `sys.stderr` is then (tests swap it), and to syslog.

    One lock for the process: lines from concurrent threads never interleave. Re-entrant: a syslog failure is
    reported by a log line written while the line that failed holds the lock.
    """

    _lock = threading.RLock()

    def _write(self, message: str, severity: int) -> None:
        with self._lock:
            if _sinks.stderr:
                sys.stderr.write(message + "\n")
                sys.stderr.flush()
            if _sinks.syslog is not None:
                _sinks.syslog.send(severity, message)

    def debug(self, message: str) -> None:
        self._write(message, _SEVERITY["debug"])

    def info(self, message: str) -> None:
        self._write(message, _SEVERITY["info"])

    def warning(self, message: str) -> None:
        self._write(message, _SEVERITY["warning"])

    def error(self, message: str) -> None:
        self._write(message, _SEVERITY["error"])

    def critical(self, message: str) -> None:
        self._write(message, _SEVERITY["critical"])

    msg = log = info
    warn = warning
    err = exception = failure = error
    fatal = critical


def configure_logging(*, level: str = "info", json: bool | None = None, stderr: bool = True,
                      syslog_address: str | None = None) -> None:
    """Configure at the CLI edge (again once the configuration is read); stdout stays free for alerts.

    `stderr` False keeps the logs off stderr; `syslog_address` (a unix datagram socket, /dev/log) sends them there.
    """
    as_json = not sys.stderr.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    with _LineLogger._lock:
        if _sinks.syslog is not None:
            _sinks.syslog.close()
        _sinks.stderr = stderr
        _sinks.syslog = _SyslogSink(syslog_address) if syslog_address else None
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=lambda *_args: _LineLogger(),
        cache_logger_on_first_use=True,
    )
