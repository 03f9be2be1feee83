"""Calls on one SQS queue for the SQS consumer: receive, dead-letter, and deletes and visibility changes in batches.

Every failed call, and every entry SQS refuses within a batch, is counted (`sqs_errors`, `s3_errors`) and
logged once as `aws_call_failed`; the callers decide what a failure means for the message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from sources.cloudtrail.aws import AWS_ERRORS, describe

log = structlog.get_logger(__name__)

#: SQS's limit per ReceiveMessage and per batch call.
SQS_BATCH = 10
_REASON_MAX_CHARS = 1000


@dataclass(slots=True, eq=False)
class HeldMessage:
    """A received message while this agent holds it. `pending` counts batches put whose on_done has not run."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    visible_until: float  # time.monotonic(); only the receiver (at creation) and the housekeeper write it
    pending: int = 0
    batches_put: int = 0
    is_submitted: bool = False  # every batch of the message was put
    delete_attempts: int = 0
    retry_at: float = 0.0


class QueueCalls:
    """Batched calls on one queue; `count(name, n)` bumps the consumer's counters. Thread-safe if `count` is."""

    def __init__(self, client: Any, queue_url: str, *, count: Callable[[str, int], None]) -> None:
        self.client = client
        self.queue_url = queue_url
        self._count = count

    def failed(self, service: str, operation: str, exc: Exception, **context: Any) -> None:
        """Count and log a failed AWS call (of this queue or of S3 on its behalf)."""
        self._count(f"{service}_errors", 1)
        log.warning("aws_call_failed", service=service, operation=operation, error=describe(exc), **context)

    def receive(self, *, max_messages: int, wait_time_s: int, visibility_timeout_s: int) -> list[HeldMessage]:
        """Long-poll for messages; AWS errors are raised to the caller, which backs off."""
        received_at = time.monotonic()
        response = self.client.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=min(SQS_BATCH, max_messages), WaitTimeSeconds=wait_time_s,
            VisibilityTimeout=visibility_timeout_s, MessageSystemAttributeNames=["ApproximateReceiveCount"])
        out = []
        for raw in response.get("Messages", []):
            count = raw.get("Attributes", {}).get("ApproximateReceiveCount", "1")
            # The visibility clock starts when SQS answers, after `received_at`: counting from it errs on the safe
            # side.
            out.append(HeldMessage(raw["MessageId"], raw["ReceiptHandle"], raw.get("Body", ""),
                                   int(count) if str(count).isdigit() else 1, received_at + visibility_timeout_s))
        return out

    def send_dead_letter(self, dead_letter_queue_url: str, message: HeldMessage, reason: str) -> bool:
        """Copy a message that keeps failing to the dead-letter queue with the reason; False when that failed."""
        attributes = {
            "reason": {"DataType": "String", "StringValue": reason[:_REASON_MAX_CHARS]},
            "source_message_id": {"DataType": "String", "StringValue": message.message_id},
            "receive_count": {"DataType": "Number", "StringValue": str(message.receive_count)},
        }
        try:
            self.client.send_message(QueueUrl=dead_letter_queue_url, MessageBody=message.body or "<empty>",
                                     MessageAttributes=attributes)
        except AWS_ERRORS as exc:
            self.failed("sqs", "send_message", exc, message_id=message.message_id)
            return False
        return True

    def delete(self, messages: list[HeldMessage]) -> tuple[list[HeldMessage], list[HeldMessage]]:
        """Delete finished messages: (deleted, not deleted)."""
        deleted: list[HeldMessage] = []
        failed: list[HeldMessage] = []
        for chunk in _chunks(messages):
            entries = [{"Id": str(index), "ReceiptHandle": message.receipt_handle}
                       for index, message in enumerate(chunk)]
            try:
                response = self.client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except AWS_ERRORS as exc:
                self.failed("sqs", "delete_message_batch", exc, count=len(chunk))
                failed += chunk
                continue
            failed_ids = self._failed_ids(response, "delete_message_batch")
            for index, message in enumerate(chunk):
                (failed if str(index) in failed_ids else deleted).append(message)
        return deleted, failed

    def change_visibility(self, messages: list[HeldMessage],
                          timeout_s: int) -> tuple[list[HeldMessage], list[HeldMessage]]:
        """Set the visibility timeout of messages: (changed, refused by SQS); a failed call leaves both out."""
        changed: list[HeldMessage] = []
        refused: list[HeldMessage] = []
        for chunk in _chunks(messages):
            entries = [{"Id": str(index), "ReceiptHandle": message.receipt_handle, "VisibilityTimeout": timeout_s}
                       for index, message in enumerate(chunk)]
            try:
                response = self.client.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)
            except AWS_ERRORS as exc:
                self.failed("sqs", "change_message_visibility_batch", exc, count=len(chunk))
                continue
            failed_ids = self._failed_ids(response, "change_message_visibility_batch")
            for index, message in enumerate(chunk):
                (refused if str(index) in failed_ids else changed).append(message)
        return changed, refused

    def _failed_ids(self, response: dict[str, Any], operation: str) -> set[str]:
        failed = response.get("Failed", [])
        for entry in failed:
            self._count("sqs_errors", 1)
            log.warning("aws_call_failed", service="sqs", operation=operation, error=entry.get("Code"),
                        detail=entry.get("Message"))
        return {entry["Id"] for entry in failed}


def _chunks(messages: list[HeldMessage]) -> list[list[HeldMessage]]:
    return [messages[start:start + SQS_BATCH] for start in range(0, len(messages), SQS_BATCH)]
