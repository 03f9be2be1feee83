"""Alerts sent to the local syslog daemon, as Falco's syslog_output does through syslog(3), from a background thread.

Each alert is one datagram on the unix datagram socket at `address` (/dev/log: journald, rsyslog, syslog-ng), laid
out as glibc's syslog(3) writes it, RFC 3164 style: `<PRI>Mmm dd hh:mm:ss IDENT[PID]: MESSAGE`, with PRI = facility * 8
+ severity, the severity being the alert's priority (Falco's priorities are the syslog severities, emergency 0 to
debug 7), the time local and of the sending, and no trailing newline or NUL. MESSAGE is Falco's text line or its JSON
alert object. A datagram is at most MAX_DATAGRAM_BYTES: a longer message is cut (at a character boundary, counted in
`truncated`) rather than split, since half a JSON object in each of two syslog records helps no reader.

Syslog is best effort, as in Falco: an alert that cannot be sent now is dropped and counted, never retried later and
never allowed to block the engine. No socket at `address` (a container without /dev/log) or a daemon that went away:
the batch is dropped and the connection tried again at the next batch; a daemon that does not read for `timeout_s`
(its queue full): the rest of the batch is dropped. Each outage is logged once when it starts and once when it ends.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from dataclasses import dataclass

import structlog

from agent.alert import FALCO_JSON, Alert, AlertEncoder, JsonAlertFormat, alert_encoder
from agent.outputs.async_writer import AsyncWriter, Backoff, DroppedError, QueuedOutput

__all__ = ["FACILITIES", "MAX_DATAGRAM_BYTES", "SyslogOutput", "SyslogSocket"]

log = structlog.get_logger(__name__)

#: The facility codes of <syslog.h> the configuration may name.
FACILITIES = {"kern": 0, "user": 1, "daemon": 3, "auth": 4, "syslog": 5, "local0": 16, "local1": 17, "local2": 18,
              "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23}
#: Far below what the kernel refuses on a unix datagram socket with the default send buffer (about 208 KiB), and what
#: syslog-ng takes by default; rsyslog keeps the first 8 KiB of a longer message unless told otherwise.
MAX_DATAGRAM_BYTES = 64 * 1024
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MAX_BATCH = 500
_CLOSE_TIMEOUT_S = 2.0
_JOIN_GRACE_S = 2.0
# Errors that say the daemon's socket is gone or was replaced (a restarted journald): connect again, send again once.
_RECONNECT_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ENOTCONN, errno.EPIPE, errno.ECONNRESET, errno.EDESTADDRREQ})


class SyslogSocket:
    """A connection to the syslog daemon's datagram socket, sending one message per datagram.

    `send` raises OSError when the message could not be sent; the caller counts and reports it. Not thread-safe: one
    user at a time. With `timeout_s` 0 a send never waits (the daemon's queue full is BlockingIOError at once).
    """

    def __init__(self, address: str, *, ident: str, facility: int, timeout_s: float) -> None:
        self.address = address
        self.truncated = 0
        self._tag = f"{ident}[{os.getpid()}]: ".encode()
        self._facility = facility
        self._timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._stamp_second = -1
        self._stamp = b""

    def send(self, severity: int, message: bytes) -> None:
        datagram = self._datagram(severity, message)
        if self._sock is None:
            self._connect()
        assert self._sock is not None
        try:
            self._sock.send(datagram)
        except OSError as exc:
            if exc.errno not in _RECONNECT_ERRNOS:
                raise
            self.close()  # as glibc does: the daemon may have come back on a new socket
            self._connect()
            assert self._sock is not None
            self._sock.send(datagram)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.address)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EPROTOTYPE:
                raise OSError(exc.errno, f"{self.address} is a stream socket; only datagram sockets are "
                                         "supported") from None
            raise
        sock.settimeout(self._timeout_s)
        self._sock = sock

    def _datagram(self, severity: int, message: bytes) -> bytes:
        header = b"<%d>%s%s" % (self._facility * 8 + severity, self._timestamp(), self._tag)
        room = MAX_DATAGRAM_BYTES - len(header)
        if len(message) > room:
            self.truncated += 1
            message = _cut(message, room)
        return header + message

    def _timestamp(self) -> bytes:
        """`Mmm dd hh:mm:ss ` in local time, the day padded with a space (strftime's `%b %e %T `, C locale)."""
        second = int(time.time())
        if second != self._stamp_second:
            now = time.localtime(second)
            self._stamp = b"%s %2d %02d:%02d:%02d " % (_MONTHS[now.tm_mon - 1].encode(), now.tm_mday, now.tm_hour,
                                                        now.tm_min, now.tm_sec)
            self._stamp_second = second
        return self._stamp


def _cut(message: bytes, size: int) -> bytes:
    """The first `size` bytes of UTF-8 `message` or fewer, never ending inside a character."""
    end = size
    while end > 0 and message[end] & 0xC0 == 0x80:  # message[end] continues the character begun before it
        end -= 1
    return message[:end]


@dataclass(slots=True)
class _Outage:
    """Why sending fails now, and how many alerts were dropped since."""

    reason: str
    dropped: int = 0


class _SyslogDestination:
    """Sends each alert of a batch; used by the writer thread only."""

    def __init__(self, sock: SyslogSocket, encode: AlertEncoder) -> None:
        self._sock = sock
        self._encode = encode
        self._outage: _Outage | None = None

    def send(self, items: list[Alert]) -> None:
        dropped = 0
        for index, alert in enumerate(items):
            try:
                self._sock.send(int(alert.priority), self._encode(alert))
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:  # this one datagram, not the connection
                    self._dropped(f"message too long for the socket: {exc.strerror}", 1)
                    dropped += 1
                    continue
                if not isinstance(exc, TimeoutError | BlockingIOError):
                    self._sock.close()  # connect again at the next batch
                self._dropped(_describe(exc), len(items) - index)
                raise DroppedError(str(exc), count=dropped + len(items) - index) from None
            if self._outage is not None:
                log.info("syslog_output_recovered", output=SyslogOutput.name, address=self._sock.address,
                         dropped=self._outage.dropped)
                self._outage = None
        if dropped:
            raise DroppedError("messages too long for the socket", count=dropped)

    def _dropped(self, reason: str, count: int) -> None:
        if self._outage is None:
            self._outage = _Outage(reason)
            log.warning("syslog_output_unavailable", output=SyslogOutput.name, address=self._sock.address,
                        error=reason, hint="alerts for syslog are dropped and counted until it accepts them; in a "
                                           "container, mount the host's /dev/log or disable the syslog output")
        self._outage.dropped += count

    def release(self) -> None:
        self._sock.close()


def _describe(exc: OSError) -> str:
    if isinstance(exc, TimeoutError | BlockingIOError):
        return "the syslog daemon does not read (its queue is full)"
    return exc.strerror or str(exc)


class SyslogOutput(QueuedOutput[Alert]):
    """Falco's syslog_output; `emit` never waits for the daemon."""

    name = "syslog"

    def __init__(self, address: str = "/dev/log", *, as_json: bool, iso8601: bool, facility: str = "user",
                 ident: str = "falco", max_queue: int, timeout_s: float,
                 json_format: JsonAlertFormat = FALCO_JSON) -> None:
        self._socket = SyslogSocket(address, ident=ident, facility=FACILITIES[facility], timeout_s=timeout_s)
        destination = _SyslogDestination(self._socket, alert_encoder(as_json=as_json, iso8601=iso8601,
                                                                     json_format=json_format))
        self._timeout_s = timeout_s
        # Nothing is retried (DroppedError), so the backoff is never used.
        self._writer: AsyncWriter[Alert] = AsyncWriter(self.name, destination, max_queue=max_queue,
                                                       max_batch=_MAX_BATCH, backoff=Backoff())

    def close(self) -> None:
        """Send what is queued until a short deadline (the daemon is local), then count the rest as dropped."""
        if not self._writer.stop(_CLOSE_TIMEOUT_S):
            log.warning("output_close_deadline", output=self.name, timeout_s=_CLOSE_TIMEOUT_S)
        if not self._writer.join(self._timeout_s + _JOIN_GRACE_S):
            log.error("output_writer_stuck", output=self.name)

    def counters(self) -> dict[str, int]:
        """delivered, dropped, rejected, failed_attempts, queue_depth and truncated, for the metrics endpoint."""
        return {**self._writer.counters(), "truncated": self._socket.truncated}
