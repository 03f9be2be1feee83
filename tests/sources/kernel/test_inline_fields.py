"""The syscall fields generated code reads inline (evt.type, fd.name, fd.nameraw, proc.name) give what their
extractors give, on every kind of event: a plain open, a name with slashes to fold, a failed open, a failed and a
successful connect, events about no descriptor, and a payload that is not a syscall."""

from __future__ import annotations

import pytest

from agent.event import Event
from agent.fields import Extractor, cache_parts, generated_read, inline_read
from sources.kernel.fields import syscall_source
from tests.sources.kernel.state_fixtures import Stream, inet

INLINE_FIELDS = ("evt.type", "fd.name", "fd.nameraw", "proc.name")
ECONNREFUSED, EINPROGRESS = -111, -115


def field(name: str) -> Extractor:
    spec = syscall_source().fields.get(name)
    assert spec is not None, name
    return spec.bind(None)


def events() -> list[Event]:
    s = Stream()
    s.open(200, "/etc/shadow", res=3)
    s.open(200, "/etc//passwd", res=4)
    s.open(200, "/nope", res=-2)
    s.record("socket", 200, res=5, domain=2, type=1, proto=0)
    s.record("connect", 200, res=ECONNREFUSED, fd=5, addr=inet("10.0.0.1", 80))
    s.record("connect", 200, res=EINPROGRESS, fd=5, addr=inet("10.0.0.1", 80))
    s.record("close", 200, res=0, fd=3)
    s.exec(200, "/bin/ls", "-la")
    return [*s.events, Event("syscall", 1, {"not": "a syscall"}, "openat"), Event("syscall", 1, None, "")]


@pytest.mark.parametrize("name", INLINE_FIELDS)
def test_the_inline_read_gives_what_the_extractor_gives(name: str) -> None:
    get = field(name)
    parts = cache_parts(get)
    assert parts is not None and inline_read(parts[1]) is not None, f"{name} is not read inline"
    read = generated_read(get)
    for event in events():
        expected = parts[1](event)
        assert read(Event(event.source, event.ts_ns, event.payload, event.type)) == expected, (name, event.type)


def test_the_reads_cover_the_fallbacks() -> None:
    """The events above reach the extractor's own logic where the inline form cannot tell (this test fails if the
    samples stop covering those cases)."""
    name, nameraw = field("fd.name"), field("fd.nameraw")
    values = {(event.type, name(event), nameraw(event)) for event in events()}
    assert ("openat", "/etc/passwd", "/etc/passwd") in values  # `//` folded by the extractor
    assert ("openat", "/nope", "/nope") in values  # a failed open: no descriptor, the name asked for
    assert any(kind == "connect" and fd_name and "->" not in fd_name for kind, fd_name, _raw in values)
