"""Fields read inline by generated code (agent.fields.InlineRead) and checks written out (operators.*_inline)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from agent.engine.engine import Engine, RuleMatching, RulesText
from agent.engine.operators import LIST_OPS, convert, scalar_inline, scalar_pred, set_inline, set_pred
from agent.event import Event
from agent.fields import (
    Extractor,
    FieldFlag,
    FieldSpec,
    FieldTable,
    FieldType,
    GeneratedReads,
    InlineRead,
    Value,
    binder,
    with_inline,
)
from agent.source import SourceSpec

SOURCE = "inl"


class Counted:
    """Extractors of `i.*` fields that count their calls, so tests see when generated code read inline."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def name(self, _arg: str | None) -> Extractor:
        """`payload["name"]` when the payload is an object, `payload[0]` of a list; inline for objects."""

        def extract(event: Event) -> Value:
            self.calls["name"] = self.calls.get("name", 0) + 1
            payload = event.payload
            if payload.__class__ is dict:
                return payload.get("name")
            return payload[0] if payload else None

        return with_inline(extract, InlineRead("{payload}.__class__ is dict", "{payload}.get('name')"))

    def size(self, _arg: str | None) -> Extractor:
        """`payload["size"]` as text: inline for strings, the (cached) extractor for any other value."""

        def extract(event: Event) -> Value:
            self.calls["size"] = self.calls.get("size", 0) + 1
            value = event.payload.get("size")
            return None if value is None else str(value)

        return with_inline(extract, InlineRead(
            "", "({tmp} if ({tmp} := {payload}.get('size')).__class__ is str else {fallback})"))

    def stamp(self, _arg: str | None) -> Extractor:
        def extract(event: Event) -> Value:
            self.calls["stamp"] = self.calls.get("stamp", 0) + 1
            return str(event.ts_ns)

        return with_inline(extract, InlineRead("", "{text}({event}.ts_ns)", (("text", str),)))


def engine_with(counted: Counted, rules: str, **kwargs: Any) -> Engine:
    s = FieldType.STRING
    table = FieldTable([FieldSpec("i.name", s, "a name", counted.name), FieldSpec("i.size", s, "a size", counted.size),
                        FieldSpec("i.stamp", s, "the time", counted.stamp)])
    engine = Engine(**kwargs)
    engine.add_source(SourceSpec(SOURCE, table, index_fields=("i.name",), guard_fields=("i.size",)))
    result = engine.load_rules([RulesText("r.yaml", rules)])
    assert result.successful, result.as_text()
    return engine


def rule(name: str, condition: str, output: str) -> str:
    return (f"- rule: {name}\n  desc: d\n  priority: WARNING\n  condition: {condition}\n"
            f"  output: {output}\n  source: {SOURCE}\n")


def alerts(engine: Engine, payload: Any) -> list[tuple[str, str, dict[str, Any]]]:
    return [(a.rule, a.output, a.output_fields) for a in engine.process(Event(SOURCE, 7, payload))]


class TestInlineFields:
    RULES = (rule("named", "i.name startswith a and i.size in (big, 10) and i.stamp = 7",
                  "n=%i.name s=%i.size t=%i.stamp")
             + rule("any", "i.name exists and not i.name = zed", "other %i.name"))

    def test_inline_reads_call_no_extractor(self) -> None:
        """Index key, guard, condition and output read an object's name and a string size inline: no call."""
        counted = Counted()
        engine = engine_with(counted, self.RULES)
        assert alerts(engine, {"name": "abc", "size": "big"}) == [
            ("named", "n=abc s=big t=7", {"i.name": "abc", "i.size": "big", "i.stamp": "7"})]
        assert counted.calls == {}

    def test_fallback_is_the_cached_extractor(self) -> None:
        """A value the inline form leaves to `{fallback}` is extracted once per event, whoever reads it."""
        counted = Counted()
        engine = engine_with(counted, self.RULES)
        assert alerts(engine, {"name": "abc", "size": 10}) == [
            ("named", "n=abc s=10 t=7", {"i.name": "abc", "i.size": "10", "i.stamp": "7"})]
        assert counted.calls == {"size": 1}

    def test_guard_false_calls_the_extractor(self) -> None:
        """Where the guard does not hold (a list payload), every read is the extractor's, with its value."""
        counted = Counted()
        engine = engine_with(counted, self.RULES)
        assert alerts(engine, ["zed"]) == []
        assert alerts(engine, ["ann"]) == [("any", "other ann", {"i.name": "ann"})]
        assert counted.calls["name"] == 2  # once per event: the cache serves the later reads

    def test_missing_value_is_not_available(self) -> None:
        counted = Counted()
        engine = engine_with(counted, self.RULES, rule_matching="all")
        assert alerts(engine, {"size": "big"}) == []
        assert alerts(engine, {"name": "b"}) == [("any", "other b", {"i.name": "b"})]


class TestGeneratedReads:
    def test_guard_hoisted_once_per_guard_text(self) -> None:
        _namespace, bind = binder("_x")
        reads = GeneratedReads(bind)
        extract = with_inline(lambda ev: None, InlineRead("{payload} is not None", "{payload}"))
        first, second = reads.read("a", extract), reads.read("b", extract)
        (guard,) = [line for line in reads.prologue() if line.endswith(" = _p is not None")]
        local = guard.split(" = ")[0]
        assert f"if {local} else" in first and f"if {local} else" in second


STRINGS = ["", "a", "abc", "ABC", "b/c", "é", "system:x"]
VALUES: list[Any] = [*STRINGS, 0, 5, -1, 2.5, True, b"ab", ("a", "b"), ()]


def outcome(check: Any, value: Any) -> Any:
    """What a check gives for a value: its result, or the type of error it raises."""
    try:
        return check(value)
    except Exception as exc:  # the kind of error is what is compared
        return type(exc)


def inline_check(template: str, const: Any) -> Any:
    namespace = {"_c": const}
    exec(compile(f"def check(_v):\n    return {template.format(v='_v', c='_c')}\n", "<t>", "exec"), namespace)
    return namespace["check"]


class TestInlineOperators:
    @pytest.mark.parametrize(("op", "const"), [
        (op, const)
        for op in ("=", "==", "!=", "<", "<=", ">", ">=", "contains", "icontains", "startswith", "endswith",
                   "bcontains", "bstartswith")
        for const in ("a", "AB", "", "10", b"a", 3)
        if op != "icontains" or isinstance(const, str)  # icontains takes text constants only
    ])
    def test_scalar_inline_matches_scalar_pred(self, op: str, const: Any) -> None:
        """Same result, or same kind of error (an extraction error for the rule), on values of every type."""
        inline = scalar_inline(op, const)
        assert inline is not None
        written = inline_check(*inline)
        called = scalar_pred(op, const)
        for value in VALUES:
            assert outcome(written, value) == outcome(called, value), (op, const, value)

    @pytest.mark.parametrize("op", sorted(LIST_OPS - {"pmatch"}))
    @pytest.mark.parametrize("is_list", [False, True])
    def test_set_inline_matches_set_pred(self, op: str, is_list: bool) -> None:
        consts = ["a", "b", "c"]
        inline = set_inline(op, consts, is_list=is_list)
        assert inline is not None
        written = inline_check(*inline)
        called = set_pred(op, consts, is_list=is_list)
        for value in [("a",), ("a", "z"), ("z",), ("a", "b", "c"), "a", "z", 1, [["a"]]]:
            assert outcome(written, value) == outcome(called, value), (op, is_list, value)

    def test_no_inline_form_where_a_callable_is_needed(self) -> None:
        """Globs, regexes, path sets and IP networks keep their callables."""
        net = convert("10.0.0.0/8", "ipnet", "=")
        assert isinstance(net, ipaddress.IPv4Network)
        assert scalar_inline("glob", "a*") is None
        assert scalar_inline("regex", "a.") is None
        assert scalar_inline("=", net) is None
        assert set_inline("pmatch", ["/a"], is_list=False) is None
        assert set_inline("in", [net], is_list=False) is None


class TestTimeText:
    """A field whose text is an integer's decimal form (`jevt.rawtime`), as Falco's files use it: `= 0` to turn a rule
    off, `exists` to leave it on. Neither writes the text on the events it meets."""

    def engine(self, rules: str) -> tuple[Engine, list[int]]:
        written: list[int] = []

        def text(number: int) -> str:
            written.append(number)
            return str(number)

        def stamp(_arg: str | None) -> Extractor:
            return with_inline(lambda event: text(event.ts_ns),
                               InlineRead("", "{text}({event}.ts_ns)", (("text", text),), decimal="{event}.ts_ns"))

        table = FieldTable([FieldSpec("i.name", FieldType.STRING, "a name", Counted().name),
                            FieldSpec("i.stamp", FieldType.STRING, "the time", stamp, flags=FieldFlag.ALWAYS)])
        engine = Engine(rule_matching=RuleMatching.ALL)
        engine.add_source(SourceSpec(SOURCE, table, index_fields=("i.name",)))
        result = engine.load_rules([RulesText("r.yaml", rules)])
        assert result.successful, result.as_text()
        return engine, written

    def fired(self, engine: Engine, ts_ns: int) -> list[str]:
        return [alert.rule for alert in engine.process(Event(SOURCE, ts_ns, {"name": "a"}))]

    def test_equal_to_a_number_compares_numbers(self) -> None:
        engine, written = self.engine(rule("zero", "i.stamp = 0", "z") + rule("seven", "i.stamp = 7", "s"))
        # Enough events that each set of candidates is evaluated by its generated evaluator too.
        for _ in range(40):
            assert self.fired(engine, 7) == ["seven"]
            assert self.fired(engine, 0) == ["zero"]
            assert self.fired(engine, 1540475929736141000) == []
        assert written == []

    def test_other_checks_compare_the_text(self) -> None:
        """A constant no integer writes (`07`) never equals the time, and other operators see the text."""
        engine, written = self.engine(rule("padded", "i.stamp = 07", "p") + rule("other", "i.stamp != 7", "o")
                                      + rule("prefix", "i.stamp startswith 15", "b"))
        for _ in range(40):
            assert self.fired(engine, 7) == []
            assert self.fired(engine, 0) == ["other"]
            assert self.fired(engine, 1540475929736141000) == ["other", "prefix"]
        assert written

    def test_exists_on_a_field_every_event_has_holds_unread(self) -> None:
        engine, written = self.engine(rule("on", "i.name = a and i.stamp exists", "on")
                                      + rule("off", "i.name = a and not i.stamp exists", "off"))
        for ts_ns in range(40):
            assert self.fired(engine, ts_ns) == ["on"]
        assert written == []
