"""The bounded queue and writer thread behind the HTTP and program outputs."""

from __future__ import annotations

import threading

from structlog.testing import capture_logs

from agent.outputs.async_writer import AsyncWriter, Backoff, DeliveryError, RejectedError
from tests.agent.outputs.conftest import WAIT_S

FAST = Backoff(initial_s=0.005, max_s=0.02)


class Recorder:
    """A destination that blocks while `gate` is clear and fails its first `failures` sends."""

    def __init__(self, *, failures: int = 0, reject: bool = False, gate_open: bool = True) -> None:
        self.got: list[int] = []
        self.sends = 0
        self.failures = failures
        self.reject = reject
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.released = threading.Event()
        if gate_open:
            self.gate.set()

    def send(self, items: list[int]) -> None:
        self.entered.set()
        assert self.gate.wait(WAIT_S)
        self.sends += 1
        if self.reject:
            raise RejectedError("HTTP 400: bad request")
        if self.sends <= self.failures:
            raise DeliveryError("connection refused")
        self.got += items

    def release(self) -> None:
        self.released.set()


def new_writer(destination: Recorder, *, max_queue: int = 10, max_batch: int = 1) -> AsyncWriter[int]:
    return AsyncWriter("test", destination, max_queue=max_queue, max_batch=max_batch, backoff=FAST)


class TestQueue:
    def test_items_arrive_in_order_in_batches(self) -> None:
        """Every offered item reaches the destination once, in order."""
        destination = Recorder()
        writer = new_writer(destination, max_queue=100, max_batch=7)
        try:
            for i in range(50):
                assert writer.offer(i)
            assert writer.wait_idle(WAIT_S)
            assert destination.got == list(range(50))
            assert writer.counters() == {"delivered": 50, "dropped": 0, "rejected": 0, "failed_attempts": 0,
                                         "queue_depth": 0}
        finally:
            assert writer.stop(WAIT_S) and writer.join(WAIT_S)
        assert destination.released.is_set()

    def test_full_queue_drops_and_counts_without_waiting(self) -> None:
        """With the destination stuck, offers past the capacity return at once, dropped and counted."""
        destination = Recorder(gate_open=False)
        writer = new_writer(destination, max_queue=3)
        try:
            with capture_logs() as logs:
                assert writer.offer(0)
                assert destination.entered.wait(WAIT_S)  # item 0 is in flight, the queue is empty
                assert [writer.offer(i) for i in range(1, 7)] == [True, True, True, False, False, False]
                assert writer.dropped == 3 and writer.depth == 3
                destination.gate.set()
                assert writer.wait_idle(WAIT_S)
                assert writer.offer(7)
            assert writer.wait_idle(WAIT_S)
            assert destination.got == [0, 1, 2, 3, 7]
            events = [(e["event"], e.get("count")) for e in logs if e["event"].startswith("output_")]
            assert events == [("output_queue_full", None), ("output_alerts_dropped", 3)]
        finally:
            destination.gate.set()
            writer.stop(WAIT_S)
            writer.join(WAIT_S)


class TestRetry:
    def test_failed_batch_is_retried_until_delivered(self) -> None:
        """A failing destination gets the same batch again after a backoff, and nothing is lost."""
        destination = Recorder(failures=3)
        writer = new_writer(destination)
        try:
            with capture_logs() as logs:
                writer.offer(1)
                writer.offer(2)
                assert writer.wait_idle(WAIT_S)
            assert destination.got == [1, 2]
            assert writer.failed_attempts == 3 and writer.delivered == 2
            events = [e["event"] for e in logs]
            assert events.count("output_delivery_failed") == 1
            assert events.count("output_delivery_recovered") == 1
        finally:
            writer.stop(WAIT_S)
            writer.join(WAIT_S)

    def test_rejected_batch_is_counted_not_retried(self) -> None:
        """A batch the destination refuses for good is counted as rejected and sent only once."""
        destination = Recorder(reject=True)
        writer = new_writer(destination)
        try:
            writer.offer(1)
            assert writer.wait_idle(WAIT_S)
            assert destination.sends == 1 and writer.rejected == 1 and writer.delivered == 0
        finally:
            writer.stop(WAIT_S)
            writer.join(WAIT_S)

    def test_stop_gives_up_at_deadline_and_counts_the_rest(self) -> None:
        """When the destination never recovers, stop returns at its deadline and every item is counted dropped."""
        destination = Recorder(failures=10**9)
        writer = new_writer(destination)
        for i in range(5):
            writer.offer(i)
        assert not writer.stop(0.1)
        assert writer.join(WAIT_S)
        assert writer.dropped == 5 and writer.delivered == 0 and writer.depth == 0
        assert not writer.offer(6) and writer.dropped == 6


class TestBackoff:
    def test_delays_grow_and_stay_capped(self) -> None:
        """Each retry waits between half and all of the capped exponential delay."""
        backoff = Backoff(initial_s=1.0, max_s=8.0)
        for attempt, cap in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (10, 8.0), (500, 8.0)]:
            for _ in range(20):
                assert cap / 2 <= backoff.delay_s(attempt) <= cap
