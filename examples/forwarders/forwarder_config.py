"""Reads a forwarder's YAML file into frozen settings, taking `${NAME}` / `${NAME:-default}` from the environment.

Every forwarder file has the same four sections (`agent`, `filters`, `delivery`, `http`) plus one of its own
(`slack`, `webhook`, `siem`). Unknown keys are errors naming the dotted key, so a typo never passes silently.
`${NAME}` references are resolved by the agent's own `agent.config.env.interpolate`.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from agent.config.env import interpolate
from agent.errors import ConfigError
from agent.location import Location

__all__ = ["AgentSettings", "DeliverySettings", "FilterSettings", "FiltersSettings", "ForwarderSettings",
           "HttpSettings", "build_section", "load_settings"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """How to reach the agent's gRPC API: a unix socket, or `host:port` with TLS (mutual when cert and key)."""

    socket_path: str | None = "/run/falco-agent/grpc.sock"
    address: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_server_name: str | None = None
    reconnect_backoff_max_s: float = 5.0


@dataclass(frozen=True, slots=True)
class FilterSettings:
    """One server-side filter: every key given must match (alerts.proto semantics)."""

    min_priority: str | None = None
    sources: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    tags_any: tuple[str, ...] = ()
    tags_all: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FiltersSettings:
    """An alert passes when it matches any `allow` filter (or there are none) and no `deny` filter."""

    allow: tuple[FilterSettings, ...] = ()
    deny: tuple[FilterSettings, ...] = ()


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """Batching, retries and the state file holding the last acknowledged sequence number."""

    state_file: str = "forwarder.state"
    start_at: Literal["latest", "earliest"] = "latest"  # only when the state file does not exist yet
    batch_size: int = 100
    batch_max_wait_s: float = 1.0
    timeout_s: float = 10.0  # one delivery attempt, connection to last byte
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 60.0
    dead_letter_file: str | None = None  # JSON lines of alerts the remote refused for good
    queue_size: int = 1000  # alerts read ahead of delivery; when full, the subscription waits


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The remote endpoint and how to talk to it."""

    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    tls_verify: bool = True
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None


@dataclass(frozen=True, slots=True)
class ForwarderSettings:
    """The sections every forwarder shares."""

    agent: AgentSettings = AgentSettings()
    filters: FiltersSettings = FiltersSettings()
    delivery: DeliverySettings = DeliverySettings()
    http: HttpSettings = HttpSettings()


def load_settings(path: str | os.PathLike[str], own_key: str, own_cls: type[T], *,
                  environ: Mapping[str, str] | None = None) -> tuple[ForwarderSettings, T]:
    """The shared sections and the forwarder's own section (`own_key`) of one YAML file."""
    where = Location(os.fspath(path))
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read forwarder configuration: {exc.strerror}", where) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", where) from None
    if not isinstance(raw, dict):
        raise ConfigError("the configuration must be a mapping of sections", where)
    env = os.environ if environ is None else environ
    own = raw.pop(own_key, None)
    try:
        shared = build_section(ForwarderSettings, raw, "", env)
        mine = build_section(own_cls, own, f"{own_key}.", env)
    except ConfigError as exc:
        raise ConfigError(exc.message, where) from None
    if shared.agent.socket_path and shared.agent.address:
        raise ConfigError("agent: give socket_path or address, not both", where)
    return shared, mine


def build_section(cls: type[T], raw: Any, prefix: str, env: Mapping[str, str]) -> T:
    """An instance of the dataclass `cls` from a mapping, interpolating strings; unknown keys are errors."""
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'configuration'}: expected a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(f"{dotted}: unknown key; known keys here: {', '.join(sorted(known))}")
        kwargs[key] = _convert(hints[key], value, dotted, env)
    return cls(**kwargs)


def _convert(hint: Any, value: Any, dotted: str, env: Mapping[str, str]) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{dotted}: expected {expected}, got {value!r}")

    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        return _convert(next(a for a in args if a is not type(None)), value, dotted, env)
    if dataclasses.is_dataclass(hint):
        return build_section(hint, value, dotted + ".", env)  # type: ignore[arg-type]
    if origin is Literal:
        text = interpolate(value, env, key=dotted) if isinstance(value, str) else value
        if text not in args:
            raise bad("one of " + ", ".join(map(str, args)))
        return text
    if origin is tuple:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise bad("a list")
        return tuple(_convert(args[0], item, f"{dotted}[{i}]", env) for i, item in enumerate(value))
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise bad("a mapping")
        return {str(k): _convert(args[1], v, f"{dotted}.{k}", env) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if hint in (int, float):
        if isinstance(value, str):
            value = yaml.safe_load(interpolate(value, env, key=dotted))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (hint is int and isinstance(value, float)):
            raise bad("a whole number" if hint is int else "a number")
        return hint(value)
    if hint is str:
        if isinstance(value, (dict, list)) or value is None:
            raise bad("a string")
        return interpolate(str(value), env, key=dotted)
    raise ConfigError(f"{dotted}: unsupported configuration type {hint}")
