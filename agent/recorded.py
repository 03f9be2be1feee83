"""Recorded input files (JSON, JSON lines, gzip; files or directories) turned into events.

The source of each JSON document is recognised by the decoders given (or forced); a bad file,
line or record becomes a DecodeError naming it, and the rest goes on.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson

from agent.errors import DecodeError
from agent.event import Event
from agent.location import Location
from agent.source import RecordDecoder

INPUT_SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz", ".log", ".log.gz", ".gz")


def input_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Each path, or for a directory every input file below it, in name order."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.name.endswith(INPUT_SUFFIXES):
                    yield child
        else:
            yield path


def read_documents(path: Path) -> Iterator[tuple[str, Any] | DecodeError]:
    """Parsed JSON documents of one file, each with its origin (`file` or `file:line`)."""
    name = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        yield DecodeError(f"cannot read file: {exc.strerror}", Location(name))
        return
    if path.name.endswith(".gz") or data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            yield DecodeError(f"corrupt or truncated gzip data: {exc}", Location(name))
            return
    try:
        yield name, orjson.loads(data)
        return
    except orjson.JSONDecodeError as whole_error:
        lines = data.split(b"\n")
        if sum(1 for line in lines if line.strip()) <= 1:
            yield DecodeError(f"invalid JSON: {whole_error}", Location(name))
            return
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield f"{name}:{number}", orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield DecodeError(f"invalid JSON: {exc}", Location(name, number))


def decode_documents(documents: Iterable[tuple[str, Any] | DecodeError], decoders: Sequence[RecordDecoder],
                     *, forced: RecordDecoder | None = None) -> Iterator[Event | DecodeError]:
    """Events from parsed documents, each document decoded by the first decoder that claims it."""
    for document in documents:
        if isinstance(document, DecodeError):
            yield document
            continue
        origin, value = document
        decoder = forced or next((d for d in decoders if d.matches(value)), None)
        if decoder is None:
            names = ", ".join(d.source for d in decoders)
            yield DecodeError(f"not recognised as input of any source ({names}); use --source to force one",
                              Location(origin))
            continue
        yield from decoder.events(value, origin=origin)


class FileReplayer(Protocol):
    """A recorded format read as a whole file rather than as JSON documents (a kernel capture)."""

    def claims(self, path: Path) -> bool: ...

    def events(self, path: Path) -> Iterator[Event | DecodeError]: ...


def recorded_events(paths: Iterable[str | Path], decoders: Sequence[RecordDecoder], *,
                    forced: RecordDecoder | None = None,
                    replayers: Sequence[FileReplayer] = ()) -> Iterator[Event | DecodeError]:
    """Events and decode errors from files and directories, in file order."""
    for path in input_files(paths):
        replayer = next((r for r in replayers if r.claims(path)), None)
        if replayer is not None:
            yield from replayer.events(path)
        else:
            yield from decode_documents(read_documents(path), decoders, forced=forced)
