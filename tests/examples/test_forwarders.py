"""The example forwarders end to end: real agent gRPC server → forwarder → real local HTTP server as the remote."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from forwarder_config import load_settings
from forwarding import Forwarder, StateFile
from http_delivery import parse_retry_after
from siem_bridge import SiemSettings, build_sink
from slack import PRIORITY_COLOURS, SlackSettings, SlackSink
from structlog.testing import capture_logs
from webhook import WebhookSettings, WebhookSink, alert_uuid

from agent.alert import Alert
from agent.errors import ConfigError
from agent.grpc.server import AlertServer
from agent.priority import Priority
from tests.examples.conftest import (
    FORWARDERS,
    REPO,
    WAIT_S,
    make_alert,
    write_config,
)
from tests.support.http_recorder import FakeRemote, Received, fake_remote

pytestmark = pytest.mark.server

# The webhook's documented uuid recipe: uuid5 of "<hostname>/<seq>" in the forwarder's fixed namespace.
WEBHOOK_UUID_NAMESPACE = uuid.UUID("6f1c1f2e-7a4b-4c1e-9b7e-0d5a0f2b8c11")
WEBHOOK_UUID_NODE1_SEQ1 = "95720a8a-ec48-5e6f-b55f-6d8dcaf60d55"  # uuid5(namespace, "node-1/1"), pinned


@contextmanager
def running(forwarder: Forwarder) -> Iterator[Forwarder]:
    """Run the forwarder on a thread; stop and join it at the end, re-raising what it raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            forwarder.run()
        except BaseException as exc:  # handed to the test thread below
            errors.append(exc)

    thread = threading.Thread(target=run, name="forwarder", daemon=True)
    thread.start()
    try:
        yield forwarder
    finally:
        forwarder.stop()
        thread.join(WAIT_S)
        assert not thread.is_alive(), "forwarder did not stop"
    if errors:
        raise errors[0]


def webhook_forwarder(config: Path, **environ: str) -> Forwarder:
    settings, own = load_settings(config, "webhook", WebhookSettings, environ=environ or None)
    return Forwarder(settings, WebhookSink(settings, own), name="test-webhook")


def siem_forwarder(config: Path) -> Forwarder:
    settings, own = load_settings(config, "siem", SiemSettings)
    return Forwarder(settings, build_sink(settings, own), name="test-siem")


def slack_forwarder(config: Path) -> Forwarder:
    settings, own = load_settings(config, "slack", SlackSettings)
    return Forwarder(settings, SlackSink(settings, own), name="test-slack")


def emit(server: AlertServer, alerts: list[Alert]) -> None:
    for alert in alerts:
        server.output.emit(alert)


def webhook_seqs(requests: list[Received]) -> list[int]:
    seqs: list[int] = []
    for request in requests:
        body = orjson.loads(request.body)
        seqs += [item["seq"] for item in (body if isinstance(body, list) else [body])]
    return seqs


def ndjson(body: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in body.splitlines() if line.strip()]


def accepted_count(remote: FakeRemote, seqs_of: Any, count: int) -> bool:
    return remote.wait_for(lambda _: len(seqs_of(remote.accepted())) >= count)


class TestWebhookUuid:
    def test_uuid_follows_the_recipe_and_tells_sequence_numbers_apart(self) -> None:
        """The uuid is uuid5("<hostname>/<seq>"): stable across resends, different for alerts differing only in seq.

        Mutation caught: seq left out of `alert_uuid` (examples/forwarders/webhook.py), which gives every alert of a
        host the same uuid, so a receiver deduplicating on it would drop all but the first.
        """
        first, second = make_alert(1), make_alert(1)
        first.seq, second.seq = 1, 2
        assert alert_uuid(first) == WEBHOOK_UUID_NODE1_SEQ1
        assert alert_uuid(first) == str(uuid.uuid5(WEBHOOK_UUID_NAMESPACE, "node-1/1"))
        assert alert_uuid(second) == str(uuid.uuid5(WEBHOOK_UUID_NAMESPACE, "node-1/2"))
        assert alert_uuid(second) != alert_uuid(first)
        resent = make_alert(1)
        resent.seq = 1
        assert alert_uuid(resent) == WEBHOOK_UUID_NODE1_SEQ1


class TestWebhook:
    def test_posts_falcosidekick_json_per_alert_with_headers_and_filters(self, agent_server: AlertServer,
                                                                         tmp_path: Path) -> None:
        """Each passing alert is one POST of Falco's JSON alert with uuid and seq, carrying the custom headers."""
        with fake_remote() as remote:
            config = write_config(tmp_path / "webhook.yaml", agent_server, url=remote.url + "/falco",
                                  own_key="webhook", http={"headers": {"X-Api-Key": "${TEST_API_KEY}"}},
                                  filters={"allow": [{"min_priority": "error"}]})
            emit(agent_server, [make_alert(i, priority=Priority.ERROR if i % 2 else Priority.NOTICE)
                                for i in range(1, 7)])
            with running(webhook_forwarder(config, TEST_API_KEY="s3cret")) as forwarder:
                assert accepted_count(remote, webhook_seqs, 3)
                assert forwarder.stats.wait_for(lambda s: s.last_acked_seq == 5, WAIT_S)
            requests = remote.accepted()
        assert webhook_seqs(requests) == [1, 3, 5]
        first = requests[0]
        assert first.path == "/falco"
        assert first.headers["X-Api-Key"] == "s3cret"
        assert first.headers["Content-Type"] == "application/json"
        body = orjson.loads(first.body)
        assert set(body) == {"uuid", "output", "priority", "rule", "time", "output_fields", "source", "tags",
                             "hostname", "seq"}
        assert body["priority"] == "Error"
        assert body["rule"] == "Rule 1"
        assert body["time"] == "2023-11-14T22:13:20.123456790Z"
        assert body["output"].endswith(": Error alert number 1 (proc.name=cat)")
        assert body["output_fields"]["proc.pid"] == 1
        assert body["tags"] == ["filesystem", "mitre"]
        assert body["uuid"] == WEBHOOK_UUID_NODE1_SEQ1
        assert StateFile(tmp_path / "webhook.state").read() == 5

    def test_connection_refused_then_recovers_without_loss_or_duplicates(self, agent_server: AlertServer,
                                                                         tmp_path: Path) -> None:
        """Alerts sent while nothing listens arrive once each, in order, when the remote comes back."""
        with fake_remote() as probe:
            port = probe.port
        config = write_config(tmp_path / "webhook.yaml", agent_server, url=f"http://127.0.0.1:{port}/",
                              own_key="webhook", own={"batch": True}, delivery={"batch_size": 4})
        emit(agent_server, [make_alert(i) for i in range(1, 11)])
        with running(webhook_forwarder(config)) as forwarder:
            assert forwarder.stats.wait_for(lambda s: s.failures >= 2, WAIT_S)
            assert forwarder.stats.delivered == 0
            with fake_remote(port=port) as remote:
                assert accepted_count(remote, webhook_seqs, 10)
                emit(agent_server, [make_alert(i) for i in range(11, 14)])
                assert accepted_count(remote, webhook_seqs, 13)
                assert forwarder.stats.wait_for(lambda s: s.last_acked_seq == 13, WAIT_S)
                requests = remote.accepted()
        assert all(isinstance(orjson.loads(r.body), list) for r in requests)
        assert webhook_seqs(requests) == list(range(1, 14))

    def test_restart_resumes_after_the_last_acknowledged_seq(self, agent_server: AlertServer, tmp_path: Path) -> None:
        """A forwarder restarted from its state file sends only what arrived after the last acknowledged alert."""
        with fake_remote() as remote:
            config = write_config(tmp_path / "webhook.yaml", agent_server, url=remote.url, own_key="webhook")
            emit(agent_server, [make_alert(i) for i in range(1, 4)])
            with running(webhook_forwarder(config)) as first:
                assert first.stats.wait_for(lambda s: s.last_acked_seq == 3, WAIT_S)
            before_restart = len(remote.accepted())
            emit(agent_server, [make_alert(i) for i in range(4, 8)])  # while no forwarder runs
            with running(webhook_forwarder(config)) as second:
                assert second.stats.wait_for(lambda s: s.last_acked_seq == 7, WAIT_S)
            requests = remote.accepted()
        assert webhook_seqs(requests[:before_restart]) == [1, 2, 3]
        assert webhook_seqs(requests[before_restart:]) == [4, 5, 6, 7]
        assert StateFile(tmp_path / "webhook.state").read() == 7

    def test_first_start_at_latest_skips_the_backlog_and_remembers_where_it_began(self, agent_server: AlertServer,
                                                                                  tmp_path: Path) -> None:
        """Without a state file and with start_at latest, only new alerts are sent, and the start seq is saved."""
        with fake_remote() as remote:
            config = write_config(tmp_path / "webhook.yaml", agent_server, url=remote.url, own_key="webhook",
                                  delivery={"start_at": "latest"})
            emit(agent_server, [make_alert(i) for i in range(1, 4)])
            with running(webhook_forwarder(config)) as forwarder:
                assert forwarder.stats.wait_for(lambda s: s.last_acked_seq == 3, WAIT_S)
                assert StateFile(tmp_path / "webhook.state").read() == 3
                emit(agent_server, [make_alert(4)])
                assert forwarder.stats.wait_for(lambda s: s.last_acked_seq == 4, WAIT_S)
            assert webhook_seqs(remote.accepted()) == [4]


class TestSplunkHec:
    def test_outage_then_recovery_delivers_hec_events_once(self, agent_server: AlertServer, tmp_path: Path) -> None:
        """After 503s the HEC batch arrives once, as newline-separated events with time, host, index and seq."""

        def respond(index: int, request: Received) -> tuple[int, dict[str, str], bytes]:
            if index < 2:
                return 503, {}, b'{"text":"Server is busy","code":9}'
            return 200, {}, b'{"text":"Success","code":0}'

        with fake_remote(respond) as remote:
            config = write_config(tmp_path / "siem.yaml", agent_server, url=remote.url, own_key="siem",
                                  own={"format": "splunk_hec", "token": "hec-token", "index": "security"},
                                  delivery={"batch_size": 5, "batch_max_wait_s": 1.0})
            emit(agent_server, [make_alert(i) for i in range(1, 6)])
            with running(siem_forwarder(config)) as forwarder:
                assert forwarder.stats.wait_for(lambda s: s.last_acked_seq == 5, WAIT_S)
                assert forwarder.stats.failures == 2
            requests = remote.received
        assert [r.status for r in requests] == [503, 503, 200]
        events = ndjson(requests[-1].body)
        assert [e["event"]["seq"] for e in events] == [1, 2, 3, 4, 5]
        assert requests[-1].path == "/services/collector/event"
        assert requests[-1].headers["Authorization"] == "Splunk hec-token"
        first = events[0]
        assert set(first) == {"time", "host", "source", "sourcetype", "index", "event"}
        assert first["time"] == pytest.approx(1_700_000_000.123456, abs=5e-7)
        assert (first["host"], first["source"], first["sourcetype"], first["index"]) == (
            "node-1", "falco-agent", "falco", "security")
        assert first["event"]["rule"] == "Rule 1"
        assert first["event"]["priority"] == "Warning"
        assert first["event"]["output_fields"]["proc.name"] == "cat"


    def test_invalid_event_is_rejected_and_the_events_after_it_retried(self, agent_server: AlertServer,
                                                                        tmp_path: Path) -> None:
        """HEC's invalid-event-number splits a batch: before it indexed, it dead-lettered, after it resent."""

        def respond(index: int, request: Received) -> tuple[int, dict[str, str], bytes]:
            if index == 0:
                return 400, {}, b'{"text":"Invalid data format","code":6,"invalid-event-number":2}'
            return 200, {}, b'{"text":"Success","code":0}'

        with fake_remote(respond) as remote:
            config = write_config(tmp_path / "siem.yaml", agent_server, url=remote.url, own_key="siem",
                                  own={"format": "splunk_hec", "token": "t"},
                                  delivery={"batch_size": 5, "batch_max_wait_s": 1.0,
                                            "dead_letter_file": str(tmp_path / "dead.jsonl")})
            emit(agent_server, [make_alert(i) for i in range(1, 6)])
            with running(siem_forwarder(config)) as forwarder:
                assert forwarder.stats.wait_for(lambda s: s.last_acked_seq == 5, WAIT_S)
            requests = remote.received
        assert [[e["event"]["seq"] for e in ndjson(r.body)] for r in requests] == [[1, 2, 3, 4, 5], [4, 5]]
        assert [orjson.loads(line)["seq"] for line in (tmp_path / "dead.jsonl").read_bytes().splitlines()] == [3]
        assert (forwarder.stats.delivered, forwarder.stats.rejected) == (4, 1)


class TestBackpressure:
    def test_a_long_outage_overflows_the_subscription_and_the_spool_fills_the_gap(self, short_dir: Path,
                                                                                  tmp_path: Path) -> None:
        """With tiny queues and a remote down for a while, every alert still arrives once, in order."""
        server = AlertServer(spool_dir=short_dir / "spool", socket_path=short_dir / "agent.sock",
                             subscriber_queue_size=4)
        recovered = threading.Event()

        def respond(index: int, request: Received) -> tuple[int, dict[str, str], bytes]:
            return (200, {}, b"ok") if recovered.is_set() else (500, {}, b"down")

        try:
            server.start()
            with capture_logs() as logs, fake_remote(respond) as remote:
                config = write_config(tmp_path / "webhook.yaml", server, url=remote.url, own_key="webhook",
                                      own={"batch": True}, delivery={"batch_size": 3, "queue_size": 2,
                                                                     "start_at": "latest"})
                with running(webhook_forwarder(config)) as forwarder:
                    assert forwarder.stats.wait_for(lambda s: s.last_acked_seq == 0, WAIT_S)
                    # ~20 KB each, so the stream's transport buffers fill and the agent-side queue overflows
                    big = [make_alert(i) for i in range(1, 61)]
                    for alert in big:
                        alert.output_fields["proc.cmdline"] = "x" * 20_000
                    emit(server, big[:1])
                    assert remote.wait_for(lambda received: len(received) >= 1)  # the subscription is live now
                    emit(server, big[1:])
                    assert forwarder.stats.wait_for(lambda s: s.failures >= 3, WAIT_S)
                    recovered.set()
                    assert forwarder.stats.wait_for(lambda s: s.last_acked_seq == 60, WAIT_S)
                    assert forwarder.stats.missed == 0
                assert webhook_seqs(remote.accepted()) == list(range(1, 61))
            assert any(e["event"] == "subscription_gap_filling" for e in logs)  # it did overflow, and was refilled
        finally:
            server.stop(grace_s=0.5)


class TestElasticsearch:
    def test_partial_bulk_failure_retries_only_the_failed_items(self, agent_server: AlertServer,
                                                                tmp_path: Path) -> None:
        """Items answered 429 are resent alone; an item answered 400 is dead-lettered; the others are not resent."""

        def respond(index: int, request: Received) -> tuple[int, dict[str, str], bytes]:
            lines = ndjson(request.body)
            items = []
            for action, document in zip(lines[::2], lines[1::2], strict=True):
                status, error = 201, None
                if index == 0 and document["seq"] in (2, 4):
                    status, error = 429, {"type": "es_rejected_execution_exception", "reason": "queue full"}
                elif index == 0 and document["seq"] == 5:
                    status, error = 400, {"type": "mapper_parsing_exception", "reason": "bad field"}
                item: dict[str, Any] = {"_index": action["index"]["_index"], "_id": action["index"]["_id"],
                                        "status": status}
                if error:
                    item["error"] = error
                items.append({"index": item})
            answer = {"took": 3, "errors": any("error" in i["index"] for i in items), "items": items}
            return 200, {"Content-Type": "application/json"}, orjson.dumps(answer)

        with fake_remote(respond) as remote:
            config = write_config(tmp_path / "es.yaml", agent_server, url=remote.url, own_key="siem",
                                  own={"format": "elasticsearch", "index": "falco-alerts", "api_key": "k3y"},
                                  delivery={"batch_size": 6, "batch_max_wait_s": 2.0,
                                            "dead_letter_file": str(tmp_path / "dead.jsonl")})
            emit(agent_server, [make_alert(i) for i in range(1, 7)])
            with running(siem_forwarder(config)) as forwarder:
                assert forwarder.stats.wait_for(lambda s: s.last_acked_seq == 6, WAIT_S)
            requests = remote.received
        assert len(requests) == 2
        first, retry = ndjson(requests[0].body), ndjson(requests[1].body)
        assert [d["seq"] for d in first[1::2]] == [1, 2, 3, 4, 5, 6]
        assert [d["seq"] for d in retry[1::2]] == [2, 4]
        assert first[0] == {"index": {"_index": "falco-alerts", "_id": "node-1-1"}}
        assert first[1]["@timestamp"] == first[1]["time"]
        assert requests[0].path == "/_bulk"
        assert requests[0].headers["Content-Type"] == "application/x-ndjson"
        assert requests[0].headers["Authorization"] == "ApiKey k3y"
        assert requests[0].body.endswith(b"\n")
        dead = [orjson.loads(line) for line in (tmp_path / "dead.jsonl").read_bytes().splitlines()]
        assert [(d["seq"], d["reason"].split(" ")[0]) for d in dead] == [(5, "400")]
        assert forwarder.stats.delivered == 5
        assert forwarder.stats.rejected == 1

    def test_batch_resent_after_a_lost_answer_overwrites_by_id(self, agent_server: AlertServer,
                                                               tmp_path: Path) -> None:
        """When the remote stored a batch but the answer failed, the resend reuses the same _ids: no duplicates."""
        stored: dict[str, dict[str, Any]] = {}

        def respond(index: int, request: Received) -> tuple[int, dict[str, str], bytes]:
            lines = ndjson(request.body)
            for action, document in zip(lines[::2], lines[1::2], strict=True):
                stored[action["index"]["_id"]] = document
            if index == 0:
                return 502, {}, b"bad gateway"  # stored, but the forwarder never hears so
            items = [{"index": {"_id": a["index"]["_id"], "status": 200}} for a in lines[::2]]
            return 200, {}, orjson.dumps({"took": 1, "errors": False, "items": items})

        with fake_remote(respond) as remote:
            config = write_config(tmp_path / "es.yaml", agent_server, url=remote.url, own_key="siem",
                                  own={"format": "elasticsearch"}, delivery={"batch_size": 4, "batch_max_wait_s": 1})
            emit(agent_server, [make_alert(i) for i in range(1, 5)])
            with running(siem_forwarder(config)) as forwarder:
                assert forwarder.stats.wait_for(lambda s: s.last_acked_seq == 4, WAIT_S)
            assert len(remote.received) == 2
        assert sorted(stored) == ["node-1-1", "node-1-2", "node-1-3", "node-1-4"]


class TestSlack:
    def test_rate_limit_retry_after_is_honoured_and_messages_have_the_shape(self, agent_server: AlertServer,
                                                                             tmp_path: Path) -> None:
        """A 429 with Retry-After delays the next try that long; each message is coloured by priority."""

        def respond(index: int, request: Received) -> tuple[int, dict[str, str], bytes]:
            if index == 0:
                return 429, {"Retry-After": "1"}, b"rate_limited"
            return 200, {}, b"ok"

        with fake_remote(respond) as remote:
            config = write_config(tmp_path / "slack.yaml", agent_server, url=remote.url + "/services/T/B/X",
                                  own_key="slack", own={"output_fields": ["proc.name", "proc.pid", "fd.name"]})
            emit(agent_server, [make_alert(1, priority=Priority.CRITICAL), make_alert(2, priority=Priority.NOTICE)])
            with running(slack_forwarder(config)) as forwarder:
                assert forwarder.stats.wait_for(lambda s: s.last_acked_seq == 2, WAIT_S)
            requests = remote.received
        assert [r.status for r in requests] == [429, 200, 200]
        assert requests[1].at_s - requests[0].at_s >= 0.95
        assert requests[0].body == requests[1].body
        critical, notice = (orjson.loads(r.body) for r in requests[1:])
        attachment = critical["attachments"][0]
        assert attachment["color"] == PRIORITY_COLOURS[Priority.CRITICAL]
        assert notice["attachments"][0]["color"] == PRIORITY_COLOURS[Priority.NOTICE]
        assert attachment["title"] == "Rule 1"
        assert attachment["text"] == "alert number 1 (proc.name=cat)"
        fields = {f["title"]: f["value"] for f in attachment["fields"]}
        assert fields == {"priority": "Critical", "source": "syscall", "hostname": "node-1",
                          "time": "2023-11-14T22:13:20.123456790Z", "tags": "filesystem, mitre",
                          "proc.name": "cat", "proc.pid": "1", "fd.name": "<NA>"}


class TestCommandLine:
    def test_webhook_script_runs_from_config_and_exits_zero_on_sigterm(self, agent_server: AlertServer,
                                                                       tmp_path: Path) -> None:
        """`python examples/forwarders/webhook.py --config` delivers, takes the URL from the environment, and stops."""
        with fake_remote() as remote:
            config = write_config(tmp_path / "webhook.yaml", agent_server, url="${TEST_WEBHOOK_URL}",
                                  own_key="webhook")
            emit(agent_server, [make_alert(i) for i in range(1, 4)])
            env = {**os.environ, "TEST_WEBHOOK_URL": remote.url + "/in"}
            process = subprocess.Popen([sys.executable, str(FORWARDERS / "webhook.py"), "--config", str(config)],
                                       cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                assert accepted_count(remote, webhook_seqs, 3), process.stderr
            finally:
                process.send_signal(signal.SIGTERM)
                try:
                    _, stderr = process.communicate(timeout=WAIT_S)
                finally:
                    process.kill()
        assert process.returncode == 0, stderr.decode()
        assert b"forwarder_stopped" in stderr
        assert webhook_seqs(remote.accepted()) == [1, 2, 3]

    def test_unknown_key_is_a_usage_error(self, tmp_path: Path) -> None:
        """A misspelt key stops the forwarder with exit code 2, naming the dotted key."""
        config = tmp_path / "bad.yaml"
        config.write_text("delivery:\n  batchsize: 3\nhttp:\n  url: http://127.0.0.1:1/\n", encoding="utf-8")
        result = subprocess.run([sys.executable, str(FORWARDERS / "slack.py"), "-c", str(config)], cwd=REPO,
                                capture_output=True, timeout=WAIT_S, check=False)
        assert result.returncode == 2
        assert b"delivery.batchsize: unknown key" in result.stderr


class TestConfig:
    def test_missing_environment_variable_names_the_key(self, tmp_path: Path) -> None:
        """`${NAME}` with NAME unset is a ConfigError naming the key and the variable."""
        config = tmp_path / "slack.yaml"
        config.write_text("http:\n  url: ${SLACK_WEBHOOK_URL}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=r"http\.url: environment variable SLACK_WEBHOOK_URL is not set"):
            load_settings(config, "slack", SlackSettings, environ={})

    def test_default_after_colon_dash_is_used(self, tmp_path: Path) -> None:
        """`${NAME:-default}` falls back to the default when NAME is unset."""
        config = tmp_path / "siem.yaml"
        config.write_text("siem:\n  index: ${SPLUNK_INDEX:-falco}\n  format: elasticsearch\n", encoding="utf-8")
        _, siem = load_settings(config, "siem", SiemSettings, environ={})
        assert (siem.index, siem.format) == ("falco", "elasticsearch")

    def test_shipped_example_configs_load(self) -> None:
        """Every example YAML shipped with the forwarders loads with placeholder secrets."""
        environ = {"SLACK_WEBHOOK_URL": "https://hooks.slack.invalid/x", "SPLUNK_HEC_TOKEN": "t",
                   "WEBHOOK_URL": "https://hooks.invalid/", "WEBHOOK_TOKEN": "t", "ES_USERNAME": "u",
                   "ES_PASSWORD": "p"}
        owners = {"slack": SlackSettings, "webhook": WebhookSettings, "siem": SiemSettings}
        examples = sorted(FORWARDERS.glob("*.yaml"))
        assert examples
        for path in examples:
            key = next(k for k in owners if path.stem.startswith(k))
            load_settings(path, key, owners[key], environ=environ)

    def test_retry_after_reads_seconds_and_http_dates(self) -> None:
        """Retry-After is read as delay seconds or as an HTTP date."""
        assert parse_retry_after("30") == 30.0
        assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now_s=1445412480.0) == 30.0
        assert parse_retry_after("soon") is None
