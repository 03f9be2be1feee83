"""One CloudTrail log object (a file or an S3 object's bytes) into events, with errors naming it.

Shared by the local-directory, S3 and SQS inputs: gunzip when needed, parse with orjson, decode
records. A corrupt gzip, truncated JSON or a wrong shape is reported for the whole object (bucket
and key, or path); a bad record is reported with its index while the other records go on.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field

import orjson

from agent.errors import DecodeError
from agent.event import Event
from agent.location import Location
from sources.cloudtrail.decoder import CloudTrailDecoder

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(slots=True)
class DecodedObject:
    """The events of one object and what went wrong in it."""

    name: str
    events: list[Event] = field(default_factory=list)
    errors: list[DecodeError] = field(default_factory=list)

    @property
    def is_corrupt(self) -> bool:
        """Nothing could be read: the object as a whole is bad (not just some records)."""
        return not self.events and any(e.location is not None and e.location.item_kind != "record"
                                       for e in self.errors)


def decode_object(data: bytes, *, name: str, decoder: CloudTrailDecoder) -> DecodedObject:
    """Events of a CloudTrail object's bytes; `name` (s3://bucket/key or a path) is put in every error."""
    result = DecodedObject(name)
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            result.errors.append(DecodeError(f"corrupt or truncated gzip data: {exc}", Location(name)))
            return result
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        result.errors.append(DecodeError(f"invalid or truncated JSON: {exc}", Location(name)))
        return result
    for item in decoder.events(document, origin=name):
        if isinstance(item, DecodeError):
            result.errors.append(item)
        else:
            result.events.append(item)
    return result
