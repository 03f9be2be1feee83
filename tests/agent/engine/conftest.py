"""A tiny `test` source over dict payloads and a `lab` fixture to load rules text and run events."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from agent.engine.engine import Engine, RulesText
from agent.engine.load_result import LoadResult
from agent.event import Event
from agent.fields import AnyOf, ArgKind, Extractor, FieldFlag, FieldSpec, FieldTable, FieldType
from agent.generic_fields import generic_fields
from agent.json_fields import json_fields
from agent.source import SourceSpec

SOURCE = "test"
TS_NS = 1_700_000_000_123_456_789


def _key(name: str) -> Callable[[str | None], Extractor]:
    """A field reading one payload key; an absent key is "not available"."""
    return lambda _arg: lambda ev: ev.payload.get(name)


def _list(name: str) -> Callable[[str | None], Extractor]:
    """A list field; with an index argument it yields that one element."""

    def factory(arg: str | None) -> Extractor:
        def extract(ev: Event) -> Any:
            values = ev.payload.get(name)
            if not values:
                return None
            if arg is None:
                return tuple(values)
            index = int(arg)
            return values[index] if index < len(values) else None

        return extract

    return factory


def _any_of(_arg: str | None) -> Extractor:
    return lambda ev: AnyOf(tuple(ev.payload["kin"])) if ev.payload.get("kin") else None


def _label(arg: str | None) -> Extractor:
    return lambda ev: (ev.payload.get("labels") or {}).get(arg)


def _ip(_arg: str | None) -> Extractor:
    return lambda ev: None if ev.payload.get("ip") is None else ipaddress.ip_address(ev.payload["ip"])


def sample_fields() -> list[FieldSpec]:
    """Fields of the test source: one of each type and argument kind the engine handles."""
    s = FieldType.STRING
    return [
        *generic_fields(),
        *json_fields(),
        FieldSpec("t.type", s, "event type, the index field", _key("type")),
        FieldSpec("t.name", s, "a name", _key("name")),
        FieldSpec("t.other", s, "another string, for val()", _key("other")),
        FieldSpec("t.path", s, "a path", _key("path")),
        FieldSpec("t.num", FieldType.UINT64, "a number", _key("num")),
        FieldSpec("t.size", FieldType.INT64, "a signed number", _key("size")),
        FieldSpec("t.flag", FieldType.BOOL, "a boolean", _key("flag")),
        FieldSpec("t.tags", s, "a list of strings", _list("tags"), is_list=True),
        FieldSpec("t.args", s, "argv-like list, indexable", _list("args"), is_list=True, arg=ArgKind.INDEX),
        FieldSpec("t.label", s, "a label by key", _label, arg=ArgKind.KEY | ArgKind.REQUIRED),
        FieldSpec("t.buf", FieldType.BYTEBUF, "raw bytes", _key("buf")),
        FieldSpec("t.ip", FieldType.IPADDR, "an IP address", _ip),
        FieldSpec("t.kin", s, "several names at once, like proc.aname", _any_of, flags=FieldFlag.ANY_OF),
        FieldSpec("t.print", s, "output only", _key("name"), flags=FieldFlag.PRINT_ONLY),
        FieldSpec("t.norhs", s, "not usable on the right", _key("name"), flags=FieldFlag.NO_RHS),
        FieldSpec("t.old", s, "a deprecated field", _key("name"), flags=FieldFlag.DEPRECATED),
        FieldSpec("ka.user", s, "a k8s-audit-like field, for the <NA> lint", _key("user")),
    ]


def sample_source(*, name: str = SOURCE, index_fields: tuple[str, ...] = ("t.type",),
                  plugins: tuple[tuple[str, str], ...] = (), warn_unindexed: bool = False) -> SourceSpec:
    return SourceSpec(name, FieldTable(sample_fields()), index_fields=index_fields, plugins=plugins,
                      warn_unindexed=warn_unindexed)


def rule(condition: str, *, name: str = "r", output: str = "hit %t.name", priority: str = "WARNING",
         source: str = SOURCE, extra: str = "") -> str:
    """One rule item; condition and output are YAML literal blocks, so the condition sits on line 4."""
    text = (f"- rule: {name}\n  desc: d\n  priority: {priority}\n  condition: |-\n    {condition}\n"
            f"  output: |-\n    {output}\n  source: {source}\n")
    return text + (extra.rstrip("\n") + "\n" if extra else "")


def codes(result: LoadResult) -> list[str]:
    """The codes of every problem, in report order."""
    return [p.code.value for p in result.problems]


class Lab:
    """Builds engines with the test source, loads rules text, and makes events."""

    source = SOURCE
    rule = staticmethod(rule)
    codes = staticmethod(codes)

    def engine(self, **kwargs: Any) -> Engine:
        engine = Engine(**kwargs)
        engine.add_source(sample_source())
        return engine

    def load(self, *texts: str, engine: Engine | None = None) -> tuple[Engine, LoadResult]:
        """Load texts as files `f1.yaml`, `f2.yaml`... in order."""
        engine = engine or self.engine()
        result = engine.load_rules([RulesText(f"f{i}.yaml", text) for i, text in enumerate(texts, start=1)])
        return engine, result

    def named_rules(self, rules: Iterable[tuple[str, str]]) -> str:
        """The text of a rule per (name, condition)."""
        return "".join(rule(condition, name=name) for name, condition in rules)

    def loaded(self, *texts: str, **kwargs: Any) -> Engine:
        """An engine with these texts loaded; the load must succeed."""
        engine, result = self.load(*texts, engine=self.engine(**kwargs))
        assert result.successful, result.as_text()
        return engine

    def event(self, *, ts_ns: int = TS_NS, source: str = SOURCE, **payload: Any) -> Event:
        return Event(source=source, ts_ns=ts_ns, payload=payload)

    def fired(self, engine: Engine, **payload: Any) -> list[str]:
        """Names of the rules that alert on an event with this payload."""
        return [alert.rule for alert in engine.process(self.event(**payload))]

    def matches(self, condition: str, *, prelude: str = "", **payload: Any) -> bool:
        """Whether a rule with this condition fires on an event with this payload."""
        engine = self.loaded(prelude + rule(condition))
        return bool(engine.process(self.event(**payload)))

    def error(self, *texts: str) -> Any:
        """The single error of a load that must fail."""
        _, result = self.load(*texts)
        assert not result.successful, result.as_text()
        return result.errors[0]


@pytest.fixture
def lab() -> Lab:
    return Lab()
