"""Configuration mistakes never get past the loader: every number of the schema is held to its bounds at load.

The schema is walked, so a key added later is covered (and must state its bounds) without touching this file.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import AgentConfig, load_config
from agent.config.schema import BOUNDS, Bounds
from agent.errors import ConfigError
from tests.agent.config.test_example import dataclass_of
from tests.support.agent_process import REPO


@dataclasses.dataclass(frozen=True, slots=True)
class NumericKey:
    """One number of the schema: its path (`rules[]` for an item of a list of mappings), type and bounds."""

    path: tuple[str, ...]
    kind: type
    default: Any
    bounds: Bounds | None

    @property
    def dotted(self) -> str:
        """The key as errors name it: the first item of a list is `[0]`."""
        return ".".join(self.path).replace("[]", "[0]")

    def below(self) -> float:
        """A value under the lower bound."""
        assert self.bounds is not None
        if self.bounds.gt is not None:
            return self.kind(self.bounds.gt)
        assert self.bounds.ge is not None
        return self.kind(self.bounds.ge - 1)

    def lowest(self) -> float:
        """The lowest value allowed (a little over `gt` for an exclusive bound)."""
        assert self.bounds is not None
        if self.bounds.gt is not None:
            return self.bounds.gt + 0.001
        assert self.bounds.ge is not None
        return self.kind(self.bounds.ge)

    def file_text(self, value: float) -> str:
        """YAML setting this key alone to `value`; the key is on the last line."""
        tree: Any = value
        for part in reversed(self.path):
            tree = {part.removesuffix("[]"): [tree] if part.endswith("[]") else tree}
        return yaml.safe_dump(tree, sort_keys=False)


def numeric_keys(cls: type = AgentConfig, path: tuple[str, ...] = ()) -> Iterator[NumericKey]:
    """Every int and float key under `cls`, nested mappings and lists of mappings included."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if hint in (int, float):
            yield NumericKey((*path, field.name), hint, field.default, field.metadata.get(BOUNDS))
        nested = dataclass_of(hint)
        if nested is not None:
            is_list = typing.get_origin(hint) is tuple
            yield from numeric_keys(nested, (*path, field.name + ("[]" if is_list else "")))


KEYS = list(numeric_keys())


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


def test_the_walk_finds_the_numbers() -> None:
    """The walk reaches nested and listed keys (a broken walk would pass every test below vacuously)."""
    found = {key.dotted for key in KEYS}
    assert {"queue_capacity_events", "sources.k8s_audit.webhook.max_body_bytes", "noise.rules[0].rate.alerts",
            "metrics.stuck_after_s"} <= found


@pytest.mark.parametrize("key", KEYS, ids=lambda key: key.dotted)
class TestEveryNumericKey:
    def test_states_bounds_that_its_default_keeps(self, key: NumericKey) -> None:
        """Each number of the schema says its range, with a lower bound, and its default is inside it."""
        assert key.bounds is not None, f"{key.dotted}: give the field metadata=limits(...)"
        assert key.bounds.ge is not None or key.bounds.gt is not None, f"{key.dotted}: no lower bound"
        assert key.bounds.problem(key.default) is None

    def test_a_value_below_its_minimum_is_refused_naming_key_and_line(self, key: NumericKey, tmp_path: Path) -> None:
        """Under the lower bound: a ConfigError naming the dotted key, the bound and the file line."""
        text = key.file_text(key.below())
        with pytest.raises(ConfigError) as caught:
            load_config(write(tmp_path, text), environ={})
        message = str(caught.value)
        assert message.startswith(f"{key.dotted}: must be ") and ", got " in message
        assert message.endswith(f"agent.yaml:{text.count(chr(10))})")

    def test_its_lowest_value_loads(self, key: NumericKey, tmp_path: Path) -> None:
        """The bound itself (or just above an exclusive one) is accepted."""
        load_config(write(tmp_path, key.file_text(key.lowest())), environ={})



@pytest.mark.parametrize("key", [key for key in KEYS if key.bounds is not None and key.bounds.le is not None],
                         ids=lambda key: key.dotted)
def test_a_value_above_its_maximum_is_refused(key: NumericKey, tmp_path: Path) -> None:
    """Over the upper bound, where a key has one: refused naming the key."""
    assert key.bounds is not None and key.bounds.le is not None
    with pytest.raises(ConfigError, match=rf"^{key.dotted}: must be .*<= "):
        load_config(write(tmp_path, key.file_text(key.kind(key.bounds.le + 1))), environ={})


@pytest.mark.parametrize(("text", "message"), [
    ("queue_capacity_events: 0\n", "queue_capacity_events: must be >= 1, got 0 ({file}:1)"),
    ("grpc:\n  enabled: true\nqueue_capacity_events: -5\n", "queue_capacity_events: must be >= 1, got -5 ({file}:3)"),
    ("sources:\n  k8s_audit:\n    webhook:\n      max_body_bytes: -1\n",
     "sources.k8s_audit.webhook.max_body_bytes: must be >= 1024, got -1 ({file}:4)"),
    ("sources:\n  k8s_audit:\n    webhook:\n      max_event_bytes: 0\n",
     "sources.k8s_audit.webhook.max_event_bytes: must be >= 1024, got 0 ({file}:4)"),
])
def test_reported_mistakes_stop_the_agent_with_exit_2(tmp_path: Path, text: str, message: str) -> None:
    """The values of the report end the agent at once: exit 2, one line on stderr naming key and line, no traceback."""
    path = write(tmp_path, text)
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "-c", str(path)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == f"falco-agent: configuration error: {message.format(file=path)}\n"
