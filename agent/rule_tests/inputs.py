"""Events of recorded input, as `falco-agent replay` reads it, plus kernel scenario lines among JSON documents.

A JSON document `{"kernel": {...}}` is a kernel scenario line (agent.rule_tests.kernel_scenario); each run of them
becomes kernel events in place. Any other document is decoded by the source that claims it (or the one forced); a
single event that no source claims whole is tried as a one-element array (a CloudTrail record written alone).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

from agent.errors import DecodeError
from agent.event import Event
from agent.location import Location
from agent.recorded import FileReplayer, decode_documents, input_files, read_documents
from agent.rule_tests.kernel_scenario import ScenarioError, scenario_events
from agent.source import RecordDecoder

KERNEL_LINE = "kernel"
Document = tuple[str, Any]


def is_kernel_line(document: Any) -> bool:
    return isinstance(document, dict) and set(document) == {KERNEL_LINE}


@dataclass(frozen=True)
class EventReader:
    """Turns files and written documents into events with the agent's own decoders and replayers."""

    decoders: Sequence[RecordDecoder]
    replayers: Sequence[FileReplayer]
    hostname: str = ""

    def decoder(self, source: str | None) -> RecordDecoder | None:
        """The decoder of `source`; None when no source is named or the source reads no JSON (the kernel)."""
        return next((d for d in self.decoders if d.source == source), None)

    def files(self, paths: Iterable[str | Path], *, forced: RecordDecoder | None = None
              ) -> Iterator[Event | DecodeError]:
        """Events of files and directories in order: kernel captures replayed, the rest read as JSON documents."""
        for path in input_files(paths):
            replayer = next((r for r in self.replayers if r.claims(path)), None)
            if replayer is not None:
                yield from replayer.events(path)
            else:
                yield from self.documents(read_documents(path), forced=forced)

    def written(self, documents: Sequence[Any], *, origin: str, forced: RecordDecoder | None = None
                ) -> Iterator[Event | DecodeError]:
        """Events of documents written in a test case; `origin` names where (`file:line`)."""
        if len(documents) == 1 and not is_kernel_line(documents[0]):
            documents = [self._as_claimed(documents[0], forced)]
        yield from self.documents(((f"{origin} event {n}", doc) for n, doc in enumerate(documents, start=1)),
                                  forced=forced)

    def documents(self, documents: Iterable[Document | DecodeError], *, forced: RecordDecoder | None = None
                  ) -> Iterator[Event | DecodeError]:
        """Events of parsed documents; each run of kernel lines becomes kernel events where it stands."""
        def kind(item: Document | DecodeError) -> bool:
            return not isinstance(item, DecodeError) and is_kernel_line(item[1])

        for is_kernel, run in groupby(documents, key=kind):
            items = list(run)
            if not is_kernel:
                yield from decode_documents(items, self.decoders, forced=forced)
                continue
            lines = [item[1][KERNEL_LINE] for item in items if not isinstance(item, DecodeError)]
            try:
                yield from scenario_events(lines, hostname=self.hostname)
            except ScenarioError as exc:
                first = items[0]
                yield DecodeError(str(exc), Location(first[0] if isinstance(first, tuple) else ""))

    def _as_claimed(self, document: Any, forced: RecordDecoder | None) -> Any:
        candidates = [forced] if forced is not None else list(self.decoders)
        if any(d.matches(document) for d in candidates):
            return document
        return [document] if any(d.matches([document]) for d in candidates) else document
