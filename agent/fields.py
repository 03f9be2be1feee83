"""What a source declares: its fields, their types and argument kinds, and how to extract them.

A field value is one of: ``None`` (not available: every check on it is false), a ``str``, an
``int``, a ``float``, a ``bool``, ``bytes``, or, for list-valued fields, a non-empty ``tuple`` of
those. An extractor never returns an empty tuple: an empty list is "not available".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
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

    `extractor` builds the extraction function for an argument; a field declared for rule
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


def cached_read(var: str, key: str, extract: str) -> str:
    """Generated code (an expression) for what `cached_extractor` does, without its call: the value under `key` in
    the event's cache (`_c`, with CACHE_MISS bound as `_M`), else the function named `extract` applied to `ev`,
    stored there. `var` is a local the expression may use."""
    return f"({var} if ({var} := _c.get({key!r}, _M)) is not _M else _c.setdefault({key!r}, {extract}(ev)))"


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
