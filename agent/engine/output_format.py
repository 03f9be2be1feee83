"""Rule output strings (`%ka.verb by %12ka.user.name`): parsed once, rendered per alert."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.alert import Alert
from agent.engine.ast import FieldRef, Pos
from agent.engine.compiler import CompileError, ConditionCompiler
from agent.engine.parser import FIELD_RE, IDENT_RE, TRANSFORMERS, ConditionSyntaxError, Parser
from agent.engine.transformers import Getter
from agent.event import Event
from agent.fields import AnyOf, FieldTable, GeneratedReads, binder, buffer_text, field_key
from agent.priority import Priority

NA = "<NA>"
_DEPRECATED_TOKENS = frozenset({"container.info"})


def render_value(value: Any) -> str:
    """A field value as output text: `<NA>` when missing, lists as `(a,b)`, several values as the first."""
    if isinstance(value, tuple):  # the list values of alerts, tested first
        return "(" + ",".join([v if v.__class__ is str else render_value(v) for v in value]) + ")"
    if isinstance(value, AnyOf):
        value = value.values[0] if value.values else None
    if value is None:
        return NA
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return buffer_text(value)
    return str(value)


def json_value(value: Any) -> Any:
    """A field value as a typed JSON value for `output_fields`."""
    if isinstance(value, tuple):  # the list values of alerts, tested first
        return [v if v.__class__ is str else json_value(v) for v in value]
    if isinstance(value, AnyOf):
        value = value.values[0] if value.values else None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
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


Composer = Callable[[Event], tuple[str, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """A compiled output: literal text interleaved with field tokens, and the keys for output_fields.

    `texts` are output_fields keys valued by the rendered text of a format that is not part of the output text
    (`append_output`'s `extra_fields`).
    """

    parts: tuple[str | _Token, ...]
    fields: tuple[tuple[str, Getter], ...]
    texts: tuple[tuple[str, OutputFormat], ...] = ()
    # Generated at the first alert rather than at load: most rules never fire.
    _composer: Composer | None = field(default=None, init=False, repr=False, compare=False)

    def compose(self, event: Event) -> tuple[str, dict[str, Any]]:
        """The output text and the output_fields of `event`, each field extracted once for both."""
        composer = self._composer
        if composer is None:
            composer = generate_composer(self)
            object.__setattr__(self, "_composer", composer)
        return composer(event)

    def render(self, event: Event) -> str:
        return self.compose(event)[0]

    def field_values(self, event: Event) -> dict[str, Any]:
        return self.compose(event)[1]

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


class _ComposerSource:
    """The statements of a composition: one per value it extracts, written at the left margin (the caller indents
    them), names bound through `bind` and fields read through `reads` (those of the function it goes into)."""

    def __init__(self, bind: Callable[[Any], str], reads: GeneratedReads, prefix: str) -> None:
        self.bind = bind
        self.reads = reads
        self.prefix = prefix
        self.errors = bind(EXTRACTION_ERRORS)
        self.render = bind(render_value)
        self.json = bind(json_value)
        self.na = bind(NA)
        self.lines: list[str] = []
        self._slots: dict[int, str] = {}  # id of a getter -> the variable holding its value

    def value_of(self, get: Getter) -> str:
        """The variable holding a value, extracted once: inline when `get` caches (its extractor's inline form, or the
        event's cache).

        An extractor that meets an input shape it did not expect gives None (<NA>), and the alert still goes out.
        """
        slot = self._slots.get(id(get))
        if slot is not None:
            return slot
        slot = self._slots[id(get)] = f"{self.prefix}{len(self._slots)}"
        read = self.reads.read_getter(get)
        self.lines += ["try:", f"    {slot} = {read}", f"except {self.errors}:", f"    {slot} = None"]
        return slot

    def text_of(self, token: _Token) -> str:
        slot = self.value_of(token.get)
        # A missing value (common in outputs: a pod without init containers) is written without a call.
        text = f"({slot} if {slot}.__class__ is str else {self.na} if {slot} is None else {self.render}({slot}))"
        return f"{text}[:{token.width}].ljust({token.width})" if token.width else text


def composition(fmt: OutputFormat, bind: Callable[[Any], str], reads: GeneratedReads,
                prefix: str) -> tuple[list[str], str, str]:
    """The code composing `fmt` for an event `ev` in a generated function whose names `bind` makes and whose field
    reads `reads` writes: statements extracting each value once (at the left margin; their variables start with
    `prefix`), then the expressions of the output text and of the output_fields. Straight-line code: no loop over
    the tokens, no test of a part's kind."""
    source = _ComposerSource(bind, reads, prefix)
    text = _formatted(fmt.parts, source)
    entries = []
    for key, get in fmt.fields:
        slot = source.value_of(get)
        entries.append(f"{key!r}: ({slot} if {slot}.__class__ is str or {slot} is None else {source.json}({slot}))")
    entries += [f"{key!r}: {bind(text.render)}(ev)" for key, text in fmt.texts]
    return source.lines, text, f"{{{', '.join(entries)}}}"


def _formatted(parts: Sequence[str | _Token], source: _ComposerSource) -> str:
    """An f-string expression of the output text: the interpreter builds it in one step, with no tuple to join and
    no call. The token expressions hold no quote and no backslash, which an f-string's may not."""
    body = "".join(part.replace("{", "{{").replace("}", "}}") if isinstance(part, str)
                   else f"{{{source.text_of(part)}}}" for part in parts)
    return f"f{body!r}"


def generate_composer(fmt: OutputFormat) -> Composer:
    """A function giving the output text and output_fields of `fmt` for an event (`composition` alone), a value
    shown in both extracted once."""
    namespace, bind = binder("_b")
    reads = GeneratedReads(bind)
    statements, text, fields = composition(fmt, bind, reads, "v")
    lines = ["def compose(ev):", *(f"    {line}" for line in (*reads.prologue(), *statements)),
             f"    return {text}, {fields}"]
    exec(compile("\n".join(lines), "<output>", "exec"), namespace)
    composer: Composer = namespace["compose"]
    return composer


class Alerting(Protocol):
    """What an alert takes from a rule or a correlation."""

    name: str
    priority: Priority
    tags: tuple[str, ...]
    output: OutputFormat


def alert_for(rule: Alerting, event: Event, *, hostname: str) -> Alert:
    """The alert `rule` raises on `event`: its output rendered from the event's fields."""
    output, output_fields = rule.output.compose(event)
    return Alert(rule.name, rule.priority, event.source, event.ts_ns, output, output_fields,
                 event.hostname or hostname, rule.tags)
