"""How one key of Falco's configuration is read: the kinds of rule the table is made of, and the translation they
write into (the agent's own keys, refusing two different values for one key, and the keys not supported)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from agent.config.raw import RawTree, RawValue, describe
from agent.config.schema import UnsupportedKey
from agent.errors import ConfigError

#: How an override's `where` starts (`-o json_output=true`): an override wins over what a file says.
OVERRIDE_PREFIX = "-o "
#: How a mapped value's `where` names the Falco key it comes from (`falco.yaml:12, as file_output.filename`).
_AS = ", as "


class Status(enum.Enum):
    HONOURED = "honoured"
    NOT_SUPPORTED = "not supported"


class Rule(Protocol):
    """One row's behaviour: what it does with the value written, and how the README says it."""

    @property
    def status(self) -> Status: ...

    @property
    def meaning(self) -> str: ...

    def apply(self, t: Translation, key: str, raw: RawValue, path: str) -> None: ...


@dataclass(frozen=True, slots=True)
class FalcoKey:
    """One row of the table: a key path of Falco's configuration (`http_output.insecure`; list items as
    `plugins[k8saudit]` for the entry named so, `append_output[]` for any) and its rule."""

    path: str
    rule: Rule


class Translation:
    """The agent's configuration tree being made from a written one: agent keys as written plus what each Falco
    key maps onto. Two different values for one agent key are refused with both places, unless exactly one of
    them is an override (`-o`), which wins as it does over any file value."""

    def __init__(self, table: Mapping[str, FalcoKey], source: RawTree) -> None:
        self.table = table
        self.source = source  # the tree as written (config files merged, overrides applied)
        self.tree: RawTree = {}
        self.unsupported: list[UnsupportedKey] = []
        self._writers: dict[str, str] = {}  # agent key -> the key written that set it

    def keep(self, key: str, raw: RawValue) -> None:
        """An agent key (or section) as written."""
        self.set(key, raw, falco_key=key)

    def set(self, agent_key: str, raw: RawValue, *, falco_key: str) -> None:
        """Set `agent_key` (dotted) to `raw`, as said by `falco_key`."""
        if falco_key != agent_key and not raw.where.startswith(OVERRIDE_PREFIX):
            raw = RawValue(raw.value, f"{raw.where}{_AS}{falco_key}")
        *parents, last = agent_key.split(".")
        node = self.tree
        for part in parents:
            child = node.get(part)
            if child is None or child.value is None:
                child = node[part] = RawValue({}, raw.where)
            if not isinstance(child.value, dict):
                return  # a section written as something else: the schema check names it
            node = child.value
        existing = node.get(last)
        if existing is not None and isinstance(existing.value, dict) and isinstance(raw.value, dict):
            for key, item in raw.value.items():  # a section both written and mapped onto: merged key by key
                self.set(f"{agent_key}.{key}", item, falco_key=f"{falco_key}.{key}")
            return
        if existing is not None and existing.plain() != raw.plain():
            if _is_override(existing) == _is_override(raw):
                writer = self._writers.get(agent_key, agent_key)
                raise ConfigError(f"{falco_key} ({_line(raw)}) and {writer} ({_line(existing)}) both set {agent_key}, "
                                  f"to {describe(raw.value)} and {describe(existing.value)}: keep only one of them")
            if _is_override(existing):
                return
        node[last] = raw
        self._writers[agent_key] = falco_key

    def is_written(self, agent_key: str) -> bool:
        """Whether the configuration as written holds the key (a section or a value)."""
        node: Any = self.source
        for part in agent_key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part].value
        return True

    def row(self, path: str) -> str | None:
        """The table path of `path`, matched as Go's JSON matches a plugin's init_config keys: exactly, else
        ignoring case (`S3AccountList` is `s3AccountList`)."""
        if path in self.table or ".init_config." not in path:
            return path if path in self.table else None
        folded = path.casefold()
        return next((known for known in self.table if known.casefold() == folded), None)

    def known_under(self, path: str) -> str:
        """The keys the table has directly under `path`, for an error message."""
        return ", ".join(sorted(known.rpartition(".")[2] for known in self.table
                                if known.rpartition(".")[0] == path)) or "none"

    def not_supported(self, key: str, raw: RawValue, reason: str) -> None:
        self.unsupported.append(UnsupportedKey(key=key, where=raw.where, reason=reason))

    def apply(self, path: str, key: str, raw: RawValue) -> None:
        """Apply the row at table path `path` to the value written at `key` (`plugins[2].open_params` is read by
        the row `plugins[k8saudit].open_params`)."""
        self.table[path].rule.apply(self, key, raw, path)


def _line(raw: RawValue) -> str:
    return raw.where.partition(_AS)[0]


def _is_override(raw: RawValue) -> bool:
    return raw.where.startswith(OVERRIDE_PREFIX)


def mapping_of(key: str, raw: RawValue) -> RawTree:
    """A section's keys; an empty section (`file_output:`) has none."""
    if raw.value is None:
        return {}
    if not isinstance(raw.value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {describe(raw.value)} ({raw.where})")
    tree: RawTree = raw.value
    return tree


def expect(key: str, raw: RawValue, kind: type | tuple[type, ...], wanted: str) -> Any:
    """The written value when it is of `kind` (a bool is no number), else ConfigError naming key and line."""
    value = raw.value
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        raise ConfigError(f"{key}: expected {wanted}, got {describe(value)} ({raw.where})")
    return value


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


Convert = Callable[[str, RawValue], Any]


@dataclass(frozen=True, slots=True)
class Same:
    """The agent has the key under the same name, with Falco's meaning; `convert` reads Falco's spelling of it."""

    note: str = ""
    convert: Convert | None = None
    status: Status = Status.HONOURED

    @property
    def meaning(self) -> str:
        return f"same key{': ' + self.note if self.note else ''}"

    def apply(self, t: Translation, key: str, raw: RawValue, path: str) -> None:
        value = RawValue(self.convert(key, raw), raw.where) if self.convert is not None else raw
        t.keep(key, value)


@dataclass(frozen=True, slots=True)
class MapTo:
    """Another agent key holds it: `target` gets the value (read by `convert` when Falco writes it otherwise)."""

    target: str
    note: str = ""
    convert: Convert | None = None
    status: Status = Status.HONOURED

    @property
    def meaning(self) -> str:
        return f"`{self.target}`{' (' + self.note + ')' if self.note else ''}"

    def apply(self, t: Translation, key: str, raw: RawValue, path: str) -> None:
        value = RawValue(self.convert(key, raw), raw.where) if self.convert is not None else raw
        t.set(self.target, value, falco_key=key)


@dataclass(frozen=True, slots=True)
class Unsupported:
    """Read and named in the start-up warning, not acted on; with `unless`, only when the value asks for more than
    the agent does anyway (`simulate_drops: false` is honoured, `true` is not)."""

    reason: str
    unless: Callable[[Any], bool] | None = None
    #: The values honoured, for the README, when `unless` accepts some.
    accepted: str = ""
    status: Status = Status.NOT_SUPPORTED

    @property
    def meaning(self) -> str:
        return f"{self.accepted} only: {self.reason}" if self.accepted else self.reason

    def apply(self, t: Translation, key: str, raw: RawValue, path: str) -> None:
        if self.unless is None or not self.unless(raw.plain()):
            t.not_supported(key, raw, self.reason)


@dataclass(frozen=True, slots=True)
class Nothing:
    """Honoured with nothing to do here: the agent already behaves as the value says, or the key was read before
    translation (`config_files`, merged into the tree by agent.config.falco.merge)."""

    note: str
    status: Status = Status.HONOURED

    @property
    def meaning(self) -> str:
        return self.note

    def apply(self, t: Translation, key: str, raw: RawValue, path: str) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Section:
    """A mapping whose keys have rows of their own. `is_agent_section`: the agent has a section of the same name,
    whose other keys are the agent's and pass through (checked by the schema); in a Falco-only section a key
    of neither is refused."""

    note: str = ""
    is_agent_section: bool = False
    status: Status = Status.HONOURED

    @property
    def meaning(self) -> str:
        return self.note or "section: see its keys"

    def apply(self, t: Translation, key: str, raw: RawValue, path: str) -> None:
        if self.is_agent_section and raw.value is None:
            t.keep(key, raw)
            return
        for name, item in mapping_of(key, raw).items():
            row = t.row(f"{path}.{name}")
            if row is not None:
                t.apply(row, f"{key}.{name}", item)
            elif self.is_agent_section:
                t.keep(f"{key}.{name}", item)
            else:
                raise ConfigError(f"{key}.{name}: unknown key ({item.where}); known keys here: {t.known_under(path)}")


@dataclass(frozen=True, slots=True)
class Custom:
    """Read by a function of its own (several agent keys, or depending on other keys)."""

    note: str
    read: Callable[[Translation, str, RawValue], None]
    status: Status = Status.HONOURED

    @property
    def meaning(self) -> str:
        return self.note

    def apply(self, t: Translation, key: str, raw: RawValue, path: str) -> None:
        self.read(t, key, raw)
