"""The falco-agent plugin API: a plugin is one `Plugin` object; this module is all a plugin imports.

A plugin declares, as Falco's plugins do:

* `name` and `version` (semver): the name `plugins[].name` and `load_plugins` use, the pair a rules file's
  `required_plugin_versions` is checked against;
* `source`: the event source it provides (rules say `source: NAME`; `--enable-source NAME` runs it), and/or
  `extract_sources`: other sources whose events its `fields` read as well;
* `inputs_only`: its `live` inputs feed `source`, which another plugin defines with its fields (Falco's
  k8saudit-eks feeding `k8s_audit`);
* `fields`: `FieldSpec`s, or Falco's `plugin_get_fields` JSON shape turned into them by `schema_fields`;
* `config`: a frozen dataclass for its `init_config`, checked by the agent's configuration loader (an unknown
  key, a wrong type or a number outside its `limits(...)` is an error naming the dotted key and the file line);
* `live`: builds its live inputs from its config (a source plugin that reads live input);
* `decoder`: optionally, a `RecordDecoder` for `falco-agent replay` of its recorded JSON;
* `close`: optionally, what to release when the agent stops.

A live input (`LiveSource`) keeps the contract of the built-in ones:

* `start(sink)` starts its own threads and returns; it raises an `AgentError` saying why it cannot start;
* it hands events to `sink` in batches: `sink.put(...)` waits for room in the agent's bounded queue (that wait is
  the backpressure), `sink.offer(...)` never waits and returns False when the queue is full;
* a batch may carry `on_done`, called once every event of it was evaluated and its alerts written: checkpoint
  there, so that only evaluated work is remembered;
* `stop()` ends the threads and returns; `start()` must work again after it;
* `failure()` returns why its threads ended on their own (None while it runs): the agent's supervisor then stops
  it and starts it again with backoff while the other sources keep running. `SourceWorker` gives an input one
  supervised thread with all of that; `WorkerSource` its stop(), failure() and busy_s() for a class holding one
  as `_worker`.
* `metrics()` returns flat counters for the metrics endpoint.

The agent finds a plugin through the entry-point group `falco_agent.plugins` (the entry point's name) or by the
dotted path `package.module:OBJECT`, written as `library_path` of an entry under `plugins` in agent.yaml.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from agent.config.schema import limits
from agent.engine.requirements import parse_semver
from agent.errors import AgentError, DecodeError
from agent.event import Event
from agent.fields import ArgKind, FieldFlag, FieldSpec, FieldTable, FieldType, Value
from agent.generic_fields import generic_fields
from agent.location import Location
from agent.source import EventSink, LiveSource, PathParts, RecordDecoder, SourceSpec
from agent.source_worker import SourceWorker, Stopped, WorkerSource

if TYPE_CHECKING:
    from agent.engine.engine import Engine

__all__ = [
    "AgentError", "ArgKind", "DecodeError", "Event", "EventSink", "Extract", "FieldSpec", "FieldTable", "FieldType",
    "LiveContext", "LiveSource", "Location", "NoConfig", "Plugin", "RecordDecoder", "SourceWorker", "Stopped",
    "WorkerSource", "limits", "schema_fields",
]

ConfigT = TypeVar("ConfigT")


@dataclass(frozen=True, slots=True)
class NoConfig:
    """The config of a plugin that takes none: its `init_config` must be empty."""


@dataclass(frozen=True, slots=True)
class LiveContext:
    """What a live input builder gets besides its config."""

    #: The agent's host name, for `Event.hostname`.
    hostname: str
    #: The entry's `open_params` (Falco's plugin_open argument), "" when not given.
    open_params: str
    #: `rule_values(source, field)`: the values of `field`, one of the source's `index_fields`, that the loaded rules
    #: can match (None: any value). Call it when the input starts: it follows rules reloads.
    rule_values: Callable[[str, str], frozenset[Any] | None]
    #: `rule_values_naming(source, field, fields)`: the same, among only the rules that name one of `fields` (field
    #: uses as written in rules: `evt.buffer`, `evt.rawarg.data`) in their condition or output. Without a rules
    #: engine to ask, any value.
    rule_values_naming: Callable[[str, str, frozenset[str]], frozenset[Any] | None] = (
        lambda _source, _field, _fields: None)
    #: The rules engine now loaded (it follows reloads), for an input that derives more from the rules (the
    #: kernel's prefilter); None without one.
    engine: Callable[[], Engine | None] = lambda: None


class Extract(Protocol):
    """Falco's `plugin_extract_fields` for one field: the value of `field` (with its `arg`) for `event`.

    Return None when the event has no value, a scalar, or a non-empty tuple for a list field.
    """

    def __call__(self, event: Event, field: str, arg: str | None, /) -> Value: ...


def schema_fields(entries: Sequence[Mapping[str, Any]], extract: Extract) -> tuple[FieldSpec, ...]:
    """Fields from Falco's `plugin_get_fields` JSON: a list of {name, type, isList, arg {isRequired, isIndex,
    isKey}, desc, addOutput}; other keys (display, properties) are ignored. ValueError names a bad entry."""
    return tuple(_schema_field(index, entry, extract) for index, entry in enumerate(entries))


def _schema_field(index: int, entry: Mapping[str, Any], extract: Extract) -> FieldSpec:
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"field #{index}: 'name' must be a non-empty string")
    try:
        kind = FieldType.parse(str(entry.get("type", "")))
    except KeyError:
        raise ValueError(f"field '{name}': unknown type {entry.get('type')!r}; use one of "
                         f"{', '.join(t.value for t in FieldType)}") from None
    arg = entry.get("arg") or {}
    flags = ArgKind.NONE
    for key, flag in (("isIndex", ArgKind.INDEX), ("isKey", ArgKind.KEY), ("isRequired", ArgKind.REQUIRED)):
        if arg.get(key):
            flags |= flag
    if ArgKind.REQUIRED in flags and not flags.accepts_arg:
        raise ValueError(f"field '{name}': arg.isRequired needs arg.isIndex or arg.isKey")

    def factory(field_arg: str | None) -> Callable[[Event], Value]:
        return lambda event: extract(event, name, field_arg)

    suggested = FieldFlag.FORMAT_SUGGESTED if entry.get("addOutput") is True else FieldFlag.NONE
    return FieldSpec(name, kind, str(entry.get("desc", "")), factory, is_list=bool(entry.get("isList")), arg=flags,
                     flags=suggested)


@dataclass(frozen=True, slots=True)
class Plugin(Generic[ConfigT]):
    """One plugin: see the module docstring. Give `source`, `extract_sources` or both."""

    name: str
    version: str
    #: A frozen dataclass (every key with a default) that `init_config` is checked against; NoConfig for none.
    config: type[ConfigT]
    #: The event source this plugin provides ("" when it only adds fields to others).
    source: str = ""
    #: Other event sources whose events its `fields` read too (Falco's extraction capability).
    extract_sources: tuple[str, ...] = ()
    fields: tuple[FieldSpec, ...] = ()
    #: Fields of its source, in order of preference, whose `=`/`in` values let the engine skip rules (and
    #: `LiveContext.rule_values` tell the input what the rules need).
    index_fields: tuple[str, ...] = ()
    #: Text fields of its source the engine checks against what each rule allows of them before the rule's
    #: condition, and the fields that are parts of such a path field (agent.source.SourceSpec).
    guard_fields: tuple[str, ...] = ()
    guard_paths: tuple[PathParts, ...] = ()
    #: Builds the live inputs of its source, not yet started, from its config; an AgentError says what is wrong.
    live: Callable[[ConfigT, LiveContext], Sequence[LiveSource]] | None = None
    #: Builds, for a host name, the decoder `replay` uses for recorded JSON of its source.
    decoder: Callable[[str], RecordDecoder] | None = None
    #: Warn about rules that no index field narrows down, as Falco does for syscalls.
    warn_unindexed: bool = False
    #: Falco plugins this one implements natively, reported for `required_plugin_versions` instead of itself.
    falco_plugins: tuple[tuple[str, str], ...] = field(default=())
    #: Its events' payloads are libscap plugin events, and its fields read only such events (a native plugin):
    #: the registry refuses such fields on a source whose events are not (agent.plugins.native_plugin).
    scap_events: bool = False
    #: Called once when the agent stops, after its live inputs stopped (a native plugin's `plugin_destroy`).
    close: Callable[[], None] | None = None
    #: True: the plugin only adds live inputs to `source`, an event source another loaded plugin defines (whose
    #: fields, index and decoder serve its events), as Falco's k8saudit-eks feeds k8saudit's `k8s_audit`.
    inputs_only: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a plugin needs a name")
        if parse_semver(self.version) is None:
            raise ValueError(f"plugin '{self.name}': version '{self.version}' is not semver (MAJOR.MINOR.PATCH)")
        if not self.source and not self.extract_sources:
            raise ValueError(f"plugin '{self.name}': give the source it provides, the sources it extracts from, "
                             "or both")
        if (self.live is not None or self.decoder is not None) and not self.source:
            raise ValueError(f"plugin '{self.name}': live inputs and decoders need the plugin's own `source`")
        if self.inputs_only and (self.live is None or self.fields or self.index_fields or self.guard_fields
                                 or self.decoder is not None or self.extract_sources):
            raise ValueError(f"plugin '{self.name}': an inputs_only plugin gives `source` and `live` alone; the "
                             "plugin defining the source gives its fields, index and decoder")
        if not (isinstance(self.config, type) and dataclasses.is_dataclass(self.config)):
            raise ValueError(f"plugin '{self.name}': config must be a dataclass type (NoConfig for none)")

    @property
    def reported_plugins(self) -> tuple[tuple[str, str], ...]:
        """The (name, version) pairs that count as loaded for `required_plugin_versions`."""
        return self.falco_plugins or ((self.name, self.version),)

    def source_spec(self) -> SourceSpec | None:
        """Its own event source as the engine sees it (None for a plugin that only extracts): Falco's generic
        `evt.*` fields (`evt.time`, `evt.pluginname`...), then its own `fields`, which win on a name clash."""
        if not self.source or self.inputs_only:
            return None
        fields = FieldTable([*generic_fields(plugin_name=self.name), *self.fields])
        return SourceSpec(self.source, fields, self.index_fields, plugins=self.reported_plugins,
                          warn_unindexed=self.warn_unindexed, guard_fields=self.guard_fields,
                          guard_paths=self.guard_paths)
