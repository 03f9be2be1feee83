"""examples/agent.yaml documents the whole configuration: every key of the schema appears in it, with a comment."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from agent.config.schema import IS_INTERNAL, AgentConfig, Unchecked

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "agent.yaml"


def dataclass_of(hint: Any) -> type | None:
    """The dataclass a field holds directly, optionally (`X | None`) or as tuple items, if any."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union, tuple):
        for arg in typing.get_args(hint):
            if isinstance(arg, type) and dataclasses.is_dataclass(arg):
                return arg
        return None
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def missing_keys(cls: type, value: Any, prefix: str) -> Iterator[str]:
    """Dotted keys of `cls` that `value` (the parsed YAML) does not spell out; list items count together."""
    items = value if isinstance(value, list) else [value]
    mappings = [item for item in items if isinstance(item, dict)]
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.metadata.get(IS_INTERNAL):  # filled by the loader, never written
            continue
        dotted = f"{prefix}{field.name}"
        present = [m[field.name] for m in mappings if field.name in m]
        if not present:
            yield dotted
            continue
        nested = dataclass_of(hints[field.name])
        if nested is not None and nested is not Unchecked:  # a plugin's init_config: its keys are the plugin's
            flat = [v for p in present for v in (p if isinstance(p, list) else [p])]
            yield from missing_keys(nested, flat, dotted + ".")


def test_every_schema_key_is_documented() -> None:
    """Adding a key to schema.py without documenting it in examples/agent.yaml fails here."""
    tree = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert sorted(missing_keys(AgentConfig, tree, "")) == []


def test_every_value_has_a_comment_stating_its_default() -> None:
    """Each `key: value` line sits under a comment that says what the key does and its default."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        stripped = line.strip().removeprefix("- ")
        is_value = ":" in stripped and not stripped.startswith("#") and not stripped.endswith(":")
        if not is_value or stripped.startswith("rate: {"):  # the short-form example repeats documented keys
            continue
        above = lines[number - 1].strip()
        assert above.startswith("#") and "default" in above, (
            f"examples/agent.yaml:{number + 1}: '{stripped}' needs a comment above it stating its default")
