"""Source supervision: failed sources restarted with capped backoff, reported once per failure streak."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from agent.alert import Alert
from agent.errors import AgentError, DecodeError
from agent.event import Event
from agent.event_queue import EventQueue
from agent.internal_alerts import SOURCE_FAILED, SOURCE_RESTARTED, InternalAlerts
from agent.metrics import HealthProblem
from agent.source import EventSink, ListenError
from agent.source_worker import Pulse, SourceWorker, WorkerSource
from agent.supervisor import SourceSupervisor
from sources.k8saudit.decoder import K8sAuditDecoder
from sources.k8saudit.files import AuditLogFiles
from tests.agent.test_runtime import exec_event
from tests.support.queue_consumer import eventually

WAIT_S = 10


class FlakySource:
    """A source whose start fails `start_failures` times and which can be made to die."""

    name = "flaky"

    def __init__(self, *, start_failures: int = 0, error: type[AgentError] = AgentError) -> None:
        self.start_failures = start_failures
        self.error = error
        self.starts = 0
        self.stops = 0
        self.dead: str | None = None

    def start(self, sink: EventSink) -> None:
        if self.start_failures:
            self.start_failures -= 1
            raise self.error("cannot reach the thing")
        self.starts += 1
        self.dead = None

    def stop(self) -> None:
        self.stops += 1

    def metrics(self) -> dict[str, Any]:
        return {}

    def failure(self) -> str | None:
        return self.dead


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class BlockingSource(WorkerSource):
    """A real worker-backed source whose loop, after its first step, blocks inside one call until `release` is set,
    as a read of a FIFO without a writer does; once released it idles on its stop flag."""

    name = "blocking"

    def __init__(self) -> None:
        self._worker = SourceWorker("blocking-source", join_timeout_s=5.0)
        self.release = threading.Event()
        self.is_blocked = threading.Event()

    def start(self, sink: EventSink) -> None:
        self._worker.start(self._run)

    def _run(self) -> None:
        stopping = self._worker.stopping
        while not stopping.wait(0.01):
            self.is_blocked.set()
            self.release.wait()  # the call that does not come back (until the test says so)

    def stop(self) -> None:
        self.release.set()
        super().stop()

    def metrics(self) -> dict[str, Any]:
        return {}


def supervisor(*sources: Any, clock: Clock) -> tuple[SourceSupervisor, list[Alert]]:
    raised: list[Alert] = []
    return SourceSupervisor(list(sources), EventQueue(10), alerts=InternalAlerts(hostname="n"), emit=raised.append,
                            initial_backoff_s=1, max_backoff_s=8, clock=clock), raised


class TestFirstStart:
    def test_a_source_that_cannot_listen_ends_the_first_start_and_the_started_ones_stop(self) -> None:
        """A ListenError at the agent's start propagates, after the sources already started are stopped."""
        steady, busy = FlakySource(), FlakySource(start_failures=1, error=ListenError)
        sup, raised = supervisor(steady, busy, clock=Clock())
        with pytest.raises(ListenError, match="cannot reach the thing"):
            sup.start_sources()
        assert sup.running == [] and steady.stops == 1 and raised == []

    def test_a_listen_error_on_a_later_restart_is_retried_with_backoff(self) -> None:
        """Once the agent runs, a source that cannot listen again is supervised like any other failure."""
        clock = Clock()
        hook = FlakySource(error=ListenError)
        sup, raised = supervisor(hook, clock=clock)
        sup.start_sources()
        hook.dead, hook.start_failures = "server thread ended", 1
        sup.check()
        clock.now += 1
        sup.check()  # the restart fails to listen: retried, not raised
        assert sup.running == [] and [a.rule for a in raised] == [SOURCE_FAILED]
        clock.now += 2
        sup.check()
        assert sup.running == [hook]


class TestProblems:
    def test_a_source_waiting_for_its_restart_or_failed_is_named_with_its_reason(self) -> None:
        """Health hears of a source in backoff (with its error and next start) and of a death not yet handled."""
        clock = Clock()
        flaky, steady = FlakySource(start_failures=1), FlakySource()
        sup, _ = supervisor(flaky, steady, clock=clock)
        sup.start_sources()
        assert sup.problems() == [HealthProblem("source flaky (FlakySource)",
                                                "not running: cannot reach the thing; next start in 1 s")]
        clock.now += 1
        sup.check()
        assert sup.problems() == []
        steady.dead = "RuntimeError: bug"
        assert sup.problems() == [HealthProblem("source flaky (FlakySource)", "failed: RuntimeError: bug")]
        sup.stop()
        assert sup.problems() == []

    def test_a_worker_blocked_in_one_call_is_stuck_until_it_moves_on(self) -> None:
        """A real worker blocked inside a call past stuck_after_s is reported stuck; released, it is healthy again."""
        source = BlockingSource()
        sup = SourceSupervisor([source], EventQueue(10), alerts=InternalAlerts(hostname="n"), emit=lambda _: None,
                               stuck_after_s=0.2)
        sup.start_sources()
        try:
            assert source.is_blocked.wait(WAIT_S)
            assert eventually(lambda: bool(sup.problems()))
            [problem] = sup.problems()
            assert problem.part == "source blocking (BlockingSource)" and problem.reason.startswith("stuck: busy in ")
            source.release.set()
            assert eventually(lambda: sup.problems() == [])
        finally:
            sup.stop()

    def test_a_dead_supervisor_thread_is_a_problem(self) -> None:
        """When the supervising thread ends (a source's failure() raised), health says sources are not restarted."""
        class BrokenCheck(FlakySource):
            def failure(self) -> str | None:
                if threading.current_thread().name == "source-supervisor":
                    raise RuntimeError("failure() bug")
                return None

        sup = SourceSupervisor([BrokenCheck()], EventQueue(10), alerts=InternalAlerts(hostname="n"),
                               emit=lambda _: None, poll_interval_s=0.01)
        sup.start_sources()
        sup.start()
        try:
            assert eventually(lambda: any(p.part == "source_supervisor" for p in sup.problems()))
            assert "its thread ended" in sup.problems()[0].reason
        finally:
            sup.stop()


class TestPulse:
    def test_busy_time_runs_between_looks_and_not_while_waiting(self) -> None:
        """A loop is busy from its start or last look at the flag; waiting on the flag or ending is not busy."""
        clock = Clock()
        pulse = Pulse(clock)
        assert pulse.busy_s() == 0
        pulse.begin()
        clock.now += 5
        assert pulse.busy_s() == 5
        assert not pulse.is_set() and pulse.busy_s() == 0
        clock.now += 2
        assert not pulse.wait(0) and pulse.busy_s() == 0
        clock.now += 3
        assert pulse.busy_s() == 3
        pulse.rest()
        assert pulse.busy_s() == 0

    def test_waiting_on_the_flag_is_not_busy(self) -> None:
        """While the loop waits on its flag (its poll interval), another thread reads no busy time."""
        clock = Clock()
        pulse = Pulse(clock)
        pulse.begin()
        waiting = threading.Thread(target=pulse.wait, args=(WAIT_S,))
        waiting.start()
        try:
            assert eventually(lambda: pulse.busy_s() == 0 and clock.now > 0)
            clock.now += 100
            assert pulse.busy_s() == 0
        finally:
            pulse.set()
            waiting.join()


class TestBackoff:
    def test_a_source_failing_to_start_is_retried_with_doubling_capped_delays(self) -> None:
        """Start failures are retried after 1, 2, 4, 8, 8 s; one Failed alert, then one Restarted alert."""
        clock = Clock()
        flaky, steady = FlakySource(start_failures=5), FlakySource()
        sup, raised = supervisor(flaky, steady, clock=clock)
        sup.start_sources()
        assert sup.running == [steady]
        tried_at = [clock.now]
        while flaky not in sup.running and clock.now < 200:
            left = flaky.start_failures
            clock.now += 0.5
            sup.check()
            if flaky.start_failures != left or flaky in sup.running:
                tried_at.append(clock.now)
        assert [b - a for a, b in itertools.pairwise(tried_at)] == [1, 2, 4, 8, 8]
        assert [a.rule for a in raised] == [SOURCE_FAILED, SOURCE_RESTARTED]
        assert raised[0].output_fields["internal.source"] == "flaky" and raised[0].source == "internal"
        assert raised[1].output_fields["internal.attempts"] == 6
        assert steady.starts == 1

    def test_a_dead_source_is_stopped_restarted_and_the_backoff_starts_over_after_a_long_run(self) -> None:
        """A source reporting failure() is restarted; quick deaths double the delay, a long run resets it."""
        clock = Clock()
        flaky = FlakySource()
        sup, raised = supervisor(flaky, clock=clock)
        sup.start_sources()
        flaky.dead = "RuntimeError: bug"
        sup.check()
        assert sup.running == [] and flaky.stops == 1
        assert raised[-1].rule == SOURCE_FAILED and raised[-1].output_fields["internal.error"] == "RuntimeError: bug"
        clock.now += 1
        sup.check()
        assert sup.running == [flaky] and raised[-1].rule == SOURCE_RESTARTED
        flaky.dead = "RuntimeError: bug"  # dies again at once: 2 s this time
        sup.check()
        assert raised[-1].output_fields["internal.retry_in_s"] == 2
        clock.now += 2
        sup.check()
        clock.now += 8  # ran for the whole cap: the next death waits 1 s again
        flaky.dead = "RuntimeError: bug"
        sup.check()
        assert raised[-1].output_fields["internal.retry_in_s"] == 1

    def test_stop_stops_running_sources_and_ends_supervision(self) -> None:
        """After stop() no source runs and none is restarted."""
        clock = Clock()
        flaky = FlakySource(start_failures=1)
        sup, _ = supervisor(flaky, clock=clock)
        sup.start_sources()
        sup.stop()
        clock.now += 10
        sup.check()
        assert sup.running == [] and flaky.starts == 0


class OnceBrokenDecoder:
    """The k8s audit decoder with a bug that strikes on the first document only."""

    source = "k8s_audit"

    def __init__(self) -> None:
        self._decoder = K8sAuditDecoder(hostname="n")
        self.is_broken = True

    def matches(self, document: Any) -> bool:
        return self._decoder.matches(document)

    def events(self, document: Any, *, origin: str) -> Iterable[Event | DecodeError]:
        if self.is_broken:
            self.is_broken = False
            raise RuntimeError("decoder bug")
        return self._decoder.events(document, origin=origin)


class TestRealSource:
    def test_an_audit_log_reader_killed_by_a_bug_is_restarted_and_reads_on(self, tmp_path: Path) -> None:
        """The audit log reader's thread dies on a bug; the supervisor restarts it and the lines still arrive."""
        log_file = tmp_path / "audit.log"
        log_file.write_text("".join(json.dumps(exec_event(n)) + "\n" for n in range(3)))
        queue = EventQueue(100)
        source = AuditLogFiles(paths=[log_file], poll_interval_s=0.02, decoder=OnceBrokenDecoder())
        raised: list[Alert] = []
        sup = SourceSupervisor([source], queue, alerts=InternalAlerts(hostname="n"), emit=raised.append,
                               initial_backoff_s=0)
        sup.start_sources()
        try:
            assert source.wait_finished(WAIT_S) and source.failure() == "RuntimeError: decoder bug"
            sup.check()  # notices the death
            sup.check()  # restarts (no backoff in this test)
            assert [a.rule for a in raised] == [SOURCE_FAILED, SOURCE_RESTARTED]
            names: list[str] = []
            while len(names) < 3:
                batch = queue.get(timeout_s=WAIT_S)
                assert batch is not None, names
                names += [e.payload["objectRef"]["name"] for e in batch.events]
        finally:
            sup.stop()
        assert sorted(names) == ["cart-0", "cart-1", "cart-2"] and source.failure() is None
