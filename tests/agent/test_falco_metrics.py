"""Falco's metrics on Falco's web server: `falcosecurity_*` families scraped over real sockets and parsed with
Prometheus' own parser, `/versions`, `/healthz` at its configured path, TLS, and the periodic snapshots."""

from __future__ import annotations

import hashlib
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from agent import __version__
from agent.config.schema import MetricsConfig, WebserverConfig
from agent.errors import ConfigError
from agent.falco_metrics import FalcoMetricsReader, FalcoReadings, RulesLoad, SnapshotFields
from agent.metrics import Heartbeat, MetricsSnapshot, SourceMetrics
from agent.metrics_writer import parse_interval
from agent.resource_usage import ResourceUsage
from agent.webserver import WebServer
from sources.kernel.source import KernelSettings, KernelSource
from tests.support.agent_process import Agent
from tests.support.queue_consumer import eventually
from tests.support.webhook_agent import audit_event, listening, post

WAIT_S = 20.0
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

RULES = """\
- rule: Every Audit Event
  desc: one alert per audit event
  condition: ka.auditid exists
  output: audit event seen (id=%ka.auditid)
  priority: WARNING
  source: k8s_audit
  tags: [k8s, my-tag]
"""


def get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=WAIT_S, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def parse(body: bytes) -> Samples:
    """Every sample, keyed by name and sorted labels, as Prometheus reads them."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body.decode()) for sample in family.samples}


def named(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for (sample, labels), value in samples.items() if sample == name}


def reader(settings: MetricsConfig | None = None, *, config_files: tuple[str, ...] = (),
           rules_load: RulesLoad | None = None) -> FalcoMetricsReader:
    load = rules_load or RulesLoad(())
    return FalcoMetricsReader(settings or MetricsConfig(), rules=list, rules_load=lambda: load,
                              config_files=config_files, hostname="node-1")


@contextmanager
def serving(snapshot: MetricsSnapshot, falco: FalcoMetricsReader, *, metrics_off: str = "",
            settings: WebserverConfig | None = None) -> Iterator[WebServer]:
    server = WebServer(settings or WebserverConfig(listen_port=0), lambda: snapshot, heartbeat=Heartbeat(),
                       stale_after_s=10.0, falco=falco, metrics_off=metrics_off)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def scrape(server: WebServer) -> Samples:
    status, body = get(server.url + "/metrics")
    assert status == 200, body
    return parse(body)


def kernel_snapshot(records: int, lost: int) -> MetricsSnapshot:
    """A snapshot holding what a real kernel source's metrics() reports, with these counts."""
    values = KernelSource(KernelSettings(), rule_types=lambda: None, new_state=list).metrics()  # type: ignore[arg-type]
    values.update(records=records, kernel_lost=lost)
    return MetricsSnapshot(events_total=records, sources=[SourceMetrics("kernel", "KernelSource", values)])


@pytest.mark.server
class TestFamilies:
    def test_kernel_counters_are_scap_families(self) -> None:
        """The kernel source's records and losses are Falco's scap event and drop counters; off, they are absent."""
        with serving(kernel_snapshot(records=90, lost=10), reader()) as server:
            samples = scrape(server)
        assert samples[("falcosecurity_scap_n_evts_total", ())] == 100
        assert samples[("falcosecurity_scap_n_drops_total", ())] == 10
        with serving(kernel_snapshot(records=90, lost=10),
                     reader(MetricsConfig(kernel_event_counters_enabled=False))) as server:
            assert not [key for key in scrape(server) if key[0].startswith("falcosecurity_scap_")]

    def test_file_digests_and_wrapper_families(self, tmp_path: Path) -> None:
        """Rules and configuration files appear by name with their SHA-256; version, hostname and the reload time
        are there; a scrape without a kernel source has no scap family."""
        config = tmp_path / "falco.yaml"
        config.write_text("priority: debug\n")
        rules = tmp_path / "my_rules.yaml"
        rules.write_text(RULES)
        load = RulesLoad([rules], at_ns=1_700_000_000_000_000_000)
        with serving(MetricsSnapshot(), reader(config_files=(str(config),), rules_load=load)) as server:
            samples = scrape(server)
        assert named(samples, "falcosecurity_falco_sha256_config_files_info") == {
            (("file_name", "falco.yaml"), ("sha256", hashlib.sha256(config.read_bytes()).hexdigest())): 1}
        assert named(samples, "falcosecurity_falco_sha256_rules_files_info") == {
            (("file_name", "my_rules.yaml"), ("sha256", hashlib.sha256(rules.read_bytes()).hexdigest())): 1}
        assert samples[("falcosecurity_falco_version_info", (("version", __version__),))] == 1
        assert samples[("falcosecurity_evt_hostname_info", (("hostname", "node-1"),))] == 1
        assert samples[("falcosecurity_falco_reload_timestamp_nanoseconds", ())] == 1.7e18
        assert samples[("falcosecurity_falco_host_num_cpus_total", ())] >= 1
        assert samples[("falcosecurity_falco_memory_rss_bytes", ())] > 1_000_000
        assert 0 <= samples[("falcosecurity_falco_cpu_usage_ratio", ())] < 8
        assert not [key for key in samples if key[0].startswith("falcosecurity_scap_")]

    def test_categories_follow_their_keys(self) -> None:
        """resource_utilization_enabled and rules_counters_enabled off leave their families out."""
        snapshot = MetricsSnapshot(alerts_by_rule={("Some Rule", "Error", "k8s_audit"): 3})
        with serving(snapshot, reader()) as server:
            on = scrape(server)
        assert on[("falcosecurity_falco_rules_matches_total",
                   (("priority", "3"), ("rule_name", "Some Rule"), ("source", "k8s_audit")))] == 3
        off_settings = MetricsConfig(resource_utilization_enabled=False, rules_counters_enabled=False)
        with serving(snapshot, reader(off_settings)) as server:
            off = scrape(server)
        for name in ("falcosecurity_falco_cpu_usage_ratio", "falcosecurity_falco_memory_rss_bytes",
                     "falcosecurity_falco_rules_matches_total"):
            assert named(on, name) and not named(off, name), name
        assert ("falcosecurity_falco_version_info", (("version", __version__),)) in off


@pytest.mark.server
class TestEndpoints:
    def test_metrics_off_answers_404_naming_the_key(self) -> None:
        """With Prometheus metrics off, /metrics is a 404 whose answer names the key; /healthz still answers."""
        hint = "Prometheus metrics are off: set webserver.prometheus_metrics_enabled=true to serve them"
        with serving(MetricsSnapshot(), reader(), metrics_off=hint) as server:
            status, body = get(server.url + "/metrics")
            assert (status, json.loads(body)) == (404, {"error": hint})
            assert get(server.url + "/healthz")[0] == 200

    def test_tls_with_one_pem_of_certificate_and_key(self, tmp_path: Path) -> None:
        """ssl_enabled serves HTTPS with the certificate and key of one PEM file; plain HTTP gets no answer."""
        ca = trustme.CA()
        issued = ca.issue_cert("127.0.0.1")
        pem = tmp_path / "falco.pem"
        pem.write_bytes(b"".join(blob.bytes() for blob in (*issued.cert_chain_pems, issued.private_key_pem)))
        client = ssl.create_default_context()
        ca.configure_trust(client)
        settings = WebserverConfig(listen_port=0, ssl_enabled=True, ssl_certificate=str(pem))
        with serving(MetricsSnapshot(), reader(), settings=settings) as server:
            assert server.url.startswith("https://")
            status, body = get(server.url + "/healthz", client)
            assert (status, json.loads(body)["status"]) == (200, "ok")
            assert ("falcosecurity_falco_version_info", (("version", __version__),)) in parse(
                get(server.url + "/metrics", client)[1])
            with pytest.raises((urllib.error.URLError, ConnectionError)):
                urllib.request.urlopen(server.url.replace("https://", "http://") + "/healthz", timeout=WAIT_S)

    def test_a_certificate_that_does_not_load_names_the_key(self, tmp_path: Path) -> None:
        """A PEM without a key is refused at start, naming webserver.ssl_certificate."""
        pem = tmp_path / "cert-only.pem"
        pem.write_bytes(trustme.CA().issue_cert("127.0.0.1").cert_chain_pems[0].bytes())
        server = WebServer(WebserverConfig(listen_port=0, ssl_enabled=True, ssl_certificate=str(pem)),
                           MetricsSnapshot, heartbeat=Heartbeat(), stale_after_s=1.0)
        with pytest.raises(ConfigError, match=f"^webserver.ssl_certificate: cannot load '{pem}': "):
            server.start()


def readings(kernel_records: int, kernel_lost: int, *, at_s: int) -> FalcoReadings:
    usage = ResourceUsage(cpu_usage_perc=2.5, memory_rss_kb=2048, memory_vsz_kb=0, memory_pss_kb=None,
                          container_memory_used_bytes=3 * 1024 * 1024, host_cpu_usage_perc=40.0,
                          host_memory_used_kb=1024, host_procs_running=2, host_open_fds=100)
    falco = reader()
    read = falco.read(kernel_snapshot(kernel_records, kernel_lost))
    return replace(read, at_ns=at_s * 1_000_000_000, usage=usage)


class TestSnapshotFields:
    def test_kernel_rates_and_drop_percentage_between_snapshots(self) -> None:
        """Two snapshots 10 s apart: event and drop rates and the drop percentage of what happened in between."""
        fields = SnapshotFields(MetricsConfig())
        fields.fields(readings(90, 10, at_s=100))
        second = fields.fields(readings(880, 20, at_s=110))
        assert (second["scap.n_evts"], second["scap.n_evts_prev"]) == (900, 100)
        assert (second["scap.n_drops"], second["scap.n_drops_prev"]) == (20, 10)
        assert (second["scap.evts_rate_sec"], second["scap.evts_drop_rate_sec"]) == (80.0, 1.0)
        assert second["scap.n_drops_perc"] == 100 * 10 / 800
        assert second["evt.source"] == "syscall"

    def test_memory_units_and_empty_values(self) -> None:
        """Memory in MiB with convert_memory_to_mb, else as read; zero and unknown values only when asked for."""
        in_mb = SnapshotFields(MetricsConfig()).fields(readings(1, 0, at_s=1))
        assert (in_mb["falco.memory_rss_mb"], in_mb["falco.container_memory_used_mb"]) == (2.0, 3.0)
        assert "falco.memory_vsz_mb" not in in_mb and "falco.memory_pss_mb" not in in_mb
        raw = SnapshotFields(MetricsConfig(convert_memory_to_mb=False, include_empty_values=True)).fields(
            readings(1, 0, at_s=1))
        assert (raw["falco.memory_rss_kb"], raw["falco.memory_vsz_kb"]) == (2048, 0)
        assert raw["falco.container_memory_used_bytes"] == 3 * 1024 * 1024
        assert "falco.memory_pss_kb" not in raw  # not measured: never reported, not even as 0
        assert in_mb["scap.n_drops"] == 0  # the drop total stays, even when zero


class TestInterval:
    @pytest.mark.parametrize(("text", "seconds"), [("500ms", 0.5), ("30s", 30), ("15m", 900), ("1h", 3600),
                                                    ("1h30m", 5400), ("1d", 86_400), ("1w", 604_800)])
    def test_falco_durations(self, text: str, seconds: float) -> None:
        """Falco's duration syntax, units combined."""
        assert parse_interval(text) == seconds

    @pytest.mark.parametrize("text", ["", "10", "1 h", "5x", "99ms"])
    def test_bad_durations_name_the_key(self, text: str) -> None:
        """Not a duration, or under 100 ms: a ConfigError naming metrics.interval."""
        with pytest.raises(ConfigError, match=r"^metrics\.interval: "):
            parse_interval(text)


@pytest.mark.server
@pytest.mark.slow
def test_a_running_agent_serves_falco_metrics_versions_and_snapshots(tmp_path: Path) -> None:
    """A real agent: after audit alerts, /metrics counts them per rule with Falco's labels and the rules file's
    SHA-256; a reload moves the reload timestamp and the digest; /versions and /livez (a custom healthz path)
    answer; every 300 ms a snapshot line lands in output_file and an informational internal alert on stdout."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    snapshots = tmp_path / "metrics.jsonl"
    agent = Agent("-r", str(rules), "--json", "-o", "sources.k8s_audit.webhook.listen=127.0.0.1:0",
                  "-o", "webserver.k8s_healthz_endpoint=/livez", "-o", "metrics.interval=300ms",
                  "-o", f"metrics.output_file={snapshots}", "-o", "metrics.output_rule=true")
    agent.read_alerts()
    try:
        urls = listening(agent, "webhook_listening", "metrics_listening")
        base = urls["metrics_listening"].removesuffix("/metrics")
        for n in range(2):
            assert post(urls["webhook_listening"], audit_event(f"id-{n}"))[0] == 200
        key = ("falcosecurity_falco_rules_matches_total",
               (("priority", "4"), ("rule_name", "Every Audit Event"), ("source", "k8s_audit"), ("tag_k8s", "true"),
                ("tag_my_tag", "true")))
        assert eventually(lambda: parse(get(base + "/metrics")[1]).get(key) == 2, WAIT_S)
        samples = parse(get(base + "/metrics")[1])
        assert named(samples, "falcosecurity_falco_sha256_rules_files_info") == {
            (("file_name", "rules.yaml"), ("sha256", hashlib.sha256(rules.read_bytes()).hexdigest())): 1}
        assert samples[("falco_agent_alerts_total", ())] == 2  # the agent's own families stay
        loaded_ns = samples[("falcosecurity_falco_reload_timestamp_nanoseconds", ())]

        status, body = get(base + "/versions")
        versions = json.loads(body)
        assert status == 200 and versions["falco_version"] == __version__
        assert (versions["engine_version"], versions["engine_version_semver"]) == ("63", "0.63.0")
        assert versions["plugin_versions"]["k8saudit"] and versions["plugin_api_version"].count(".") == 2
        status, body = get(base + "/livez")
        assert (status, json.loads(body)["status"]) == (200, "ok")
        assert get(base + "/healthz")[0] == 404

        staged = tmp_path / "rules.yaml.new"
        staged.write_text(RULES.replace("Every Audit Event", "Each Audit Event"))
        staged.replace(rules)

        def reloaded() -> bool:
            now = parse(get(base + "/metrics")[1])
            return now[("falcosecurity_falco_reload_timestamp_nanoseconds", ())] > loaded_ns and named(
                now, "falcosecurity_falco_sha256_rules_files_info") == {
                (("file_name", "rules.yaml"), ("sha256", hashlib.sha256(rules.read_bytes()).hexdigest())): 1}

        assert eventually(reloaded, WAIT_S)
        new_sha = hashlib.sha256(rules.read_bytes()).hexdigest()

        def snapshot_after_reload() -> bool:  # lines written before the reload hold the old file's hash
            written = snapshots.read_text().splitlines()
            return len(written) >= 2 and json.loads(written[-1])["output_fields"].get(
                "falco.sha256_rules_file.rules_yaml") == new_sha

        assert eventually(snapshot_after_reload, WAIT_S)
    finally:
        code, _ = agent.stop()
    assert code == 0
    lines = [json.loads(line) for line in snapshots.read_text().splitlines()]
    assert [line["sample"] for line in lines] == list(range(1, len(lines) + 1))
    last: dict[str, Any] = lines[-1]["output_fields"]
    assert last["falco.rules.matches_total"] == 2 and last["falco.version"] == __version__
    assert last["falco.sha256_rules_file.rules_yaml"] == new_sha
    internal = [alert for alert in agent.wait_for_alerts(4) if alert["source"] == "internal"]
    assert internal and all(alert["rule"] == "Falco internal: metrics snapshot" and
                            alert["priority"] == "Informational" for alert in internal)
    assert "falco.num_evts" in internal[0]["output_fields"]


@pytest.mark.root
@pytest.mark.bpf
@pytest.mark.server
@pytest.mark.slow
def test_a_live_kernel_source_shows_scap_counters() -> None:
    """With the kernel source running, a scrape shows Falco's scap event and drop counters, events seen."""
    agent = Agent("-o", "sources.k8s_audit.enabled=false", "-o", "sources.aws_cloudtrail.enabled=false", kernel=True)
    try:
        url = agent.wait_for_log("metrics_listening", timeout_s=120)["url"]  # compiling the probe takes a while
        assert eventually(lambda: parse(get(url)[1]).get(("falcosecurity_scap_n_evts_total", ()), 0) > 0, 120)
        assert ("falcosecurity_scap_n_drops_total", ()) in parse(get(url)[1])
    finally:
        code, _ = agent.stop()
    assert code == 0
