"""The web server scraped over real HTTP: the agent's own `falco_agent_*` families of the runtime's counters, and
/healthz. Falco's `falcosecurity_*` families are tested in test_falco_metrics.py."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.config.schema import WebserverConfig
from agent.engine.engine import EngineStats
from agent.errors import ConfigError
from agent.event_queue import EventQueue
from agent.metrics import HealthProblem, Heartbeat, MetricsSnapshot, PipelineTally, SourceMetrics, build_snapshot
from agent.outputs.file import FileOutput
from agent.outputs.stdout import StdoutOutput
from agent.priority import Priority
from agent.webserver import WebServer
from tests.agent.outputs.conftest import make_alert

WAIT_S = 20.0


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@contextmanager
def serving(collect: Callable[[], MetricsSnapshot], *, heartbeat: Heartbeat | None = None,
            stale_after_s: float = 10.0,
            problems: Callable[[], list[HealthProblem]] = list) -> Iterator[WebServer]:
    server = WebServer(WebserverConfig(listen_port=0), collect, heartbeat=heartbeat or Heartbeat(),
                       stale_after_s=stale_after_s, problems=problems)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=WAIT_S) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def scrape(server: WebServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, keyed by name and sorted labels."""
    status, content_type, body = get(server.url + "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples}


def sample_snapshot() -> MetricsSnapshot:
    return MetricsSnapshot(
        events_total=120, alerts_total=7, rule_errors_total=1, rules_loaded=42,
        events_by_source={"k8s_audit": 100, "aws_cloudtrail": 20},
        alerts_by_rule={("Create privileged pod", "Warning", "k8s_audit"): 5,
                        ('Odd "name"\nhere', "Critical", "aws_cloudtrail"): 2},
        eval_seconds_total=0.25, queue_depth=3, queue_capacity=100,
        sources=[SourceMetrics("aws_cloudtrail", "DirectorySource", {"files_read": 4, "lag_s": None, "up": True}),
                 SourceMetrics("aws_cloudtrail", "S3Source", {"files_read": 9, "region": "eu-west-1"}),
                 SourceMetrics("k8s_audit", "WebhookSource", {"requests_refused_503": 2, "lag-s": 1.5})],
        outputs={"http": {"delivered": 6, "dropped": 3, "rejected": 0, "failed_attempts": 4, "queue_depth": 2},
                 "file": {"delivered": 7, "dropped": 0, "reopens": 1}},
        correlations={"Shell After Exec Into Pod": {"live_keys": 12, "matches": 2, "evicted_limit": 5}},
    )


@pytest.mark.server
class TestMetrics:
    def test_scrape_shows_the_snapshot(self) -> None:
        """Each snapshot value appears as a Prometheus sample with its labels."""
        with serving(sample_snapshot) as server:
            samples = scrape(server)
        expected: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {
            ("falco_agent_events_total", ()): 120,
            ("falco_agent_alerts_total", ()): 7,
            ("falco_agent_rule_errors_total", ()): 1,
            ("falco_agent_rules_loaded", ()): 42,
            ("falco_agent_events_evaluated_total", (("source", "k8s_audit"),)): 100,
            ("falco_agent_rule_alerts_total",
             (("priority", "Warning"), ("rule", "Create privileged pod"), ("source", "k8s_audit"))): 5,
            ("falco_agent_rule_alerts_total",
             (("priority", "Critical"), ("rule", 'Odd "name"\nhere'), ("source", "aws_cloudtrail"))): 2,
            ("falco_agent_engine_eval_seconds_total", ()): 0.25,
            ("falco_agent_event_queue_depth", ()): 3,
            ("falco_agent_event_queue_capacity", ()): 100,
            ("falco_agent_source_files_read", (("component", "DirectorySource"), ("source", "aws_cloudtrail"))): 4,
            ("falco_agent_source_files_read", (("component", "S3Source"), ("source", "aws_cloudtrail"))): 9,
            ("falco_agent_source_up", (("component", "DirectorySource"), ("source", "aws_cloudtrail"))): 1,
            ("falco_agent_source_requests_refused_503", (("component", "WebhookSource"), ("source", "k8s_audit"))): 2,
            ("falco_agent_source_lag_s", (("component", "WebhookSource"), ("source", "k8s_audit"))): 1.5,
            ("falco_agent_output_alerts_total", (("output", "http"), ("result", "dropped"))): 3,
            ("falco_agent_output_alerts_total", (("output", "file"), ("result", "delivered"))): 7,
            ("falco_agent_output_queue_depth", (("output", "http"),)): 2,
            ("falco_agent_output_failed_attempts_total", (("output", "http"),)): 4,
            ("falco_agent_output_reopens_total", (("output", "file"),)): 1,
            ("falco_agent_correlation_live_keys", (("rule", "Shell After Exec Into Pod"),)): 12,
            ("falco_agent_correlation_matches_total", (("rule", "Shell After Exec Into Pod"),)): 2,
            ("falco_agent_correlation_evicted_limit_total", (("rule", "Shell After Exec Into Pod"),)): 5,
        }
        for key, value in expected.items():
            assert samples.get(key) == value, key
        assert not [key for key in samples if key[0] == "falco_agent_source_region"]  # not a number: left out
        assert ("process_resident_memory_bytes", ()) in samples

    def test_snapshot_is_built_from_the_runtime_parts(self, tmp_path: Path) -> None:
        """build_snapshot reads engine stats, the tally, the queue, sources and the outputs that keep counters."""
        stats = EngineStats(events=10, alerts=2)
        tally = PipelineTally()
        tally.count_events("syscall", 10)
        for alert in (make_alert(0), make_alert(3, priority=Priority.CRITICAL), make_alert(6)):
            tally.count_alert(alert)
        tally.add_eval_time(0.5)
        files = [FileOutput(tmp_path / f"alerts{i}.log", as_json=False, iso8601=False) for i in range(2)]
        files[0].emit(make_alert(0))

        class Source:
            name = "k8s_audit"

            def metrics(self) -> dict[str, Any]:
                return {"events_accepted": 10}

        outputs = [StdoutOutput(as_json=False, iso8601=False), *files]
        snap = build_snapshot(engine_stats=stats, tally=tally, queue=EventQueue(64), sources=[Source()],
                              outputs=outputs, rules_loaded=5)
        for output in files:
            output.close()
        assert snap.alerts_by_rule == {("Rule 0", "Warning", "syscall"): 2, ("Rule 0", "Critical", "syscall"): 1}
        assert snap.events_by_source == {"syscall": 10} and snap.eval_seconds_total == 0.5
        assert (snap.events_total, snap.alerts_total, snap.queue_capacity, snap.rules_loaded) == (10, 2, 64, 5)
        assert snap.sources == [SourceMetrics("k8s_audit", "Source", {"events_accepted": 10})]
        # Each output's own counters, whatever they are, under its kind numbered by position.
        assert snap.outputs == {"file_0": files[0].counters(), "file_1": files[1].counters()}
        assert (snap.outputs["file_0"]["delivered"], snap.outputs["file_1"]["delivered"]) == (1, 0)

    def test_failing_collect_answers_500_and_keeps_serving(self) -> None:
        """A collect callable that raises yields a 500 for that scrape; the server keeps answering."""
        def broken() -> MetricsSnapshot:
            raise RuntimeError("source went away")

        with serving(broken) as server:
            assert get(server.url + "/metrics")[0] == 500
            assert get(server.url + "/healthz")[0] == 200

    def test_unknown_path_is_404(self) -> None:
        """Paths other than /metrics, /healthz and /versions answer 404."""
        with serving(MetricsSnapshot) as server:
            assert get(server.url + "/")[0] == 404


@pytest.mark.server
class TestHealth:
    def test_fresh_heartbeat_is_200_and_stale_is_503(self) -> None:
        """/healthz says ok while the engine loop beats, and 503 once the beat is older than stale_after_s."""
        clock = FakeClock()
        heartbeat = Heartbeat(clock)
        with serving(MetricsSnapshot, heartbeat=heartbeat, stale_after_s=5.0) as server:
            status, content_type, body = get(server.url + "/healthz")
            assert (status, content_type) == (200, "application/json")
            assert orjson.loads(body) == {"status": "ok", "heartbeat_age_s": 0.0, "stale_after_s": 5.0,
                                          "problems": []}
            clock.now_s += 6.0
            status, _, body = get(server.url + "/healthz")
            assert status == 503 and orjson.loads(body) == {
                "status": "unhealthy", "heartbeat_age_s": 6.0, "stale_after_s": 5.0,
                "problems": [{"part": "engine_loop", "reason": "has not turned for 6.0 s (more than 5 s): stuck "
                                                               "evaluating a batch or handing alerts over"}]}
            assert scrape(server)[("falco_agent_heartbeat_age_seconds", ())] == 6.0
            heartbeat.beat()
            assert get(server.url + "/healthz")[0] == 200

    def test_every_reported_problem_makes_it_503_and_is_named(self) -> None:
        """Problems the runtime reports (a source, the reload thread) turn /healthz 503, each with part and reason."""
        reported: list[HealthProblem] = []
        with serving(MetricsSnapshot, problems=lambda: list(reported)) as server:
            assert get(server.url + "/healthz")[0] == 200
            reported += [HealthProblem("source k8s_audit (AuditWebhook)", "not running: port taken"),
                         HealthProblem("rules_reload", "RecursionError")]
            status, _, body = get(server.url + "/healthz")
            assert status == 503 and orjson.loads(body)["problems"] == [
                {"part": "source k8s_audit (AuditWebhook)", "reason": "not running: port taken"},
                {"part": "rules_reload", "reason": "RecursionError"}]
            reported.clear()
            assert get(server.url + "/healthz")[0] == 200

    def test_a_failing_health_check_is_itself_a_problem(self) -> None:
        """A problems callable that raises answers 503 naming the failure; the server keeps answering."""
        def broken() -> list[HealthProblem]:
            raise RuntimeError("lock gone")

        with serving(MetricsSnapshot, problems=broken) as server:
            status, _, body = get(server.url + "/healthz")
            assert status == 503
            assert orjson.loads(body)["problems"] == [{"part": "health_check",
                                                       "reason": "failed: RuntimeError: lock gone"}]
            assert get(server.url + "/metrics")[0] == 200


class TestAddress:
    @pytest.mark.server
    def test_busy_port_is_a_config_error(self) -> None:
        """A port already taken is reported when starting, naming the key and the address."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            server = WebServer(WebserverConfig(listen_port=port), MetricsSnapshot, heartbeat=Heartbeat(),
                               stale_after_s=1.0)
            with pytest.raises(ConfigError, match=f"^webserver.listen_port: cannot listen on 127.0.0.1:{port}: "):
                server.start()
            server.stop()

    @pytest.mark.server
    def test_an_address_not_of_this_host_names_listen_address(self) -> None:
        """An address no interface has is reported naming webserver.listen_address."""
        server = WebServer(WebserverConfig(listen_address="192.0.2.1", listen_port=0), MetricsSnapshot,
                           heartbeat=Heartbeat(), stale_after_s=1.0)
        with pytest.raises(ConfigError, match=r"^webserver\.listen_address: cannot listen on 192\.0\.2\.1:0: "):
            server.start()
