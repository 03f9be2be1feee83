"""The `json.*` fields (and their `jevt.*` aliases) for any source whose payload is parsed JSON."""

from __future__ import annotations

from typing import Any

import orjson

from agent.event import Event
from agent.fields import ArgKind, Extractor, FieldSpec, FieldType, Value


def json_text(value: Any) -> str:
    """A JSON value as rule text: a string unquoted, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


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

    def extract(event: Event) -> Value:
        found = resolve_pointer(event.payload, steps)
        return None if found is _ABSENT else json_text(found)

    return extract


def _obj(_arg: str | None) -> Extractor:
    return lambda event: orjson.dumps(event.payload, option=orjson.OPT_INDENT_2).decode()


def _rawtime(_arg: str | None) -> Extractor:
    return lambda event: str(event.ts_ns)


def json_fields() -> list[FieldSpec]:
    """The json plugin's fields under both their names."""
    specs = []
    for prefix in ("json", "jevt"):
        specs += [
            FieldSpec(f"{prefix}.value", FieldType.STRING,
                      "value at a JSON pointer into the event, strings unquoted, other values as JSON",
                      _value_extractor, arg=ArgKind.KEY | ArgKind.REQUIRED),
            FieldSpec(f"{prefix}.obj", FieldType.STRING, "the whole event as indented JSON", _obj),
            FieldSpec(f"{prefix}.rawtime", FieldType.STRING, "event time in nanoseconds, as text", _rawtime),
        ]
    return specs
