"""Reading a runtime's JSON answer defensively: a part of the wrong shape counts as absent, never an error."""

from __future__ import annotations

from typing import Any


def json_object(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def json_objects(value: Any) -> list[dict[str, Any]]:
    """The JSON objects of a list (anything else in it is skipped); nothing when `value` is not a list."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def json_path(value: Any, *keys: str) -> Any:
    """The value at `keys` down nested objects, None when a step is missing or not an object."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value
