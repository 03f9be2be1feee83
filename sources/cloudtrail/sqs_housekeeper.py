"""The SQS consumer's housekeeper: deletes completed messages in batches and keeps held messages invisible.

Deleting in batches of ten saves calls; a delete SQS refuses is retried with backoff, up to five times. A message
held longer than half its visibility timeout gets it extended, so that no other agent receives it meanwhile.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import structlog

from sources.cloudtrail.aws import backoff_s
from sources.cloudtrail.sqs_calls import HeldMessage, QueueCalls

log = structlog.get_logger(__name__)
_DELETE_ATTEMPTS = 5


class Housekeeper:
    """Runs on its own thread (`run`) until `stopping` is set, then deletes what is left once.

    `held` lists the messages in flight, `delete` deletes (and counts and forgets) messages and returns those
    it could not, `forget` drops a message from the consumer's books and `count` bumps a counter.
    """

    def __init__(self, calls: QueueCalls, *, visibility_timeout_s: int, stopping: threading.Event,
                 held: Callable[[], list[HeldMessage]], delete: Callable[[list[HeldMessage]], list[HeldMessage]],
                 forget: Callable[[HeldMessage], None], count: Callable[[str, int], None]) -> None:
        self._calls = calls
        self._visibility_timeout_s = visibility_timeout_s
        # Extend well before expiry: check four times per timeout, extend when half of it is left.
        self._tick_s = max(0.05, min(1.0, visibility_timeout_s / 4))
        self._stopping = stopping
        self._held = held
        self._delete = delete
        self._forget = forget
        self._count = count
        self._lock = threading.Lock()
        self._completed: list[HeldMessage] = []
        self._is_running = True
        self._wake = threading.Event()

    def complete(self, message: HeldMessage) -> bool:
        """Queue a completed message for deletion; False once housekeeping ended (the caller deletes it)."""
        with self._lock:
            if not self._is_running:
                return False
            self._completed.append(message)
        self._wake.set()
        return True

    def wake(self) -> None:
        self._wake.set()

    def run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._tick_s)
            self._wake.clear()
            self._flush_deletes(final=False)
            self._extend_visibility()
        self.finish()

    def finish(self) -> None:
        """End housekeeping and delete what completed; run by `run` on its way out, or by `stop` if it died."""
        with self._lock:
            self._is_running = False
        self._flush_deletes(final=True)

    def _flush_deletes(self, *, final: bool) -> None:
        now = time.monotonic()
        with self._lock:
            due = [message for message in self._completed if final or message.retry_at <= now]
            self._completed = [message for message in self._completed if message not in due]
        retry: list[HeldMessage] = []
        for message in self._delete(due):
            message.delete_attempts += 1
            if final or message.delete_attempts >= _DELETE_ATTEMPTS:
                log.error("sqs_message_delete_failed", message_id=message.message_id,
                          attempts=message.delete_attempts)
                self._forget(message)
            else:
                message.retry_at = now + backoff_s(message.delete_attempts)
                retry.append(message)
        with self._lock:
            self._completed.extend(retry)

    def _extend_visibility(self) -> None:
        now = time.monotonic()
        due = [message for message in self._held() if message.visible_until - now < self._visibility_timeout_s / 2]
        changed, refused = self._calls.change_visibility(due, self._visibility_timeout_s)
        for message in changed:
            message.visible_until = now + self._visibility_timeout_s
        self._count("visibility_extensions", len(changed))
        for message in refused:
            # SQS refuses when the message is no longer ours (it expired, or passed the 12-hour cap): asking
            # again never helps. The work goes on; its delete may fail and the records be evaluated twice.
            message.visible_until = math.inf
