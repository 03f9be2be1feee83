"""Rule output strings (`%ka.verb by %12ka.user.name`): parsed once, rendered per alert."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from agent.alert import Alert
from agent.engine.ast import FieldRef, Pos
from agent.engine.compiler import CompileError, ConditionCompiler
from agent.engine.parser import FIELD_RE, IDENT_RE, TRANSFORMERS, ConditionSyntaxError, Parser
from agent.engine.transformers import Getter
from agent.event import Event
from agent.fields import AnyOf, FieldTable, buffer_text, field_key
from agent.priority import Priority

NA = "<NA>"
_DEPRECATED_TOKENS = frozenset({"container.info"})


def render_value(value: Any) -> str:
    """A field value as output text: `<NA>` when missing, lists as `(a,b)`, several values as the first."""
    if isinstance(value, AnyOf):
        value = value.values[0] if value.values else None
    if value is None:
        return NA
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "(" + ",".join(render_value(v) for v in value) + ")"
    if isinstance(value, bytes):
        return buffer_text(value)
    return str(value)


def json_value(value: Any) -> Any:
    """A field value as a typed JSON value for `output_fields`."""
    if isinstance(value, AnyOf):
        value = value.values[0] if value.values else None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, tuple):
        return [json_value(v) for v in value]
    if isinstance(value, bytes):
        return buffer_text(value)
    return str(value)


#: What an extractor raises on an input shape it did not expect. In a condition the rule then cannot match; in
#: an output the value is unavailable (<NA>) and the alert still goes out.
EXTRACTION_ERRORS = (TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError)


@dataclass(frozen=True, slots=True)
class _Token:
    get: Getter
    width: int


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """A compiled output: literal text interleaved with field tokens, and the keys for output_fields.

    `texts` are output_fields keys valued by the rendered text of a format that is not part of the output text
    (`append_output`'s `extra_fields`).
    """

    parts: tuple[str | _Token, ...]
    fields: tuple[tuple[str, Getter], ...]
    texts: tuple[tuple[str, OutputFormat], ...] = ()

    def render(self, event: Event) -> str:
        out = []
        for part in self.parts:
            if part.__class__ is str:
                out.append(part)
                continue
            try:
                value = part.get(event)  # type: ignore[union-attr]
            except EXTRACTION_ERRORS:
                value = None
            text = value if value.__class__ is str else render_value(value)
            if part.width:  # type: ignore[union-attr]
                text = text[: part.width].ljust(part.width)  # type: ignore[union-attr]
            out.append(text)
        return "".join(out)

    def field_values(self, event: Event) -> dict[str, Any]:
        out = {}
        for key, get in self.fields:
            try:
                value = get(event)
            except EXTRACTION_ERRORS:
                value = None
            out[key] = value if value.__class__ is str else json_value(value)
        for key, text in self.texts:
            out[key] = text.render(event)
        return out

    def followed_by(self, other: OutputFormat) -> OutputFormat:
        """This output, a space, then `other`, with the output_fields of both (a key already here keeps its own)."""
        merged: list[str | _Token] = []
        for part in (*self.parts, " ", *other.parts):  # adjacent literals as one: fewer pieces to join per alert
            last = merged[-1] if merged else None
            if isinstance(part, str) and isinstance(last, str):
                merged[-1] = last + part
            else:
                merged.append(part)
        fields = dict(self.fields)
        for key, get in other.fields:
            fields.setdefault(key, get)
        return OutputFormat(tuple(merged), tuple(fields.items()), self.texts + other.texts)

    def with_output_fields(self, extra: dict[str, Getter | OutputFormat]) -> OutputFormat:
        """This output with more output_fields keys, not shown in the text: a getter gives a field's value, a
        format its rendered text. They replace keys of the same name."""
        fields = {key: get for key, get in self.fields if key not in extra}
        texts = {key: text for key, text in self.texts if key not in extra}
        for key, value in extra.items():
            if isinstance(value, OutputFormat):
                texts[key] = value
            else:
                fields[key] = value
        return OutputFormat(self.parts, tuple(fields.items()), tuple(texts.items()))


def compile_output(fmt: str, table: FieldTable, *, warn: Callable[[str], None] | None = None) -> OutputFormat:
    """Parse an output format against a source's fields; CompileError names the bad token."""
    compiler = ConditionCompiler(table)
    parser = Parser(fmt)
    parts: list[str | _Token] = []
    fields: dict[str, Getter] = {}
    literal: list[str] = []
    i = 0
    while i < len(fmt):
        ch = fmt[i]
        if ch != "%":
            literal.append(ch)
            i += 1
            continue
        start = i
        i += 1
        width_end = i
        while width_end < len(fmt) and fmt[width_end].isdigit():
            width_end += 1
        width = int(fmt[i:width_end]) if width_end > i else 0
        i = width_end
        parser.i = i
        token = _parse_token(parser, table, compiler, fields)
        if token is None:
            raise CompileError("invalid formatting token: '%' must be followed by a field", parser.pos(start),
                               unknown_filter=True)
        name, getter = token
        i = parser.i
        if name in _DEPRECATED_TOKENS:
            if warn is not None:
                warn(f"%{name} is deprecated and removed from the output")
            continue
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(_Token(getter, width))
    if literal:
        parts.append("".join(literal))
    return OutputFormat(tuple(parts), tuple(fields.items()))


def compile_value(name: str, table: FieldTable) -> Getter:
    """The getter of one field or transformer written as after `%` in an output (`proc.aname[2]`,
    `toupper(proc.name)`); CompileError when `name` is anything else."""
    fmt = compile_output(f"%{name}", table)
    token = fmt.parts[0] if len(fmt.parts) == 1 else None
    if not isinstance(token, _Token):
        raise CompileError(f"'{name}' is not a field", Pos(0, 1, 1), unknown_filter=True)
    return token.get


def _parse_token(parser: Parser, table: FieldTable, compiler: ConditionCompiler,
                 fields: dict[str, Getter]) -> tuple[str, Getter] | None:
    text = parser.text
    ident = IDENT_RE.match(text, parser.i)
    try:
        if ident is not None and ident.group() in TRANSFORMERS and text.startswith("(", ident.end()):
            node = parser.parse_transformer()
            for ref in _field_refs(node):
                fields.setdefault(str(ref), compiler.field(ref, in_output=True).get)
            return node.name, compiler.transform(node).get
    except ConditionSyntaxError as exc:
        raise CompileError(exc.message, exc.pos) from None
    match = FIELD_RE.match(text, parser.i)
    if match is None:
        return None
    name = match.group()
    if name in _DEPRECATED_TOKENS:
        parser.i = match.end()
        return name, lambda _ev: None
    # The token is the longest dotted prefix that names a field of this source.
    while table.resolve(name, None) is None:
        cut = name.rfind(".")
        if cut < 0 or "." not in name[:cut]:
            raise CompileError(f"invalid formatting token %{match.group()}: unknown field",
                               parser.pos(parser.i), unknown_filter=True)
        name = name[:cut]
    parser.i += len(name)
    try:
        arg = parser.parse_field_arg() if name == match.group() else None
    except ConditionSyntaxError as exc:
        raise CompileError(exc.message, exc.pos) from None
    ref = FieldRef(name, arg, parser.pos(parser.i))
    getter = compiler.field(ref, in_output=True).get
    fields.setdefault(field_key(name, arg), getter)
    return name, getter


def _field_refs(node: Any) -> list[FieldRef]:
    if isinstance(node, FieldRef):
        return [node]
    out: list[FieldRef] = []
    for child in getattr(node, "args", ()) or getattr(node, "items", ()):
        out += _field_refs(child)
    return out


class Alerting(Protocol):
    """What an alert takes from a rule or a correlation."""

    name: str
    priority: Priority
    tags: tuple[str, ...]
    output: OutputFormat


def alert_for(rule: Alerting, event: Event, *, hostname: str) -> Alert:
    """The alert `rule` raises on `event`: its output rendered from the event's fields."""
    return Alert(
        rule=rule.name,
        priority=rule.priority,
        source=event.source,
        ts_ns=event.ts_ns,
        output=rule.output.render(event),
        output_fields=rule.output.field_values(event),
        hostname=event.hostname or hostname,
        tags=rule.tags,
    )
