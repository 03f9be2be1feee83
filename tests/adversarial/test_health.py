"""/healthz reflects every part's progress: a source blocked inside one call, or a dead reload thread, makes it 503.

Liveness used to answer ok while an input was blocked forever or the rules reload thread had died.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.builtin_sources import new_engine
from agent.config import load_config
from agent.event_queue import EventQueue
from agent.runtime import AgentRuntime, start_metrics_server
from agent.webserver import WebServer
from tests.agent.test_supervisor import BlockingSource
from tests.support.agent_process import Agent
from tests.support.queue_consumer import eventually
from tests.support.webhook_agent import healthz

WAIT_S = 20.0


def is_unhealthy(url: str, seen: list[tuple[int, dict[str, Any]]]) -> bool:
    """Whether /healthz answers 503 now; every answer is kept in `seen`."""
    seen.append(healthz(url))
    return seen[-1][0] == 503


@contextmanager
def running_agent(source: BlockingSource, *, stuck_after_s: float) -> Iterator[WebServer]:
    """A real runtime (engine loop, supervisor, web server on 127.0.0.1:0) over `source`, stopped at the end."""
    config = load_config(overrides=["webserver.listen_port=0"])
    runtime = AgentRuntime(new_engine(), [source], [], EventQueue(10), stuck_after_s=stuck_after_s)
    runtime.start_sources()
    metrics = start_metrics_server(config, runtime)
    assert metrics is not None
    runtime.servers.append(metrics)
    loop = threading.Thread(target=runtime.run, name="engine-loop")
    loop.start()
    try:
        yield metrics
    finally:
        runtime.request_stop()
        loop.join(WAIT_S)
        assert not loop.is_alive()


def test_a_source_blocked_inside_one_call_is_unhealthy_until_it_moves_on() -> None:
    """A worker stuck past stuck_after_s turns /healthz 503 naming the source; released, /healthz is 200 again."""
    source = BlockingSource()
    with running_agent(source, stuck_after_s=0.5) as metrics:
        assert source.is_blocked.wait(WAIT_S)
        seen: list[tuple[int, dict[str, Any]]] = []
        assert eventually(lambda: is_unhealthy(metrics.url, seen), WAIT_S)
        body = seen[-1][1]
        assert body["status"] == "unhealthy"
        [problem] = body["problems"]
        assert problem["part"] == "source blocking (BlockingSource)"
        assert problem["reason"].startswith("stuck: busy in one step for ")
        source.release.set()
        assert eventually(lambda: healthz(metrics.url)[0] == 200, WAIT_S)


def test_the_agent_is_healthy_while_its_sources_move_on() -> None:
    """The same runtime with an idle source (never blocked) answers 200 with no problems."""
    source = BlockingSource()
    source.release.set()
    with running_agent(source, stuck_after_s=0.5) as metrics:
        assert source.is_blocked.wait(WAIT_S)
        status, body = healthz(metrics.url)
        assert (status, body["status"], body["problems"]) == (200, "ok", [])


def test_an_agent_whose_rules_reload_is_stuck_is_unhealthy(tmp_path: Path) -> None:
    """A real agent process whose reload blocks (its new rules file is a FIFO nobody writes) answers 503 naming
    rules_reload once the reload has run for metrics.stuck_after_s; unblocked, it is healthy again."""
    config = tmp_path / "agent.yaml"
    config.write_text("")
    fifo = tmp_path / "rules.yaml"
    os.mkfifo(fifo)
    agent = Agent("-c", str(config), "-o", "sources.k8s_audit.webhook.listen=127.0.0.1:0",
                  "-o", "metrics.stuck_after_s=1")
    try:
        url = agent.wait_for_log("metrics_listening")["url"].removesuffix("/metrics")
        assert eventually(lambda: healthz(url)[0] == 200, WAIT_S)
        config.write_text(f"rules_files: [{fifo}]\n")
        seen: list[tuple[int, dict[str, Any]]] = []
        assert eventually(lambda: is_unhealthy(url, seen), WAIT_S), seen[-1:]
        [problem] = seen[-1][1]["problems"]
        assert problem["part"] == "rules_reload" and "restart the agent" in problem["reason"], problem
        release(fifo)
        assert eventually(lambda: healthz(url)[0] == 200, WAIT_S)
    finally:
        release(fifo)
        code, _ = agent.stop()
    assert code == 0


def release(fifo: Path) -> None:
    """Let a reader blocked opening `fifo` go on to read an empty file; nothing when no reader waits."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # ENXIO: no reader has it open
            raise
