"""How a source is known to the rest of the agent: as data, never by name in the engine."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from agent.errors import AgentError, DecodeError
from agent.event import Event
from agent.fields import FieldTable


@dataclass(frozen=True, slots=True)
class PathParts:
    """Fields that are parts of the path field `path` ("" for a part the source lacks): `directory` is the path
    before its last slash (the path itself when it ends with one or names a directory, `/` when it has no slash
    past its first character), `filename` what follows the last slash (the path itself when it ends with one,
    `/` when it has none). A part has a value only when the path has one. Then a check on a part bounds the path:
    see agent.engine.rule_guards."""

    path: str
    directory: str = ""
    filename: str = ""


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A source as the engine sees it.

    `index_fields` are scalar fields, in order of preference, whose value a rule may pin with
    `=`/`in` so that the engine evaluates the rule only on events with those values.
    `guard_fields` are scalar text fields with too many values to index, cheap to extract, whose value the
    engine checks against what a rule's condition allows of them (exact values, prefixes, suffixes) before
    evaluating it; `guard_paths` says which fields are parts of a guard path field.
    `plugins` are the (name, version) pairs this built-in source stands in for when a rules
    file lists `required_plugin_versions`.
    """

    name: str
    fields: FieldTable
    index_fields: tuple[str, ...] = ()
    plugins: tuple[tuple[str, str], ...] = field(default=())
    #: Warn (LOAD_NO_EVTTYPE) about rules that no index field narrows down, as Falco does for syscalls.
    warn_unindexed: bool = False
    guard_fields: tuple[str, ...] = ()
    guard_paths: tuple[PathParts, ...] = ()


@dataclass(frozen=True, slots=True)
class DropNotice:
    """Input a live source lost before reading it (syscalls the kernel could not hand over), since its
    previous notice. `what` names the loss in the internal alert: "syscall event drop"."""

    what: str
    lost: int
    delivered: int
    lost_total: int
    worst_ratio: float
    window_s: float


@runtime_checkable
class DropReporting(Protocol):
    """A live source that loses input upstream of the agent says so; the runtime raises an alert per notice."""

    def drop_notices(self) -> list[DropNotice]: ...


@runtime_checkable
class ProgressReporting(Protocol):
    """A live source that shows its worker moves on (agent.source_worker.Pulse keeps the time).

    `busy_s()` is how long the worker has been inside one step of its loop without coming back to it: 0 while it
    waits for input or is stopped. The agent's health reports a source busy past `metrics.stuck_after_s` as stuck
    (blocked in a read of a FIFO, in a call that never returns).
    """

    def busy_s(self) -> float: ...


class ListenError(AgentError):
    """`start()` cannot listen where the configuration says (the address is taken, not permitted...).

    The message names the key and the address. When the agent starts this is fatal, as systemd and Kubernetes
    expect of a configuration that cannot be served; met on a later restart it is retried like any failure.
    """


class EventSink(Protocol):
    """Where a live source hands its events: see agent.event_queue.EventQueue."""

    def offer(self, events: Sequence[Event], on_done: Callable[[], None] | None = None) -> bool:
        """Queue the whole batch now or return False; never waits."""
        ...

    def put(self, events: Sequence[Event], on_done: Callable[[], None] | None = None, *,
            timeout_s: float | None = None) -> bool:
        """Queue the whole batch, waiting for room; False on timeout."""
        ...


class LiveSource(Protocol):
    """A running input: it starts its own threads, feeds the sink, and stops when asked.

    A source may also offer `failure() -> str | None` (agent.supervisor.FailureReporting) so that the agent
    notices when its threads die and restarts it; `start()` must then work again after `stop()`.
    """

    name: str

    def start(self, sink: EventSink) -> None:
        """Begin reading; raise AgentError with a clear reason (ListenError for an address) when it cannot start."""
        ...

    def stop(self) -> None:
        """Stop taking input and return once the source's threads have ended."""
        ...

    def metrics(self) -> dict[str, Any]:
        """Counters and gauges of this source, flat, for the metrics endpoint."""
        ...


class RecordDecoder(Protocol):
    """Turns parsed JSON documents of recorded input into events of one source."""

    source: str

    def matches(self, document: Any) -> bool:
        """Whether a parsed JSON document looks like this source's input."""
        ...

    def events(self, document: Any, *, origin: str) -> Iterable[Event | DecodeError]:
        """An event per record; a bad record gives a DecodeError naming origin and index."""
        ...
