"""SQS message bodies into the S3 objects they announce: CloudTrail's SNS notifications and S3 event notifications.

Shapes understood, each either as the raw message body or wrapped in an SNS envelope
(`{"Type": "Notification", "Message": "<the JSON below, as a string>", ...}`):

- CloudTrail's own notification, sent when it delivered log files: `{"s3Bucket": b, "s3ObjectKey": [k, ...]}`;
  keys are plain text.
- S3 event notifications: `{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
  "s3": {"bucket": {"name": b}, "object": {"key": k, "size": n}}}, ...]}`; keys are URL-encoded with `+` for
  spaces. Records of other S3 events (ObjectRemoved, ...) announce nothing to read.
- The `s3:TestEvent` S3 sends when notifications are configured: nothing to read.

Digest files (CloudTrail-Digest/) hold no records and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import orjson

from agent.errors import DecodeError
from agent.location import Location

_DIGEST_MARKER = "/CloudTrail-Digest/"


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """One S3 object a notification names."""

    bucket: str
    key: str

    @property
    def name(self) -> str:
        """The name used in errors and logs."""
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True, slots=True)
class Notification:
    """What one message asks for. `kind` is `cloudtrail`, `s3_event` or `s3_test`; `objects` may be empty."""

    kind: str
    objects: tuple[ObjectRef, ...]
    is_sns: bool = False


def parse_notification(body: str, *, origin: str) -> Notification:
    """The objects announced by an SQS message body; DecodeError (naming `origin`) when it is not a notification."""
    document = _loads(body, origin=origin, what="message body")
    is_sns = isinstance(document, dict) and document.get("Type") == "Notification" and "Message" in document
    if is_sns:
        inner = document["Message"]
        if not isinstance(inner, str):
            raise DecodeError("SNS notification: 'Message' is not a string", _where(origin, "Message"))
        document = _loads(inner, origin=origin, what="SNS Message")
    if not isinstance(document, dict):
        raise DecodeError("not a CloudTrail or S3 notification: the body is not a JSON object", _where(origin))
    if "s3ObjectKey" in document or "s3Bucket" in document:
        return Notification("cloudtrail", _cloudtrail_objects(document, origin), is_sns)
    if document.get("Event") == "s3:TestEvent":
        return Notification("s3_test", (), is_sns)
    if "Records" in document:
        return Notification("s3_event", _s3_event_objects(document["Records"], origin), is_sns)
    raise DecodeError("not a CloudTrail or S3 notification: no s3ObjectKey, Records or s3:TestEvent",
                      _where(origin))


def _loads(text: str, *, origin: str, what: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"{what} is not JSON: {exc}", _where(origin)) from None


def _where(origin: str, key: str = "") -> Location:
    return Location(file=origin, item_kind="key", item_name=key) if key else Location(file=origin)


def _cloudtrail_objects(document: dict[str, Any], origin: str) -> tuple[ObjectRef, ...]:
    bucket = document.get("s3Bucket")
    keys = document.get("s3ObjectKey")
    if not isinstance(bucket, str) or not bucket:
        raise DecodeError("CloudTrail notification: 's3Bucket' is not a bucket name", _where(origin, "s3Bucket"))
    # The documented shape is a list; a single string is accepted rather than poisoning the message.
    if isinstance(keys, str):
        keys = [keys]
    if not isinstance(keys, list) or not all(isinstance(key, str) and key for key in keys):
        raise DecodeError("CloudTrail notification: 's3ObjectKey' is not a list of keys",
                          _where(origin, "s3ObjectKey"))
    return tuple(ObjectRef(bucket, key) for key in keys if _DIGEST_MARKER not in key)


def _s3_event_objects(records: Any, origin: str) -> tuple[ObjectRef, ...]:
    if not isinstance(records, list):
        raise DecodeError("S3 event notification: 'Records' is not a list", _where(origin, "Records"))
    objects: list[ObjectRef] = []
    for index, record in enumerate(records):
        where = Location(file=origin, item_kind="record", item_name=str(index))
        if not isinstance(record, dict) or record.get("eventSource") != "aws:s3":
            raise DecodeError("S3 event notification: a record is not an aws:s3 event", where)
        event_name = record.get("eventName")
        if not isinstance(event_name, str) or not event_name.startswith("ObjectCreated:"):
            continue
        s3 = record.get("s3")
        bucket = s3.get("bucket") if isinstance(s3, dict) else None
        obj = s3.get("object") if isinstance(s3, dict) else None
        name = bucket.get("name") if isinstance(bucket, dict) else None
        key = obj.get("key") if isinstance(obj, dict) else None
        if not isinstance(name, str) or not name or not isinstance(key, str) or not key:
            raise DecodeError("S3 event notification: a record has no s3.bucket.name or s3.object.key", where)
        key = unquote_plus(key)
        if _DIGEST_MARKER not in key and not key.endswith("/"):
            objects.append(ObjectRef(name, key))
    return tuple(objects)
