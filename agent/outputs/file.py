"""Alerts appended to a file, one line each (Falco's text line or its JSON object), reopened for log rotation.

Each alert is one unbuffered `write` to a descriptor opened with O_APPEND, so a line is on disk (in the page cache)
when `emit` returns and nothing waits in a user-space buffer when the agent dies. `reopen()` only raises a flag: it
is safe from a signal handler (SIGUSR1, after logrotate renamed the file) and from any thread, and the engine thread
reopens the path before its next write. A write that fails (disk full, file system gone) never raises into the
engine: the alert is counted as dropped, the failure is logged once per burst, and the next alert tries a fresh
descriptor.

The page cache outlives the agent process (SIGKILL), not the machine. `sync()` makes what was written durable
(fdatasync); the runtime calls it before it acknowledges a batch to a source that checkpoints, so that a machine crash
never keeps a checkpoint while losing the alerts of the events it covers. A descriptor is also synced before it is
closed (rotation, a failed write, shutdown). A kill can also stop the write of an alert midway (between two pages),
leaving the file ending mid-line: opening it ends that line first, so that the next alert is a line of its own.

Without `keep_alive` (Falco's `file_output.keep_alive: false`) every alert opens the path, writes and closes, so a
file moved away or deleted (logrotate without a signal) is followed at the next alert. Closing then skips the
fdatasync, which would cost a disk flush per alert; `sync()` finds the file again by its path instead, which misses
only alerts whose file was moved away between their write and the sync.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import structlog

from agent.alert import FALCO_JSON, Alert, JsonAlertFormat, alert_encoder
from agent.errors import ConfigError

__all__ = ["FileOutput"]

log = structlog.get_logger(__name__)

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
_MODE = 0o640  # alerts name users, files and commands: not for every local account


class FileOutput:
    """Falco's file_output; `emit`, `flush` and `close` run on the engine thread, `reopen` anywhere."""

    name = "file"

    def __init__(self, path: str | Path, *, as_json: bool, iso8601: bool, json_format: JsonAlertFormat = FALCO_JSON,
                 keep_alive: bool = True) -> None:
        self.path = Path(path)
        self._encode = alert_encoder(as_json=as_json, iso8601=iso8601, json_format=json_format)
        self._keep_alive = keep_alive
        self._reopen_requested = False
        self._burst = 0
        self._unsynced = False  # alerts written to the descriptor since its last fdatasync
        self.delivered = 0
        self.dropped = 0
        self.reopens = 0
        try:
            self._fd: int | None = _open(self.path)
        except OSError as exc:
            raise ConfigError(f"cannot open alerts file {self.path}: {exc.strerror}") from None
        if not keep_alive:
            self._release_fd()

    def reopen(self) -> None:
        """Ask for the path to be opened again before the next write (logrotate's SIGUSR1); never blocks.

        Without keep_alive there is nothing to do: every alert opens the path anyway."""
        self._reopen_requested = self._keep_alive

    def emit(self, alert: Alert) -> None:
        line = self._encode(alert) + b"\n"
        if self._reopen_requested:
            self._reopen()
        try:
            if self._fd is None:
                self._fd = _open(self.path)
            _write_all(self._fd, line)
        except OSError as exc:
            self._failed(exc)
            return
        self._unsynced = True
        if not self._keep_alive:
            self._release_fd()
        self.delivered += 1
        if self._burst:
            log.warning("output_write_recovered", output=self.name, file=str(self.path), dropped=self._burst,
                        total=self.dropped)
            self._burst = 0

    def flush(self) -> None:
        """Writes are unbuffered; only a pending reopen is carried out, so rotation takes effect without an alert."""
        if self._reopen_requested:
            self._reopen()

    def sync(self) -> None:
        """Put the alerts written since the last sync on the disk itself (fdatasync); nothing to do if none were."""
        if not self._unsynced:
            return
        self._unsynced = False
        try:
            if self._fd is not None:
                os.fdatasync(self._fd)
            else:  # closed after each alert (no keep_alive): the same file by its path
                _sync_path(self.path)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return  # a pipe or a device (/dev/stdout): nothing is kept that could be synced
            log.error("output_sync_failed", output=self.name, file=str(self.path), error=exc.strerror,
                      hint="alerts written since the last sync may be lost if the machine crashes")

    def close(self) -> None:
        self._close_fd()

    def counters(self) -> dict[str, int]:
        """delivered, dropped (failed writes) and reopens, for the metrics endpoint."""
        return {"delivered": self.delivered, "dropped": self.dropped, "reopens": self.reopens}

    def _reopen(self) -> None:
        self._reopen_requested = False
        self._close_fd()
        self.reopens += 1
        try:
            self._fd = _open(self.path)
        except OSError as exc:
            # The next emit tries again; its failure is counted there.
            log.error("output_reopen_failed", output=self.name, file=str(self.path), error=exc.strerror)
            return
        log.info("output_reopened", output=self.name, file=str(self.path))

    def _failed(self, exc: OSError) -> None:
        self.dropped += 1
        self._burst += 1
        if self._burst == 1:
            log.error("output_write_failed", output=self.name, file=str(self.path), error=exc.strerror,
                      hint="alerts are dropped and counted until a write succeeds")
        self._close_fd()

    def _close_fd(self) -> None:
        self.sync()
        self._release_fd()

    def _release_fd(self) -> None:
        """Close the descriptor without syncing it."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as exc:
                log.warning("output_close_failed", output=self.name, file=str(self.path), error=exc.strerror)


def _open(path: Path) -> int:
    """Open `path` for appending; a last line a kill cut short (no final newline) is ended first."""
    fd = os.open(path, _FLAGS, _MODE)
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_size and _last_byte(path, st.st_size) != b"\n":
            _write_all(fd, b"\n")
            log.warning("output_torn_line_ended", output=FileOutput.name, file=str(path), offset=st.st_size)
    except OSError:
        os.close(fd)
        raise
    return fd


def _sync_path(path: Path) -> None:
    # O_NONBLOCK: opening a named pipe to read would otherwise wait for a writer.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _last_byte(path: Path, size: int) -> bytes:
    """The last byte of the regular file at `path` of `size` bytes; the newline when it cannot be read."""
    try:
        with path.open("rb") as existing:
            return os.pread(existing.fileno(), 1, size - 1)
    except OSError:
        return b"\n"  # not readable by us (write-only permission): nothing to check, nothing to end


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
