"""Reloading rules: a correlation whose matching is unchanged keeps its state; a changed one starts empty."""

from __future__ import annotations

from agent.engine.engine import Engine, RulesText
from tests.correlation.test_state import a, b, engine_with, fired, metrics, sequence


def reload(engine: Engine, text: str) -> None:
    result = engine.load_rules([RulesText("c.yaml", text)])
    assert result.successful, result.as_text()


class TestReload:
    def test_unchanged_correlation_keeps_its_state_and_counters(self) -> None:
        """A half-done chain survives a reload of the same rules, and its counters continue."""
        engine = engine_with(sequence())
        fired(engine, a(0), b(1), a(2))
        reload(engine, sequence())
        assert fired(engine, b(3)) == ["k1 did /x"]
        assert metrics(engine)["matches"] == 2

    def test_priority_or_tags_change_keeps_state(self) -> None:
        """Changing only priority, tags or desc does not change what matches: the state stays."""
        engine = engine_with(sequence())
        fired(engine, a(0))
        reload(engine, sequence().replace("priority: WARNING", "priority: ERROR\n  tags: [x]"))
        assert fired(engine, b(3)) == ["k1 did /x"]

    def test_changed_matching_definition_starts_empty(self) -> None:
        """A new window (or steps, keys, lateness, limits, output) resets that correlation's state."""
        engine = engine_with(sequence())
        fired(engine, a(0))
        reload(engine, sequence(window="20m"))
        assert fired(engine, b(3)) == []
        assert metrics(engine)["live_keys"] == 1  # only b's entry, waiting for a late a

    def test_failed_reload_keeps_the_running_state(self) -> None:
        """A reload that does not load leaves rules and state untouched."""
        engine = engine_with(sequence())
        fired(engine, a(0))
        assert not engine.load_rules([RulesText("c.yaml", sequence(window="never"))]).successful
        assert fired(engine, b(3)) == ["k1 did /x"]

    def test_new_engine_adopts_state_from_the_one_it_replaces(self) -> None:
        """The hot-reload path builds a new engine; adopt_state hands the state over."""
        running = engine_with(sequence())
        fired(running, a(0))
        replacement = engine_with(sequence())
        replacement.adopt_state(running)
        assert fired(replacement, b(3)) == ["k1 did /x"]


def test_the_agent_reload_swap_carries_the_state_to_the_new_engine() -> None:
    """The runtime's hot reload builds a new engine; swap_in hands it the running correlation state."""
    from agent.reload import Reloaded, swap_in

    running = engine_with(sequence())
    fired(running, a(0))
    swapped = swap_in(running, Reloaded(engine_with(sequence()), files=("c.yaml",), reason="changed"))
    assert fired(swapped, b(3)) == ["k1 did /x"]
