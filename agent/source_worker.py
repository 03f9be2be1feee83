"""The one worker thread of a live source: start (again after a failure), bounded stop, why it ended, and
whether it still moves on (its stop flag is a `Pulse`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from agent.errors import AgentError

log = structlog.get_logger(__name__)


class Pulse(threading.Event):
    """The stop flag a worker loop watches, which also times the loop's steps.

    A loop looks at its flag between two steps (`is_set`) and waits on it when it has nothing to do (`wait`); each
    look is progress. `busy_s()` is the time since the last look, outside waits: a loop blocked inside one call
    (a read of a FIFO, a request that never returns) makes it grow without bound. A look costs one clock read.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._busy_since: float | None = None  # None: waiting on the flag, or no loop running

    def is_set(self) -> bool:
        self._busy_since = self._clock()
        return super().is_set()

    def wait(self, timeout: float | None = None) -> bool:
        self._busy_since = None
        try:
            return super().wait(timeout)
        finally:
            self._busy_since = self._clock()

    def begin(self) -> None:
        """A loop starts: busy from now until it first looks at the flag."""
        self._busy_since = self._clock()

    def rest(self) -> None:
        """The loop ended: nothing is busy."""
        self._busy_since = None

    def busy_s(self) -> float:
        """Seconds since the loop last looked at its flag, outside waits; 0 while it waits or none runs."""
        since = self._busy_since
        return 0.0 if since is None else max(0.0, self._clock() - since)


class SourceWorker:
    """Runs a source's loop on a daemon thread; `stopping` is the flag the loop watches, and its pulse.

    An exception escaping the loop is a bug: it is logged, kept as `failure()` for the supervisor
    (which restarts the source), and `cleanup` still runs.
    """

    def __init__(self, name: str, *, join_timeout_s: float = 10.0) -> None:
        self.name = name
        self.stopping = Pulse()
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: str | None = None
        self._join_timeout_s = join_timeout_s

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def check_idle(self) -> None:
        """Refuse to start a source twice (before it loads state that its running thread owns)."""
        if self.is_running:
            raise AgentError(f"{self.name} already started")

    def start(self, loop: Callable[[], None], *, cleanup: Callable[[], None] | None = None) -> None:
        self.check_idle()
        self.stopping.clear()
        self.stopping.begin()
        self._finished.clear()
        self._failure = None

        def run() -> None:
            try:
                loop()
            except Exception as exc:
                # A bug must not pass silently; the thread ends and the supervisor restarts the source.
                log.exception("source_thread_failed", thread=self.name)
                self._failure = f"{type(exc).__name__}: {exc}"
            finally:
                if cleanup is not None:
                    cleanup()
                self.stopping.rest()
                self._finished.set()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to stop and wait for it, at most the join timeout."""
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(self._join_timeout_s)
            if self._thread.is_alive():
                log.warning("source_thread_stop_timeout", thread=self.name, timeout_s=self._join_timeout_s)

    def wait_finished(self, timeout_s: float | None = None) -> bool:
        """Whether the loop ended (its work done, stopped, or failed) within `timeout_s`."""
        return self._finished.wait(timeout_s)

    def failure(self) -> str | None:
        """Why the loop ended on its own (a bug), or None."""
        return self._failure


class Stopped(Exception):
    """A source's loop was asked to stop (or its queue closed) in the middle of handing work over."""


class WorkerSource:
    """A live source whose work runs on one SourceWorker (`_worker`): stopping, waiting for the end and the
    failure the supervisor watches all come from it."""

    _worker: SourceWorker

    def stop(self) -> None:
        """Stop taking input and wait, bounded, for the loop to end."""
        self._worker.stop()

    def wait_finished(self, timeout_s: float | None = None) -> bool:
        """Whether the loop ended (its input done without `follow`, or stopped) within `timeout_s`."""
        return self._worker.wait_finished(timeout_s)

    def failure(self) -> str | None:
        """Why the loop ended on its own (a bug), or None; the agent restarts the source then."""
        return self._worker.failure()

    def busy_s(self) -> float:
        """How long the loop has been inside one step without looking at its stop flag (ProgressReporting)."""
        return self._worker.stopping.busy_s()
