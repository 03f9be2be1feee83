"""One CloudTrail log object (a file or an S3 object's body) into events, with errors naming it.

Shared by the local-directory, S3 and SQS inputs: read the stream, gunzip it when it is gzip, parse with
orjson, decode records. A corrupt gzip, truncated JSON or a wrong shape is reported for the whole object
(bucket and key, or path); a bad record is reported with its index while the other records go on.

Bounds (`ObjectLimits`), so that no object can take the agent's memory:

- An object is read and gunzipped as a stream, and no more than `max_object_bytes` of it, stored or
  decompressed, is ever held: past that the reading stops and the whole object is rejected as too large. Its
  records are all skipped, none handed over: a JSON document cut at the limit cannot be parsed, and a half
  read object marked done would hide its other half without a trace; CloudTrail itself writes files of a few
  MB, so an object this large is a mistake or a decompression bomb, and the inputs count it and remember it as
  done like any other rejected object. An object that runs the process out of memory while it is decoded is
  rejected the same way instead of failing the input over and over.
- A record longer than `max_event_bytes` as compact JSON is skipped (reason `too_large`) and the other
  records of its object go on. Measuring costs a serialization of each record (a few µs), so it is done
  only in an object longer than the limit: no record is longer than the object holding it.

Stream errors (an S3 connection dropped, a disk error) are not caught here: the input retries those.
"""

from __future__ import annotations

import io
import itertools
import zlib
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from agent.errors import DecodeError
from agent.event import Event
from agent.location import Location
from sources.cloudtrail.decoder import CloudTrailDecoder

_GZIP_MAGIC = b"\x1f\x8b"
#: zlib's window bits for a gzip header and trailer (whose CRC and length it checks).
_GZIP_WBITS = 16 + zlib.MAX_WBITS
#: Bytes read from the stream, and produced by the gunzip, per step.
_CHUNK = 1024 * 1024
#: The reason of a DecodeError for an object or a record over its limit.
TOO_LARGE = "too_large"


@dataclass(frozen=True, slots=True)
class ObjectLimits:
    """Size bounds of one object (`sources.aws_cloudtrail.max_object_bytes`) and one record (`max_event_bytes`)."""

    max_object_bytes: int = 256 * 1024 * 1024
    max_event_bytes: int = 1024 * 1024


#: Frozen, so one instance can be the default of every input.
DEFAULT_LIMITS = ObjectLimits()


class Readable(Protocol):
    """A binary stream: an open file, or botocore's StreamingBody of an S3 object."""

    def read(self, size: int, /) -> bytes: ...


class _TooLarge(Exception):
    """The object went past `max_object_bytes` (stored or decompressed) while it was read."""


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


def read_object(stream: Readable, *, name: str, decoder: CloudTrailDecoder, limits: ObjectLimits) -> DecodedObject:
    """Events of the CloudTrail object read from `stream`; `name` (s3://bucket/key or a path) is in every error."""
    result = DecodedObject(name)
    try:
        _decode(stream, result, decoder, limits)
    except _TooLarge as exc:
        result.errors.append(DecodeError(f"larger than max_object_bytes ({limits.max_object_bytes} bytes) {exc}; "
                                         "skipped", Location(name), reason=TOO_LARGE))
    except MemoryError:
        # Retrying would fail the same way and never get to the next object: skip it as a whole.
        result.events.clear()
        result.errors.clear()
        result.errors.append(DecodeError(f"out of memory while decoding it; skipped (max_object_bytes is "
                                         f"{limits.max_object_bytes} bytes)", Location(name), reason=TOO_LARGE))
    return result


def decode_object(data: bytes, *, name: str, decoder: CloudTrailDecoder,
                  limits: ObjectLimits = DEFAULT_LIMITS) -> DecodedObject:
    """`read_object` of an object already in memory (a recorded one, a benchmark's)."""
    return read_object(io.BytesIO(data), name=name, decoder=decoder, limits=limits)


def read_s3_object(client: Any, bucket: str, key: str, *, decoder: CloudTrailDecoder,
                   limits: ObjectLimits) -> DecodedObject:
    """`read_object` of an S3 object's body, closed after: an object over the limits is never downloaded whole.

    S3 errors, from the request or while streaming the body, are left to the caller.
    """
    with closing(client.get_object(Bucket=bucket, Key=key)["Body"]) as body:
        return read_object(body, name=f"s3://{bucket}/{key}", decoder=decoder, limits=limits)


def _decode(stream: Readable, result: DecodedObject, decoder: CloudTrailDecoder, limits: ObjectLimits) -> None:
    try:
        contents = _contents(stream, limits.max_object_bytes)
    except zlib.error as exc:
        result.errors.append(DecodeError(f"corrupt or truncated gzip data: {exc}", Location(result.name)))
        return
    try:
        document = orjson.loads(contents)
    except orjson.JSONDecodeError as exc:
        result.errors.append(DecodeError(f"invalid or truncated JSON: {exc}", Location(result.name)))
        return
    # No record is longer than its object: records are measured only in an object longer than their limit.
    refused = _refused_records(document, limits.max_event_bytes) if len(contents) > limits.max_event_bytes else {}
    del contents  # the text is not needed beside its parsed records
    for item in decoder.events(document, origin=result.name):
        if isinstance(item, DecodeError):
            result.errors.append(item)
        elif (why := refused.get(id(item.payload))) is not None:  # the decoder hands a record over as the payload
            index, reason, message = why
            result.errors.append(DecodeError(message, Location(file=result.name, item_kind="record",
                                                                item_name=str(index)), reason=reason))
        else:
            result.events.append(item)


def _refused_records(document: Any, limit: int) -> dict[int, tuple[int, str, str]]:
    """By id(), the records longer than `limit` bytes as compact JSON or that cannot be written back as JSON at all
    (orjson reads 1024 levels of nesting but writes 254): their index, reason and message."""
    records = document.get("Records") if isinstance(document, dict) else document
    if not isinstance(records, list):
        return {}
    found = {}
    for index, record in enumerate(records):
        try:
            size = len(orjson.dumps(record))
        except orjson.JSONEncodeError as exc:
            found[id(record)] = (index, "invalid", f"record cannot be measured ({exc}: nested too deep); skipped")
            continue
        if size > limit:
            found[id(record)] = (index, TOO_LARGE, f"record is {size} bytes, over max_event_bytes ({limit} bytes); "
                                                   "skipped")
    return found


def _contents(stream: Readable, limit: int) -> bytearray:
    """The object's bytes, gunzipped when they start with gzip's magic; _TooLarge past `limit` bytes of either."""
    chunks = _chunks(stream, limit)
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= len(_GZIP_MAGIC):
            break
    if not head.startswith(_GZIP_MAGIC):
        contents = bytearray(head)
        for chunk in chunks:
            contents += chunk
        return contents
    return _gunzip(itertools.chain([head], chunks), limit)


def _chunks(stream: Readable, limit: int) -> Iterator[bytes]:
    """The stream's bytes as they are read; _TooLarge once more than `limit` came."""
    total = 0
    while chunk := stream.read(_CHUNK):
        total += len(chunk)
        if total > limit:
            raise _TooLarge("as stored")
        yield chunk


def _gunzip(chunks: Iterable[bytes], limit: int) -> bytearray:
    """Gunzip a stream of one or more gzip members (zero padding allowed between them, as gzip allows).

    Each step produces at most `_CHUNK` bytes and no more than one byte past `limit` is ever produced:
    a small input expanding to gigabytes costs at most `limit` bytes of memory.
    """
    contents = bytearray()
    inflater = zlib.decompressobj(_GZIP_WBITS)
    for chunk in chunks:
        data = chunk
        while data:
            if inflater.eof:  # a member ended: what follows is zero padding or another member
                data = data.lstrip(b"\0")
                if not data:
                    break
                inflater = zlib.decompressobj(_GZIP_WBITS)
            contents += inflater.decompress(data, min(limit + 1 - len(contents), _CHUNK))
            if len(contents) > limit:
                raise _TooLarge("once decompressed")
            data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
    if not inflater.eof:
        raise zlib.error("the data ends before the end of the gzip stream")
    return contents
