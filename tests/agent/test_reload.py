"""Hot reload without a subprocess: the swap between two batches, the dry run, the watch thread, config changes."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.alert import Alert
from agent.builtin_sources import new_engine
from agent.config.schema import AgentConfig
from agent.engine.engine import Engine, RulesText
from agent.event import Event
from agent.event_queue import EventQueue
from agent.internal_alerts import RULES_RELOAD_FAILED, InternalAlerts
from agent.priority import Priority
from agent.reload import EngineSwap, Reloaded, RulesReloader, fingerprint
from agent.runtime import AgentRuntime
from sources.k8saudit.decoder import K8sAuditDecoder
from tests.agent.test_runtime import exec_event
from tests.support.queue_consumer import eventually

WAIT_S = 10


def rules_text(version: int, *, priority: str = "NOTICE") -> str:
    """One k8s_audit rule whose name carries the version and whose output names the pod of each event."""
    return (f"- rule: Exec v{version}\n  desc: exec into a pod\n  condition: ka.verb=create\n"
            f"  output: exec v{version} pod=%ka.target.name\n  priority: {priority}\n  source: k8s_audit\n")


def loaded_engine(version: int) -> Engine:
    engine = new_engine(hostname="node-1")
    assert engine.load_rules([RulesText(f"v{version}.yaml", rules_text(version))]).successful
    return engine


def events(first: int, count: int) -> list[Event]:
    decoder = K8sAuditDecoder(hostname="node-1")
    out = []
    for n in range(first, first + count):
        for event in decoder.events(exec_event(n), origin="test"):
            assert isinstance(event, Event)
            out.append(event)
    return out


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class CollectingOutput:
    """An output that records alerts and can run a hook on each one (on the engine loop, inside the batch)."""

    name = "collect"

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.on_emit: Any = None
        self.changed = threading.Condition()

    def emit(self, alert: Alert) -> None:
        self.alerts.append(alert)
        if self.on_emit is not None:
            self.on_emit(alert)

    def flush(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def close(self) -> None:
        pass

    def wait_for(self, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.alerts) >= count, WAIT_S), self.alerts


class SignallingSwap(EngineSwap):
    """An EngineSwap that lets a test wait for an offer."""

    def __init__(self) -> None:
        super().__init__()
        self.offered = threading.Event()

    def offer(self, reloaded: Reloaded) -> None:
        super().offer(reloaded)
        self.offered.set()


class TestSwapBetweenBatches:
    def test_a_swap_offered_mid_batch_applies_from_the_next_batch(self) -> None:
        """Rules reloaded while a batch is evaluated: that batch ends on the old rules, the next uses the new ones."""
        output = CollectingOutput()
        queue = EventQueue(100)
        runtime = AgentRuntime(loaded_engine(1), [], [output], queue)
        new = loaded_engine(2)

        def offer_once(alert: Alert) -> None:
            if len(output.alerts) == 1:
                runtime.swap.offer(Reloaded(new, ("v2.yaml",), "test"))

        output.on_emit = offer_once
        queue.put(events(0, 3))
        queue.put(events(3, 3))
        runtime.request_stop()  # evaluate both batches in the drain, deterministically
        runtime.run()
        assert [a.rule for a in output.alerts] == ["Exec v1"] * 3 + ["Exec v2"] * 3
        assert [a.output_fields["ka.target.name"] for a in output.alerts] == [f"cart-{n}" for n in range(6)]
        assert runtime.engine is new and runtime.engine.stats.events == 6

    def test_the_running_loop_swaps_without_losing_or_repeating_events(self) -> None:
        """With the loop running, batches around a swap are each evaluated once, in order, old rules then new."""
        output = CollectingOutput()
        queue = EventQueue(100)
        runtime = AgentRuntime(loaded_engine(1), [], [output], queue)
        loop = threading.Thread(target=runtime.run)
        loop.start()
        try:
            queue.put(events(0, 4))
            output.wait_for(4)
            runtime.swap.offer(Reloaded(loaded_engine(2), ("v2.yaml",), "test"))
            queue.put(events(4, 4))
            output.wait_for(8)
        finally:
            runtime.request_stop()
            loop.join(WAIT_S)
        assert [a.rule for a in output.alerts] == ["Exec v1"] * 4 + ["Exec v2"] * 4
        assert [a.output_fields["ka.target.name"] for a in output.alerts] == [f"cart-{n}" for n in range(8)]

    def test_internal_alerts_reach_every_output(self) -> None:
        """An internal alert raised from another thread goes to each output, not through the engine."""
        outputs = [CollectingOutput(), CollectingOutput()]
        runtime = AgentRuntime(loaded_engine(1), [], list(outputs), EventQueue(10))
        alert = runtime.internal_alerts.source_failed("k8s_audit", "boom", retry_in_s=1)
        raiser = threading.Thread(target=runtime.raise_alert, args=(alert,))
        raiser.start()
        raiser.join(WAIT_S)
        runtime.request_stop()
        runtime.run()
        assert [o.alerts for o in outputs] == [[alert], [alert]]
        assert runtime.engine.stats.events == 0


class FailingSwap(SignallingSwap):
    """A swap whose first offer raises `error`, as a bug anywhere in a reload would; later offers go through."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error: BaseException | None = error

    def offer(self, reloaded: Reloaded) -> None:
        error, self.error = self.error, None
        if error is not None:
            raise error
        super().offer(reloaded)


def make_reloader(tmp_path: Path, rules: Path, *, config: AgentConfig | None = None, config_path: str | None = None,
                  swap: EngineSwap | None = None, stuck_after_s: float = 60.0,
                  ) -> tuple[RulesReloader, EngineSwap, list[Alert]]:
    raised: list[Alert] = []
    swap = swap or EngineSwap()
    reloader = RulesReloader(config=config or AgentConfig(), config_path=config_path, overrides=[],
                             extra_rules=[str(rules)], template=loaded_engine(1), swap=swap,
                             alerts=InternalAlerts(hostname="node-1"), emit=raised.append, interval_s=0.02,
                             stuck_after_s=stuck_after_s)
    return reloader, swap, raised


class TestRulesReloader:
    def test_valid_rules_are_offered_as_a_new_engine(self, tmp_path: Path) -> None:
        """A reload loads the rules into a new engine and offers it; the running one is not touched."""
        rules = tmp_path / "rules.yaml"
        rules.write_text(rules_text(2))
        reloader, swap, raised = make_reloader(tmp_path, rules)
        assert reloader.reload(reason="test")
        reloaded = swap.take()
        assert reloaded is not None and [r.name for r in reloaded.engine.rules] == ["Exec v2"]
        assert swap.take() is None and raised == []

    def test_invalid_rules_raise_an_internal_alert_naming_the_error(self, tmp_path: Path) -> None:
        """Rules with an error are not offered; an internal alert names file, line, code and message."""
        rules = tmp_path / "rules.yaml"
        rules.write_text(rules_text(2).replace("ka.verb=create", "ka.verb ="))
        reloader, swap, raised = make_reloader(tmp_path, rules)
        with capture_logs() as logs:
            assert not reloader.reload(reason="test")
        assert swap.take() is None
        [alert] = raised
        assert alert.rule == RULES_RELOAD_FAILED and alert.source == "internal" and alert.priority is Priority.ERROR
        assert alert.output_fields["internal.file"] == str(rules)
        assert alert.output_fields["internal.line"] == 3  # the condition line
        assert alert.output_fields["internal.code"] == "LOAD_ERR_COMPILE_CONDITION"
        assert f"{rules}:3 LOAD_ERR_COMPILE_CONDITION" in alert.output
        assert any(entry["event"] == "rules_reload_failed" for entry in logs)

    def test_a_changed_file_is_noticed_and_reloaded(self, tmp_path: Path) -> None:
        """Replacing the rules file triggers a reload from the watch thread."""
        rules = tmp_path / "rules.yaml"
        rules.write_text(rules_text(1))
        reloader, swap, _ = make_reloader(tmp_path, rules, swap=SignallingSwap())
        reloader.start()
        try:
            write_atomically(rules, rules_text(2))
            assert swap.offered.wait(WAIT_S)  # type: ignore[attr-defined]
        finally:
            reloader.stop()
        reloaded = swap.take()
        assert reloaded is not None and reloaded.reason == "file_changed"
        assert [r.name for r in reloaded.engine.rules] == ["Exec v2"]

    def test_request_reloads_unchanged_files(self, tmp_path: Path) -> None:
        """A forced reload (SIGHUP) reloads even when no file changed."""
        rules = tmp_path / "rules.yaml"
        rules.write_text(rules_text(1))
        reloader, swap, _ = make_reloader(tmp_path, rules, swap=SignallingSwap())
        reloader.start()
        try:
            reloader.request()
            assert swap.offered.wait(WAIT_S)  # type: ignore[attr-defined]
        finally:
            reloader.stop()
        reloaded = swap.take()
        assert reloaded is not None and reloaded.reason == "signal"

    def test_config_priority_is_applied_and_other_keys_need_a_restart(self, tmp_path: Path) -> None:
        """A config reload applies `priority`; a changed key outside the rules keys is logged as restart needed."""
        rules = tmp_path / "rules.yaml"
        rules.write_text(rules_text(1, priority="INFO"))
        config_file = tmp_path / "agent.yaml"
        config_file.write_text("priority: debug\nqueue_capacity_events: 10\n")
        reloader, swap, _ = make_reloader(tmp_path, rules, config=AgentConfig(queue_capacity_events=10),
                                          config_path=str(config_file))
        config_file.write_text("priority: warning\nqueue_capacity_events: 20\n")
        with capture_logs() as logs:
            assert reloader.reload(reason="test")
        reloaded = swap.take()
        assert reloaded is not None and reloaded.engine.min_priority is Priority.WARNING
        [warning] = [entry for entry in logs if entry["event"] == "config_change_needs_restart"]
        assert warning["keys"] == ["queue_capacity_events"] and warning["log_level"] == "warning"

    def test_rule_commands_are_applied_to_the_reloaded_rules(self, tmp_path: Path) -> None:
        """A reload applies the config's `rules` enable/disable commands anew, with no restart needed."""
        rules = tmp_path / "rules.yaml"
        rules.write_text(rules_text(1) + rules_text(2))
        config_file = tmp_path / "agent.yaml"
        config_file.write_text("rules: []\n")
        reloader, swap, _ = make_reloader(tmp_path, rules, config_path=str(config_file))
        config_file.write_text("rules:\n  - disable: {rule: 'Exec v*'}\n  - enable: {rule: Exec v2}\n")
        with capture_logs() as logs:
            assert reloader.reload(reason="test")
        reloaded = swap.take()
        assert reloaded is not None
        assert [(r.name, r.enabled) for r in reloaded.engine.rules] == [("Exec v1", False), ("Exec v2", True)]
        assert not [entry for entry in logs if entry["event"] == "config_change_needs_restart"]

    def test_a_broken_config_keeps_the_running_rules(self, tmp_path: Path) -> None:
        """A config file that no longer loads raises an internal alert naming the key and offers nothing."""
        rules = tmp_path / "rules.yaml"
        rules.write_text(rules_text(1))
        config_file = tmp_path / "agent.yaml"
        config_file.write_text("priority: debug\n")
        reloader, swap, raised = make_reloader(tmp_path, rules, config_path=str(config_file))
        config_file.write_text("priorty: debug\n")
        assert not reloader.reload(reason="test")
        assert swap.take() is None
        [alert] = raised
        assert alert.rule == RULES_RELOAD_FAILED and "priorty: unknown key" in alert.output_fields["internal.error"]


class TestReloaderSurvives:
    def test_an_exception_in_a_reload_is_alerted_and_later_changes_reload(self, tmp_path: Path) -> None:
        """A reload that raises is logged with its traceback and raises an internal alert naming the exception; the
        running rules stay, and the next edit and the next SIGHUP reload again."""
        rules = tmp_path / "rules.yaml"
        rules.write_text(rules_text(1))
        swap = FailingSwap(RuntimeError("boom"))
        reloader, _, raised = make_reloader(tmp_path, rules, swap=swap)
        reloader.start()
        try:
            with capture_logs() as logs:
                write_atomically(rules, rules_text(2))
                assert eventually(lambda: bool(raised))
            [alert] = raised
            assert alert.rule == RULES_RELOAD_FAILED and alert.priority is Priority.ERROR
            assert alert.output_fields["internal.error"] == "RuntimeError: boom"
            assert alert.output_fields["internal.files"] == str(rules)
            assert "reason=file_changed error=RuntimeError: boom" in alert.output
            [crash] = [entry for entry in logs if entry["event"] == "rules_reload_crashed"]
            assert crash["log_level"] == "error" and crash["exc_info"] and crash["error"] == "RuntimeError: boom"
            assert reloader.failure() is None and swap.take() is None
            write_atomically(rules, rules_text(3))
            assert swap.offered.wait(WAIT_S)
            reloaded = swap.take()
            assert reloaded is not None and [r.name for r in reloaded.engine.rules] == ["Exec v3"]
            swap.offered.clear()
            reloader.request()
            assert swap.offered.wait(WAIT_S)
            reloaded = swap.take()
            assert reloaded is not None and reloaded.reason == "signal"
        finally:
            reloader.stop()

    @pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread ends on purpose
    def test_failure_names_a_reload_thread_that_ended(self, tmp_path: Path) -> None:
        """None before start, while it runs and after stop; a reason once the thread has ended on its own."""
        rules = tmp_path / "rules.yaml"
        rules.write_text(rules_text(1))
        reloader, _, _ = make_reloader(tmp_path, rules, swap=FailingSwap(SystemExit(3)))
        assert reloader.failure() is None
        reloader.start()
        try:
            assert reloader.failure() is None
            reloader.request()  # SystemExit is no Exception: nothing catches it and the thread ends
            assert eventually(lambda: reloader.failure() is not None)
            assert reloader.failure() == "the rules reload thread ended"
        finally:
            reloader.stop()
        assert reloader.failure() is None

    def test_failure_names_a_stuck_reload_until_it_ends(self, tmp_path: Path) -> None:
        """A reload blocked past `stuck_after_s` (here reading a FIFO nobody writes) is reported; once it ends, not."""
        rules = tmp_path / "rules.yaml"
        os.mkfifo(rules)
        reloader, swap, _ = make_reloader(tmp_path, rules, swap=SignallingSwap(), stuck_after_s=0.2)
        reloader.start()
        try:
            reloader.request()
            assert eventually(lambda: reloader.failure() is not None)
            reason = reloader.failure()
            assert reason is not None and reason.startswith("the rules reload thread has been busy for ")
            assert reason.endswith("s (more than 0.2 s)")
            with open(rules, "w") as fifo:  # the reload reads the rules and goes on
                fifo.write(rules_text(2))
            assert swap.offered.wait(WAIT_S)  # type: ignore[attr-defined]
            assert reloader.failure() is None
        finally:
            reloader.stop()
        reloaded = swap.take()
        assert reloaded is not None and [r.name for r in reloaded.engine.rules] == ["Exec v2"]


class TestFingerprint:
    def test_a_new_file_in_a_rules_directory_changes_it(self, tmp_path: Path) -> None:
        """Adding a `*.yaml` to a watched rules directory counts as a change; other files do not."""
        before = fingerprint([str(tmp_path)])
        (tmp_path / "notes.txt").write_text("x")
        assert fingerprint([str(tmp_path)]) == before
        (tmp_path / "more.yaml").write_text(rules_text(3))
        assert fingerprint([str(tmp_path)]) != before
