"""structlog set-up: JSON lines on stderr when it is not a terminal, readable text when it is."""

from __future__ import annotations

import logging
import sys
import threading

import structlog


class _LineLogger:
    """Writes each event as one whole line to whatever `sys.stderr` is then (tests swap it).

    One lock for the process: lines from concurrent threads never interleave.
    """

    _lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self._lock:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()

    debug = info = warning = warn = error = err = critical = exception = fatal = failure = log = msg


def configure_logging(*, level: str = "info", json: bool | None = None) -> None:
    """Configure once at the CLI edge; stdout stays free for alerts."""
    as_json = not sys.stderr.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    )
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
