"""Falco's watch_config_files and config_files in the hot reload, and rules folders read as Falco reads them."""

from __future__ import annotations

from pathlib import Path

from agent.config import load_config
from agent.priority import Priority
from agent.reload import rules_paths
from tests.agent.test_reload import WAIT_S, SignallingSwap, make_reloader, rules_text, write_atomically


def test_a_change_in_an_included_config_file_is_reloaded(tmp_path: Path) -> None:
    """The files of config_files are watched as the main one is: editing one reloads with what it says now."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text(1, priority="INFO"))
    included = tmp_path / "local.yaml"
    included.write_text("priority: debug\n")
    main = tmp_path / "falco.yaml"
    main.write_text(f"config_files: [{included}]\nwatch_config_files: true\n")
    config = load_config(main)
    reloader, swap, _ = make_reloader(tmp_path, rules, config=config, config_path=str(main), swap=SignallingSwap())
    assert str(included) in reloader.watched()
    reloader.start()
    try:
        write_atomically(included, "priority: warning\n")
        assert swap.offered.wait(WAIT_S)  # type: ignore[attr-defined]
    finally:
        reloader.stop()
    reloaded = swap.take()
    assert reloaded is not None and reloaded.engine.min_priority is Priority.WARNING


def test_without_watching_only_a_request_reloads(tmp_path: Path) -> None:
    """watch_config_files: false: a changed rules file is left alone; SIGHUP (request) still reloads it."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text(1))
    main = tmp_path / "falco.yaml"
    main.write_text("watch_config_files: false\n")
    reloader, swap, _ = make_reloader(tmp_path, rules, config=load_config(main), config_path=str(main),
                                      swap=SignallingSwap())
    reloader.start()
    try:
        write_atomically(rules, rules_text(2))
        assert not swap.offered.wait(0.5)  # type: ignore[attr-defined]  # 25 polling intervals
        reloader.request()
        assert swap.offered.wait(WAIT_S)  # type: ignore[attr-defined]
    finally:
        reloader.stop()
    reloaded = swap.take()
    assert reloaded is not None and reloaded.reason == "signal"
    assert [rule.name for rule in reloaded.engine.rules] == ["Exec v2"]


def test_a_rules_folder_takes_yaml_and_yml_files_in_name_order(tmp_path: Path) -> None:
    for name in ("b.yml", "a.yaml", "c.yaml", "notes.txt"):
        (tmp_path / name).write_text("")
    assert [path.name for path in rules_paths([str(tmp_path)])] == ["a.yaml", "b.yml", "c.yaml"]
