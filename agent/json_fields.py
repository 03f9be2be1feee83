"""The `json.*` fields (and their `jevt.*` aliases) for any source whose payload is parsed JSON."""

from __future__ import annotations

import json
from typing import Any

import orjson

from agent.event import Event
from agent.fields import (
    ArgKind,
    Extractor,
    FieldFlag,
    FieldSpec,
    FieldType,
    InlineRead,
    Value,
    template_literal,
    with_inline,
)


def compact_json(value: Any) -> bytes:
    """Compact JSON of a parsed JSON value, without raising: also nested deeper than orjson writes (it reads 1024
    levels but writes 254), and with the integers past 64 bits or lone surrogates it refuses."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return _compact_json_slowly(value)


def _compact_json_slowly(value: Any) -> bytes:
    """compact_json without recursion: a stack of values still to write and of bytes already written (punctuation
    and keys; a parsed document holds no bytes)."""
    out: list[bytes] = []
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        if item.__class__ is bytes:
            out.append(item)
        elif isinstance(item, dict):
            members: list[Any] = []
            for key, member in item.items():
                members += [(b"," if members else b"") + _scalar_json(str(key)) + b":", member]
            pending += [b"}", *reversed(members), b"{"]
        elif isinstance(item, list | tuple):
            items: list[Any] = []
            for member in item:
                items += [b",", member] if items else [member]
            pending += [b"]", *reversed(items), b"["]
        else:
            out.append(_scalar_json(item))
    return b"".join(out)


def _scalar_json(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # an integer past 64 bits, or a string with a lone surrogate
        return json.dumps(value).encode()


def json_text(value: Any) -> str:
    """A JSON value as rule text: a string unquoted, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    if value.__class__ is int:
        return str(value)  # what JSON writes for an integer (a status code, a port), without the encoder
    # JSON's constants without the encoder: a pod's flags (`privileged`, `hostNetwork`) are booleans that rules read
    # on every pod created.
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    return compact_json(value).decode()


def json_type_name(value: Any) -> str:
    """The JSON type of a parsed value with its article, for error messages (`a string`, `an array`)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def parse_pointer(pointer: str) -> tuple[str | int, ...]:
    """Split a JSON pointer (leading `/` optional) into keys; decimal segments may index arrays."""
    if pointer == "":
        return ()
    body = pointer[1:] if pointer.startswith("/") else pointer
    return tuple(part.replace("~1", "/").replace("~0", "~") for part in body.split("/"))


def resolve_pointer(document: Any, steps: tuple[str | int, ...]) -> Any:
    """Follow pointer steps; return the `_ABSENT` marker when any step is missing."""
    node = document
    for step in steps:
        if isinstance(node, dict):
            node = node.get(step, _ABSENT)
            if node is _ABSENT:
                return _ABSENT
        elif isinstance(node, list) and isinstance(step, str) and step.isdigit():
            index = int(step)
            if index >= len(node):
                return _ABSENT
            node = node[index]
        else:
            return _ABSENT
    return node


_ABSENT = object()


def _value_extractor(arg: str | None) -> Extractor:
    steps = parse_pointer(arg or "")
    if len(steps) == 1:
        return _member_extractor(steps)

    def extract(event: Event) -> Value:
        found = resolve_pointer(event.payload, steps)
        return None if found is _ABSENT else json_text(found)

    return extract


def _member_extractor(steps: tuple[str | int, ...]) -> Extractor:
    """`_value_extractor` of a one-step pointer (`/stage`, read by every k8s_audit rule), without the walk when the
    payload is a plain object."""
    key = steps[0]

    def extract(event: Event) -> Value:
        payload = event.payload
        found = payload.get(key, _ABSENT) if payload.__class__ is dict else resolve_pointer(payload, steps)
        if found.__class__ is str:
            return found
        return None if found is _ABSENT else json_text(found)

    # Inline in generated code when the payload is an object (every k8s_audit rule reads `/stage`).
    step = template_literal(key)
    return with_inline(extract, InlineRead(
        "{payload}.__class__ is dict",
        f"({{tmp}} if ({{tmp}} := {{payload}}.get({step}, {{ABSENT}})).__class__ is str else "
        "None if {tmp} is {ABSENT} else {fallback})",
        (("ABSENT", _ABSENT),)))


def _obj(_arg: str | None) -> Extractor:
    return lambda event: orjson.dumps(event.payload, option=orjson.OPT_INDENT_2).decode()


def _rawtime(_arg: str | None) -> Extractor:
    return with_inline(lambda event: str(event.ts_ns), InlineRead("", "str({event}.ts_ns)", decimal="{event}.ts_ns"))


def json_fields() -> list[FieldSpec]:
    """The json plugin's fields under both their names."""
    specs = []
    for prefix in ("json", "jevt"):
        specs += [
            FieldSpec(f"{prefix}.value", FieldType.STRING,
                      "value at a JSON pointer into the event, strings unquoted, other values as JSON",
                      _value_extractor, arg=ArgKind.KEY | ArgKind.REQUIRED),
            FieldSpec(f"{prefix}.obj", FieldType.STRING, "the whole event as indented JSON", _obj),
            FieldSpec(f"{prefix}.rawtime", FieldType.STRING, "event time in nanoseconds, as text", _rawtime,
                      flags=FieldFlag.ALWAYS),
        ]
    return specs
