"""What a source declares: its fields, their types and argument kinds, and how to extract them.

A field value is one of: ``None`` (not available: every check on it is false), a ``str``, an
``int``, a ``float``, a ``bool``, ``bytes``, or, for list-valued fields, a non-empty ``tuple`` of
those. An extractor never returns an empty tuple: an empty list is "not available".
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum, Flag, auto
from typing import Any

from agent.event import Event

Value = Any
Extractor = Callable[[Event], Value]
#: Builds an extractor for one argument (None when the field is used without one). It raises
#: ValueError with a user-facing message when the argument is invalid.
ExtractorFactory = Callable[[str | None], Extractor]
#: Builds, for a field whose checks compare through their constants rather than with its value (see
#: FieldSpec.comparator), the predicate of one check from the field's argument, the operator and the constants'
#: texts; None leaves the check to the ordinary comparison of the extracted value. ValueError refuses the check.
ConstantComparator = Callable[[str | None, str, tuple[str, ...]], Callable[[Event], bool] | None]


class FieldType(Enum):
    """Field value types, with Falco's names; `kind` groups them for operator checks."""

    STRING = "string"
    CHARBUF = "CHARBUF"
    BOOL = "bool"
    UINT64 = "uint64"
    UINT32 = "UINT32"
    INT64 = "INT64"
    INT32 = "INT32"
    INT16 = "INT16"
    DOUBLE = "DOUBLE"
    ABSTIME = "abstime"
    RELTIME = "reltime"
    PORT = "PORT"
    IPADDR = "IPADDR"
    IPNET = "IPNET"
    BYTEBUF = "BYTEBUF"
    DYN = "DYN"

    @property
    def kind(self) -> str:
        """One of ``string``, ``number``, ``bool``, ``bytes``, ``ipaddr``, ``ipnet``, ``dyn``."""
        return _KINDS[self]

    @classmethod
    def parse(cls, text: str) -> FieldType:
        """Map a type name of the reference tables (`string`, `UINT64`, `abstime`...) to a type."""
        key = text.strip().upper()
        aliases = {"STRING": cls.STRING, "CHARBUF": cls.CHARBUF, "UINT64": cls.UINT64,
                   "BOOL": cls.BOOL, "ABSTIME": cls.ABSTIME, "RELTIME": cls.RELTIME}
        if key in aliases:
            return aliases[key]
        return cls[key]


_KINDS = {
    FieldType.STRING: "string",
    FieldType.CHARBUF: "string",
    FieldType.BOOL: "bool",
    FieldType.UINT64: "number",
    FieldType.UINT32: "number",
    FieldType.INT64: "number",
    FieldType.INT32: "number",
    FieldType.INT16: "number",
    FieldType.DOUBLE: "number",
    FieldType.ABSTIME: "number",
    FieldType.RELTIME: "number",
    FieldType.PORT: "number",
    FieldType.IPADDR: "ipaddr",
    FieldType.IPNET: "ipnet",
    FieldType.BYTEBUF: "bytes",
    FieldType.DYN: "dyn",
}


class ArgKind(Flag):
    """Which argument a field takes in brackets: ``NONE``, an ``INDEX``, a ``KEY``, or both;
    ``REQUIRED`` when it cannot be used without one."""

    NONE = 0
    INDEX = auto()
    KEY = auto()
    REQUIRED = auto()

    @property
    def accepts_arg(self) -> bool:
        return bool(self & (ArgKind.INDEX | ArgKind.KEY))

    @property
    def label(self) -> str:
        if not self.accepts_arg:
            return "none"
        parts = [name for flag, name in ((ArgKind.INDEX, "index"), (ArgKind.KEY, "key")) if flag in self]
        parts.append("required" if ArgKind.REQUIRED in self else "optional")
        return ", ".join(parts)


class FieldFlag(Flag):
    """Restrictions on where a field may appear, and hints about its use (Falco's EPF_* flags that matter to rules
    and outputs)."""

    NONE = 0
    FILTER_ONLY = auto()
    PRINT_ONLY = auto()
    NO_RHS = auto()
    NO_TRANSFORMER = auto()
    DEPRECATED = auto()
    #: The field stands for several values at once (every ancestor's name for `proc.aname`, both
    #: ends of a connection for `fd.ip`): its extractor returns an AnyOf and a check holds when it
    #: holds for any of them, whatever the operator, as libsinsp compares such fields.
    ANY_OF = auto()
    #: `append_output`'s `suggested_output` appends the field to the outputs of its source's rules, as
    #: `container_id=%container.id` (EPF_FORMAT_SUGGESTED; a plugin field's `addOutput`).
    FORMAT_SUGGESTED = auto()
    #: Every event has a value for the field (the event's time, its source): `exists` on it always holds, so a rule
    #: a user turned off with such a test (`not (jevt.rawtime exists)`) is never evaluated.
    ALWAYS = auto()


class AnyOf:
    """The values of an ANY_OF field for one event; shown in outputs as the first (the nearest)."""

    __slots__ = ("values",)

    def __init__(self, values: tuple[Any, ...]) -> None:
        self.values = values

    def __str__(self) -> str:
        return str(self.values[0]) if self.values else ""

    def __repr__(self) -> str:
        return f"AnyOf{self.values!r}"


def _never(_arg: str | None) -> Extractor:
    return _not_available


def _not_available(_event: Event) -> Value:
    return None


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field a source can extract.

    `extractor` builds the extraction function for an argument, which may declare how generated code reads
    the field without calling it (`with_inline`); a field declared for rule
    compatibility whose extraction is not implemented yet keeps the default, and the condition
    compiler refuses any rule that names it (`is_implemented`). `dot_arg` lets the argument be
    written after a dot (`evt.arg.flags`).
    `comparator`, when set, builds the field's checks from their constants (`fd.sip.name = "example.com"`
    compares the server address with what the name resolves to); the extractor still gives the value outputs show.
    """

    name: str
    type: FieldType
    description: str
    extractor: ExtractorFactory = _never
    is_list: bool = False
    arg: ArgKind = ArgKind.NONE
    flags: FieldFlag = FieldFlag.NONE
    dot_arg: bool = False
    comparator: ConstantComparator | None = None

    @property
    def is_implemented(self) -> bool:
        return self.extractor is not _never

    def bind(self, arg: str | None) -> Extractor:
        """Return a caching extractor for `arg`; ValueError names what is wrong with the argument."""
        return cached_extractor(field_key(self.name, arg), self.bind_uncached(arg))

    def bind_uncached(self, arg: str | None) -> Extractor:
        """The extractor for `arg` without the per-event cache (for callers that cache inline)."""
        if arg is None and ArgKind.REQUIRED in self.arg:
            raise ValueError(f"field '{self.name}' requires an argument")
        if arg is not None:
            if not self.arg.accepts_arg:
                raise ValueError(f"field '{self.name}' does not take an argument")
            if self.arg & (ArgKind.INDEX | ArgKind.KEY) == ArgKind.INDEX and not _INDEX_RE.fullmatch(arg):
                raise ValueError(f"field '{self.name}' takes a numeric index argument, not '{arg}'")
        return self.extractor(arg)


_INDEX_RE = re.compile(r"0|[1-9][0-9]*")
#: What the event's cache answers for a field not extracted yet.
CACHE_MISS = object()


#: Each byte as a BYTEBUF value shows in outputs: printable ASCII as itself, any other byte as a dot, as libsinsp
#: prints I/O buffers by default.
_BUFFER_TEXT = bytes(b if 0x20 <= b < 0x7F else 0x2E for b in range(256))


def buffer_text(raw: bytes) -> str:
    """A BYTEBUF value (an I/O buffer) as output text; comparisons use the bytes themselves."""
    return raw.translate(_BUFFER_TEXT).decode("ascii")


def field_key(name: str, arg: str | None) -> str:
    """The text that identifies a field use: ``name`` or ``name[arg]``, as Falco re-renders it."""
    if arg is None:
        return name
    if re.fullmatch(r"[^\]\[\"' \t\r\n]+", arg):
        return f"{name}[{arg}]"
    return f'{name}["{arg}"]' if '"' not in arg else f"{name}['{arg}']"


def cached_extractor(key: str, extract: Extractor) -> Extractor:
    """Wrap an extractor so that its value is stored in, and read from, the event's cache under `key`."""

    def get(event: Event) -> Value:
        cache = event.cache
        value = cache.get(key, CACHE_MISS)
        if value is CACHE_MISS:
            value = cache[key] = extract(event)
        return value

    get.__name__ = f"extract<{key}>"
    get.cache_parts = (key, extract)  # type: ignore[attr-defined]
    return get


@dataclass(frozen=True, slots=True)
class InlineRead:
    """How generated code reads a field without calling its extractor (declared with `with_inline`).

    Where `guard` holds, `value` is what the extractor returns; elsewhere generated code calls the extractor.
    `guard` is hoisted to the start of each generated function (fields with the same guard share it), so the
    checks every field of a source repeats (the payload's shape) run once per function. Both are Python expressions
    and `str.format` templates: `{payload}` is the event's payload, `{event}` the event, `{tmp}` a local `value` may
    assign with `:=`, `{fallback}` the extractor's value read through the event's cache (for the values costly
    enough to keep there), and each name of `names` the object it is paired with (so literal braces are doubled).
    `guard` may use `{payload}` alone, and must not raise (it runs for reads a condition may never reach); an empty
    `guard` always holds. `decimal`, when set (with an empty `guard`), is an expression of the integer whose decimal
    text `value` always is: generated code compares it with a decimal constant as a number, without writing the text.
    """

    guard: str
    value: str
    names: tuple[tuple[str, Any], ...] = ()
    decimal: str = ""


def is_decimal_text(text: str) -> bool:
    """Whether `text` is the decimal form Python writes for an integer of at most 20 digits (no sign, no leading
    zero): the texts of 64-bit times and counters, the only texts a field with an InlineRead.decimal can have."""
    return len(text) <= 20 and text.isascii() and text.isdigit() and (text == "0" or text[0] != "0")


def template_literal(value: Any) -> str:
    """`value`'s Python literal as text of an InlineRead template (its braces doubled)."""
    return repr(value).replace("{", "{{").replace("}", "}}")


def with_inline(extract: Extractor, read: InlineRead) -> Extractor:
    """`extract`, declaring `read` as the inline form generated code uses in its place."""
    extract.inline_read = read  # type: ignore[attr-defined]
    return extract


def inline_read(extract: Extractor) -> InlineRead | None:
    """The inline form an extractor declares (`with_inline`), if any."""
    read: InlineRead | None = getattr(extract, "inline_read", None)
    return read


def decimal_form(get: Extractor) -> str | None:
    """The InlineRead.decimal template a field's extractor (or its caching getter, `cached_extractor`) declares, if
    any."""
    parts = cache_parts(get)
    inline = inline_read(get if parts is None else parts[1])
    return inline.decimal if inline is not None and inline.decimal and not inline.guard else None


class GeneratedReads:
    """The field reads of one generated function over an event `ev`: an expression per read, and the lines that
    must open the function (`prologue`).

    A field whose extractor declares an inline form is read inline (no call, no cache: its steps cost less than
    either); any other through the event's cache, as `cached_extractor` does but without its call: the value under
    its key, else its extraction stored there. `bind` puts an object in the function's namespace and returns the
    name it has there.

    A function evaluating several conditions reads a field once: `held` names the locals that already hold some
    fields' values when it starts (by cache key), and a field of `shared` is kept in a local at its first read.
    `reads` counts the reads of each cached field, to tell which are worth sharing. Code that only some runs of the
    function reach (an alert's composition) reads through a `branch`.
    """

    def __init__(self, bind: Callable[[Any], str], *, held: Mapping[str, str] | None = None,
                 shared: Collection[str] = ()) -> None:
        self._bind = bind
        self._miss = bind(CACHE_MISS)
        self._guards: dict[str, str] = {}  # guard text -> the local holding its truth
        self._guard_prefix = "_g"
        #: The reads of the function a branch is part of (None: these are the function's own).
        self._trunk: GeneratedReads | None = None
        self._count = 0
        self._uses_cache = False
        self._uses_payload = False
        self._bound: dict[int, str] = {}  # id of an object an inline form names -> its name in the namespace
        self._held = held or {}
        self._shared = shared
        self._kept: dict[str, str] = {}  # cache key of a shared field -> the local keeping its value once read
        self.reads: Counter[str] = Counter()
        self.held_used: set[str] = set()

    def read(self, key: str | None, extract: Extractor) -> str:
        """Expression for the value of a field with uncached extraction `extract`, cached under `key` (None: not
        cached)."""
        if key is None:
            return self._read(key, extract)
        self.reads[key] += 1
        held = self._held.get(key)
        if held is not None:
            self.held_used.add(held)
            return held
        if key not in self._shared:
            return self._read(key, extract)
        # Conditions stop early, so the first read met at run time is not known here: each reads unless one did.
        kept = self._kept.get(key) or self._kept.setdefault(key, f"_m{len(self._kept)}")
        return f"({kept} if {kept} is not {self._miss} else ({kept} := {self._read(key, extract)}))"

    def _read(self, key: str | None, extract: Extractor) -> str:
        self._count += 1
        tmp = f"_r{self._count}"
        inline = inline_read(extract)
        if inline is None:
            self._uses_cache = self._uses_cache or key is not None
            return self._cached(tmp, key, extract, "_c")
        # The fallback fetches the cache itself: most functions never take it, and need no local for it.
        fallback = self._cached(tmp, key, extract, "ev.cache")
        names = {name: self._bound_name(value) for name, value in inline.names}
        value = inline.value.format(payload="_p", event="ev", tmp=tmp, fallback=fallback, **names)
        self._uses_payload = self._uses_payload or "{payload}" in inline.value or bool(inline.guard)
        if not inline.guard:
            return f"({value})"
        guard = inline.guard.format(payload="_p")
        local = (self._trunk and self._trunk._guards.get(guard)) or self._guards.get(guard) or self._guards.setdefault(
            guard, f"{self._guard_prefix}{len(self._guards)}")
        return f"({value} if {local} else {fallback})"

    def decimal(self, extract: Extractor) -> str | None:
        """Expression for the integer whose decimal text the field's value always is (InlineRead.decimal), if the
        field declares one. `extract` is the field's extractor, or its caching getter (`cached_extractor`)."""
        form = decimal_form(extract)
        return None if form is None else f"({form.format(event='ev')})"

    def read_getter(self, get: Extractor) -> str:
        """Expression for the value of getter `get`: read as `read` does when it caches (`cached_extractor`), else
        called."""
        parts = cache_parts(get)
        return f"{self._bind(get)}(ev)" if parts is None else self.read(*parts)

    def _bound_name(self, value: Any) -> str:
        name = self._bound.get(id(value))
        if name is None:
            name = self._bound[id(value)] = self._bind(value)
        return name

    def _cached(self, tmp: str, key: str | None, extract: Extractor, cache: str) -> str:
        """The read through the event's cache (the expression `cache`); a call when not cached (`key` None)."""
        name = self._bind(extract)
        if key is None:
            return f"{name}(ev)"
        return f"({tmp} if ({tmp} := {cache}.get({key!r}, {self._miss})) is not {self._miss} else " \
               f"{cache}.setdefault({key!r}, {name}(ev)))"

    def branch(self) -> GeneratedReads:
        """The reads of code only some runs of this function reach, once this function's own reads are written: it
        uses the locals the function opens, and opens what only it needs at its own start (its `prologue`), so a run
        that never reaches it pays nothing for it. Fields it keeps (`shared`) and takes from the index key (`held`)
        are the function's, opened at the function's start."""
        branch = copy.copy(self)  # the same kept, held and counted reads, and bound names
        branch._trunk = self
        branch._guards = {}
        branch._guard_prefix = "_gb"  # apart from the function's guards, which code after the branch still reads
        branch._uses_cache = branch._uses_payload = False
        return branch

    def prologue(self) -> list[str]:
        """The statements the reads need, to open the function (or the branch): the event's cache, its payload, the
        kept fields, the guards."""
        trunk = self._trunk
        lines = ["_c = ev.cache"] if self._uses_cache and not (trunk and trunk._uses_cache) else []
        lines += ["_p = ev.payload"] if self._uses_payload and not (trunk and trunk._uses_payload) else []
        lines += [] if trunk else [f"{local} = {self._miss}" for local in self._kept.values()]
        return lines + [f"{local} = {guard}" for guard, local in self._guards.items()]


def binder(prefix: str) -> tuple[dict[str, Any], Callable[[Any], str]]:
    """A generated function's namespace, and the `bind` that puts an object in it and returns the name it has there
    (`prefix` and a number)."""
    namespace: dict[str, Any] = {}

    def bind(value: Any) -> str:
        name = f"{prefix}{len(namespace)}"
        namespace[name] = value
        return name

    return namespace, bind


def generated_read(get: Extractor) -> Extractor:
    """`get`'s field read as generated code reads it: a caching getter (`cached_extractor`) inline (its extractor's
    inline form, or the event's cache), any other called."""
    namespace, bind = binder("_n")
    reads = GeneratedReads(bind)
    value = reads.read_getter(get)
    lines = ["def read(ev):", *(f"    {line}" for line in reads.prologue()), f"    return {value}"]
    exec(compile("\n".join(lines), "<read>", "exec"), namespace)
    function: Extractor = namespace["read"]
    return function


def cache_parts(get: Extractor) -> tuple[str, Extractor] | None:
    """The cache key and the uncached extraction of a `cached_extractor` (None for any other extractor), for
    callers that generate code reading the event's cache inline."""
    parts: tuple[str, Extractor] | None = getattr(get, "cache_parts", None)
    return parts


class FieldTable:
    """The fields one source declares, by name; later specs of the same name replace earlier ones."""

    def __init__(self, specs: Iterable[FieldSpec]) -> None:
        self._by_name: dict[str, FieldSpec] = {}
        for spec in specs:
            self._by_name[spec.name] = spec
        self._dot_arg_names = sorted(
            (name for name, spec in self._by_name.items() if spec.dot_arg), key=len, reverse=True
        )

    def __iter__(self) -> Iterator[FieldSpec]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> FieldSpec | None:
        return self._by_name.get(name)

    def resolve(self, name: str, arg: str | None) -> tuple[FieldSpec, str | None] | None:
        """Find the field for a lexed name, splitting a dot argument off when the table allows one."""
        spec = self._by_name.get(name)
        if spec is not None:
            return spec, arg
        if arg is None:
            for base in self._dot_arg_names:
                if name.startswith(base + ".") and len(name) > len(base) + 1:
                    return self._by_name[base], name[len(base) + 1 :]
        return None

    def with_fields(self, specs: Iterable[FieldSpec]) -> FieldTable:
        """A new table holding these fields plus `specs`, which win on a name clash."""
        return FieldTable([*self._by_name.values(), *specs])
